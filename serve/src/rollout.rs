//! Rollouts as a pure state machine: a challenger version replaces the
//! live one by a strategy (canary steps, blue-green switch, shadow
//! mirroring), judged between steps on the challenger's recent window
//! (error rate, p99 latency, agreement with the champion on shadow
//! traffic). Time is passed in (ms); what to do comes back as [`Effect`]s
//! that the controller applies, so every path is tested without replicas.

use serde::Deserialize;

/// How a new version takes over.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Deserialize, Debug, Clone, PartialEq,
)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Strategy {
    /// Send `steps[i]` percent of requests to the new version, each step
    /// held `step_s` seconds with analysis; promote after the last.
    Canary {
        /// Traffic shares, rising, ending at 100 (e.g. 5, 25, 50, 100).
        steps: Vec<u32>,
        /// How long each step runs before the next.
        step_s: u64,
    },
    /// Bring the new set fully up, switch all traffic at once, keep the old
    /// set warm `keep_warm_s` seconds (rollback is instant) before retiring it.
    BlueGreen {
        /// How long the old set stays up after the switch.
        keep_warm_s: u64,
    },
    /// Mirror `percent` of requests to the new version for `duration_s`;
    /// clients are always answered by the live one. Then promote if
    /// `promote`, else end (the challenger is removed).
    Shadow {
        /// Share of requests mirrored.
        percent: u32,
        /// How long to mirror.
        duration_s: u64,
        /// Promote the challenger when the analysis passed.
        promote: bool,
    },
}

impl Strategy {
    /// A clear error for a strategy that cannot run.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Strategy::Canary { steps, .. } => {
                if steps.is_empty() || steps.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(format!("canary steps {steps:?} must rise strictly"));
                }
                if steps.iter().any(|&s| s == 0 || s > 100) || steps.last() != Some(&100) {
                    return Err(format!(
                        "canary steps {steps:?} must be in 1..=100 and end at 100"
                    ));
                }
            }
            Strategy::Shadow { percent, .. } if *percent == 0 || *percent > 100 => {
                return Err(format!("shadow percent {percent} must be in 1..=100"));
            }
            _ => {}
        }
        Ok(())
    }
}

/// When the challenger fails: any threshold crossed for `for_s` seconds
/// rolls it back. Defaults are the seeds' alert values.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Deserialize, Debug, Clone, PartialEq,
)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Largest error rate (errors / requests) in the window.
    pub max_error_rate: f64,
    /// Largest p99 latency in the window, ms.
    pub max_p99_ms: f64,
    /// Smallest share of shadowed requests answered identically (0: off).
    pub min_agreement: f64,
    /// How long a crossing must last, seconds (0: at once).
    pub for_s: u64,
    /// The window analysed, seconds.
    pub window_s: u64,
    /// Requests the window needs before it is judged; a step advances,
    /// and the new version is promoted, only on a judged window.
    pub min_requests: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_error_rate: 0.01,
            max_p99_ms: 500.0,
            min_agreement: 0.0,
            for_s: 0,
            window_s: 10,
            min_requests: 20,
        }
    }
}

/// The challenger's recent window, as the controller measured it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// Requests answered.
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
    /// p99 latency, µs (0: no requests).
    pub p99_us: u64,
    /// Shadowed requests compared with the champion.
    pub compared: u64,
    /// Of which identical.
    pub agreed: u64,
    /// Every challenger replica the current share needs is up.
    pub settled: bool,
}

/// What the controller does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send this percent of requests to the challenger.
    Weight(u32),
    /// Mirror this percent of requests to the challenger.
    Mirror(u32),
    /// The challenger becomes the live version; the old one is retired.
    Promote,
    /// The challenger is removed; all traffic stays on the live version
    /// (Promote, Rollback and End all end the traffic split).
    Rollback(String),
    /// Shadowing ended without promotion; the challenger is removed.
    End,
    /// A step to record in the history.
    Note(String),
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// The challenger's replicas are starting.
    Starting,
    /// Canary step `i` since the time given (ms).
    Step(usize, u64),
    /// Blue-green: switched at (ms); the old set is warm.
    Switched(u64),
    /// Shadowing since (ms).
    Shadowing(u64),
    /// Finished.
    Done,
}

/// One rollout's decisions.
#[derive(Debug, Clone)]
pub struct Rollout {
    strategy: Strategy,
    limits: Thresholds,
    phase: Phase,
    breach_since: Option<(u64, String)>,
}

impl Rollout {
    /// A rollout whose challenger is starting.
    pub fn new(strategy: Strategy, limits: Thresholds) -> Rollout {
        Rollout {
            strategy,
            limits,
            phase: Phase::Starting,
            breach_since: None,
        }
    }

    /// Where it is.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Challenger replicas for `live` live ones at the current phase: its
    /// share of them (at least 1) while a canary or a shadow that will not
    /// be promoted runs, all of them for blue-green, a promoting shadow and
    /// at 100%.
    pub fn replicas(&self, live: u32) -> u32 {
        let share = match (&self.phase, &self.strategy) {
            (Phase::Starting, Strategy::Canary { steps, .. }) => steps[0],
            (_, Strategy::Shadow { promote: true, .. }) => 100,
            (_, Strategy::Shadow { percent, .. }) => *percent,
            (Phase::Step(..), _) => self.weight(),
            _ => 100,
        };
        (live * share).div_ceil(100).clamp(1, live.max(1))
    }

    /// The challenger's share of traffic now (percent).
    pub fn weight(&self) -> u32 {
        match (&self.phase, &self.strategy) {
            (Phase::Step(i, _), Strategy::Canary { steps, .. }) => steps[*i],
            (Phase::Switched(_), _) => 100,
            _ => 0,
        }
    }

    /// The analysis window, seconds.
    pub fn window_s(&self) -> u64 {
        self.limits.window_s.max(1)
    }

    /// The challenger's replicas are all up: the first step.
    pub fn ready(&mut self, now: u64) -> Vec<Effect> {
        if self.phase != Phase::Starting {
            return Vec::new();
        }
        match &self.strategy {
            Strategy::Canary { steps, .. } => {
                self.phase = Phase::Step(0, now);
                vec![
                    Effect::Weight(steps[0]),
                    Effect::Note(format!("step 1: {}% of traffic", steps[0])),
                ]
            }
            Strategy::BlueGreen { .. } => {
                self.phase = Phase::Switched(now);
                vec![
                    Effect::Weight(100),
                    Effect::Note("switched: 100% of traffic, old set kept warm".into()),
                ]
            }
            Strategy::Shadow { percent, .. } => {
                self.phase = Phase::Shadowing(now);
                vec![
                    Effect::Mirror(*percent),
                    Effect::Note(format!("shadowing {percent}% of traffic")),
                ]
            }
        }
    }

    /// The crossed threshold in `w`, if any.
    fn breach(&self, w: &Window) -> Option<String> {
        let l = &self.limits;
        if w.requests >= l.min_requests.max(1) {
            let rate = w.errors as f64 / w.requests as f64;
            if rate > l.max_error_rate {
                return Some(format!(
                    "error rate {:.1}% > {}% ({} of {} requests)",
                    rate * 100.0,
                    l.max_error_rate * 100.0,
                    w.errors,
                    w.requests
                ));
            }
            let p99_ms = w.p99_us as f64 / 1000.0;
            if p99_ms > l.max_p99_ms {
                return Some(format!("p99 latency {p99_ms:.1} ms > {} ms", l.max_p99_ms));
            }
        }
        if l.min_agreement > 0.0 && w.compared >= l.min_requests.max(1) {
            let a = w.agreed as f64 / w.compared as f64;
            if a < l.min_agreement {
                return Some(format!(
                    "agreement with the live version {:.1}% < {}% ({} of {} shadowed)",
                    a * 100.0,
                    l.min_agreement * 100.0,
                    w.agreed,
                    w.compared
                ));
            }
        }
        None
    }

    /// Whether `w` holds enough to judge: `min_requests` answers (and as
    /// many shadow comparisons when agreement is a threshold), with every
    /// replica the challenger's share needs up.
    fn judged(&self, w: &Window) -> bool {
        let l = &self.limits;
        w.settled
            && w.requests >= l.min_requests
            && (l.min_agreement <= 0.0 || w.compared >= l.min_requests)
    }

    /// One analysis pass at `now` (ms) over the challenger's window.
    pub fn tick(&mut self, now: u64, w: &Window) -> Vec<Effect> {
        if matches!(self.phase, Phase::Starting | Phase::Done) {
            return Vec::new();
        }
        match self.breach(w) {
            Some(why) => {
                let since = self.breach_since.get_or_insert((now, why.clone())).0;
                if now.saturating_sub(since) >= self.limits.for_s * 1000 {
                    self.phase = Phase::Done;
                    let held = match self.limits.for_s {
                        0 => String::new(),
                        s => format!(" for {s} s"),
                    };
                    return vec![Effect::Rollback(format!("{why}{held}"))];
                }
                // A step never advances while a threshold is crossed.
                return Vec::new();
            }
            None => self.breach_since = None,
        }
        // No step and no promotion on a window too thin to judge (a
        // challenger without traffic, or whose replicas are down): hold.
        if !self.judged(w) {
            return Vec::new();
        }
        match (self.phase.clone(), self.strategy.clone()) {
            (Phase::Step(i, at), Strategy::Canary { steps, step_s }) => {
                if now.saturating_sub(at) < step_s * 1000 {
                    return Vec::new();
                }
                if i + 1 == steps.len() {
                    self.phase = Phase::Done;
                    return vec![Effect::Promote];
                }
                self.phase = Phase::Step(i + 1, now);
                vec![
                    Effect::Weight(steps[i + 1]),
                    Effect::Note(format!("step {}: {}% of traffic", i + 2, steps[i + 1])),
                ]
            }
            (Phase::Switched(at), Strategy::BlueGreen { keep_warm_s }) => {
                if now.saturating_sub(at) < keep_warm_s * 1000 {
                    return Vec::new();
                }
                self.phase = Phase::Done;
                vec![Effect::Promote]
            }
            (
                Phase::Shadowing(at),
                Strategy::Shadow {
                    duration_s,
                    promote,
                    ..
                },
            ) => {
                if now.saturating_sub(at) < duration_s * 1000 {
                    return Vec::new();
                }
                self.phase = Phase::Done;
                vec![if promote {
                    Effect::Promote
                } else {
                    Effect::End
                }]
            }
            _ => Vec::new(),
        }
    }

    /// Stopped from outside (a user's rollback, a failed start).
    pub fn abort(&mut self, why: &str) -> Vec<Effect> {
        if self.phase == Phase::Done {
            return Vec::new();
        }
        self.phase = Phase::Done;
        vec![Effect::Rollback(why.to_string())]
    }
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
