//! Alert rules as a pure state machine: each rule watches one metric of
//! each deployment (or one named deployment); a value over the threshold
//! for `for_s` seconds fires it once, back under it for `for_s` resolves it
//! once, so a webhook hears exactly one message per incident and one when
//! it ends. Time is passed in; notices come back as data. The shipped
//! defaults are the seeds' thresholds: p99 latency 500 ms, error rate
//! 0.01, drift score 0.15 (KL divergence).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What a rule watches.
#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Errors / requests over the deployment's window.
    ErrorRate,
    /// p99 latency over the window, ms.
    P99LatencyMs,
    /// The last drift window's score (largest KL over the features).
    DriftScore,
    /// Event: a training run ended `failed` (any trainer, any job).
    RunFailed,
    /// Event: a run failed its data validation before training.
    ValidationFailed,
    /// Event: the head declared a node dead.
    NodeDead,
}

impl Metric {
    /// An event (one notice each, never resolved), not a threshold.
    pub fn is_event(self) -> bool {
        matches!(
            self,
            Metric::RunFailed | Metric::ValidationFailed | Metric::NodeDead
        )
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Metric::ErrorRate => "error_rate",
            Metric::P99LatencyMs => "p99_latency_ms",
            Metric::DriftScore => "drift_score",
            Metric::RunFailed => "run_failed",
            Metric::ValidationFailed => "validation_failed",
            Metric::NodeDead => "node_dead",
        })
    }
}

/// One rule.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Its name (unique).
    pub name: String,
    /// The metric.
    pub metric: Metric,
    /// Fires above this (events: unused).
    #[serde(default)]
    pub threshold: f64,
    /// For this long, seconds (and resolves after as long below).
    #[serde(default)]
    pub for_s: u64,
    /// info, warning, critical…
    #[serde(default = "warning")]
    pub severity: String,
    /// Only this deployment (all when absent; events: unused).
    #[serde(default)]
    pub deployment: Option<String>,
    /// Webhook URLs (Slack- and Teams-compatible JSON is posted).
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// A command run when it fires (e.g. `[prism, submit, --, ./retrain]`
    /// on a drift alert), with `PRISM_ALERT_RULE`, `PRISM_ALERT_DEPLOYMENT`,
    /// `PRISM_ALERT_METRIC`, `PRISM_ALERT_VALUE` and `PRISM_ALERT_TEXT` set.
    #[serde(default)]
    pub run: Vec<String>,
}

fn warning() -> String {
    "warning".into()
}

/// The rules file (`alerts.yaml`: `rules: [...]`).
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// The rules.
    pub rules: Vec<Rule>,
}

impl Default for Rules {
    /// The seeds' thresholds, held 60 s, and every failed run, failed
    /// data validation and dead node; no webhook.
    fn default() -> Self {
        let rule = |name: &str, metric: Metric, threshold, severity: &str| Rule {
            name: name.into(),
            metric,
            threshold,
            for_s: if metric.is_event() { 0 } else { 60 },
            severity: severity.into(),
            deployment: None,
            webhooks: Vec::new(),
            run: Vec::new(),
        };
        Rules {
            rules: vec![
                rule("p99-latency", Metric::P99LatencyMs, 500.0, "warning"),
                rule("error-rate", Metric::ErrorRate, 0.01, "critical"),
                rule("drift", Metric::DriftScore, 0.15, "warning"),
                rule("run-failed", Metric::RunFailed, 0.0, "critical"),
                rule(
                    "validation-failed",
                    Metric::ValidationFailed,
                    0.0,
                    "critical",
                ),
                rule("node-dead", Metric::NodeDead, 0.0, "critical"),
            ],
        }
    }
}

impl Rules {
    /// Reads and checks a rules file (YAML: `rules: [{name, metric,
    /// threshold, for_s, severity, deployment, webhooks}]`).
    pub fn load(path: &std::path::Path) -> Result<Rules, crate::ConfigError> {
        let (file, text) = crate::config::read(path)?;
        let rules: Rules = crate::config::parse_yaml(&file, &text)?;
        rules
            .validate()
            .map_err(|detail| crate::ConfigError::Invalid { file, detail })?;
        Ok(rules)
    }

    /// A clear error for rules that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for r in &self.rules {
            if r.name.is_empty() || !seen.insert(&r.name) {
                return Err(format!(
                    "rule names must be unique and not empty ({:?})",
                    r.name
                ));
            }
            if !r.threshold.is_finite() {
                return Err(format!("rule {}: threshold must be a number", r.name));
            }
            if r.run.first().is_some_and(|c| c.is_empty()) {
                return Err(format!("rule {}: run needs a command", r.name));
            }
            if let Some(u) = r.webhooks.iter().find(|u| !u.starts_with("http://")) {
                return Err(format!(
                    "rule {}: webhook {u:?} must be an http:// URL (https is not supported yet)",
                    r.name
                ));
            }
        }
        Ok(())
    }
}

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Over the threshold for its duration.
    Firing,
    /// Back under it.
    Resolved,
    /// An event (a failed run, a dead node): one notice, nothing to resolve.
    Event,
}

/// A message to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// The rule.
    pub rule: String,
    /// The deployment.
    pub deployment: String,
    /// Firing or resolved.
    pub kind: Kind,
    /// The metric and its value then.
    pub metric: String,
    /// See `metric`.
    pub value: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// The rule's severity.
    pub severity: String,
    /// Where to send it.
    pub webhooks: Vec<String>,
    /// Unix ms.
    pub at_unix_ms: u64,
    /// What happened, for events (the run's or node's reason).
    #[serde(default)]
    pub detail: String,
    /// The rule's command, run when it fires.
    #[serde(default)]
    pub run: Vec<String>,
}

impl Rule {
    /// Its notice about `deployment` (or an event's subject) at `unix_ms`.
    fn notice(
        &self,
        deployment: &str,
        kind: Kind,
        value: f64,
        unix_ms: u64,
        detail: &str,
    ) -> Notice {
        Notice {
            rule: self.name.clone(),
            deployment: deployment.to_string(),
            kind,
            metric: self.metric.to_string(),
            value,
            threshold: self.threshold,
            severity: self.severity.clone(),
            webhooks: self.webhooks.clone(),
            run: self.run.clone(),
            at_unix_ms: unix_ms,
            detail: detail.to_string(),
        }
    }
}

impl Notice {
    /// The chat line: `[FIRING critical] error_rate of r is 0.5 > 0.01 (rule error-rate)`.
    pub fn text(&self) -> String {
        let (tag, cmp) = match self.kind {
            Kind::Firing => ("FIRING", ">"),
            Kind::Resolved => ("RESOLVED", "≤"),
            Kind::Event => {
                return format!(
                    "[{}] {} {}: {} (rule {})",
                    self.severity, self.metric, self.deployment, self.detail, self.rule
                )
            }
        };
        format!(
            "[{tag} {}] {} of {} is {:.4} {cmp} {} (rule {})",
            self.severity, self.metric, self.deployment, self.value, self.threshold, self.rule
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Over since (ms), not yet fired.
    Pending(u64),
    /// Fired; under since (ms) when it started to recover.
    Firing(Option<u64>),
}

/// The rules and where each (rule, deployment) stands.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    rules: Rules,
    state: HashMap<(String, String), State>,
    seen: std::collections::HashSet<(String, String)>,
}

impl Engine {
    /// An engine over `rules`.
    pub fn new(rules: Rules) -> Engine {
        Engine {
            rules,
            state: HashMap::new(),
            seen: Default::default(),
        }
    }

    /// Takes over from `old` (new rules): the events it announced, and
    /// where each alert of a rule that did not change stands (a firing
    /// alert of an unchanged rule still gets its one resolution).
    pub fn carry_over(&mut self, old: Engine) {
        self.seen = old.seen;
        let same = |name: &str| {
            let mine = self.rules.rules.iter().find(|r| r.name == name);
            mine.is_some() && mine == old.rules.rules.iter().find(|r| r.name == name)
        };
        let kept: Vec<_> = old
            .state
            .into_iter()
            .filter(|((r, _), _)| same(r))
            .collect();
        self.state.extend(kept);
    }

    /// Resolves the alerts of deployments that no longer exist and forgets
    /// them.
    pub fn forget_gone(&mut self, unix_ms: u64, exists: impl Fn(&str) -> bool) -> Vec<Notice> {
        let gone: Vec<(String, String)> = self
            .state
            .keys()
            .filter(|(_, d)| !exists(d))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for key in gone {
            let was = self.state.remove(&key);
            let rule = self.rules.rules.iter().find(|r| r.name == key.0);
            if let (Some(State::Firing(_)), Some(rule)) = (was, rule) {
                out.push(rule.notice(
                    &key.1,
                    Kind::Resolved,
                    0.0,
                    unix_ms,
                    "the deployment is gone",
                ));
            }
        }
        out
    }

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// (rule, deployment) pairs firing now.
    pub fn firing(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .state
            .iter()
            .filter(|(_, s)| matches!(s, State::Firing(_)))
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    /// Events seen now: (metric, subject, detail). Each (rule, subject)
    /// gives one notice, ever.
    pub fn events(&mut self, unix_ms: u64, events: &[(Metric, String, String)]) -> Vec<Notice> {
        let mut out = Vec::new();
        for rule in self.rules.rules.iter().filter(|r| r.metric.is_event()) {
            for (metric, subject, detail) in events {
                if *metric != rule.metric || !self.seen.insert((rule.name.clone(), subject.clone()))
                {
                    continue;
                }
                out.push(rule.notice(subject, Kind::Event, 1.0, unix_ms, detail));
            }
        }
        out
    }

    /// One pass at `now` (ms; `unix_ms` stamps notices) over the values
    /// observed: (deployment, metric, value). A metric not observed for a
    /// deployment (too few requests) leaves its state as it was.
    pub fn evaluate(
        &mut self,
        now: u64,
        unix_ms: u64,
        observed: &[(String, Metric, f64)],
    ) -> Vec<Notice> {
        let mut out = Vec::new();
        let mut seen_now = std::collections::HashSet::new();
        for rule in self.rules.rules.iter().filter(|r| !r.metric.is_event()) {
            for (dep, metric, value) in observed {
                if *metric != rule.metric || rule.deployment.as_ref().is_some_and(|d| d != dep) {
                    continue;
                }
                let key = (rule.name.clone(), dep.clone());
                seen_now.insert(key.clone());
                let hold = rule.for_s * 1000;
                let over = *value > rule.threshold;
                let next = match (self.state.get(&key).copied(), over) {
                    (None, false) => None,
                    (None, true) => Some(State::Pending(now)),
                    (Some(State::Pending(_)), false) => None,
                    (Some(State::Pending(t)), true) => Some(State::Pending(t)),
                    (Some(State::Firing(_)), true) => Some(State::Firing(None)),
                    (Some(State::Firing(None)), false) => Some(State::Firing(Some(now))),
                    (Some(State::Firing(Some(t))), false) => Some(State::Firing(Some(t))),
                };
                let notice = |kind| rule.notice(dep, kind, *value, unix_ms, "");
                let next = match next {
                    Some(State::Pending(t)) if now.saturating_sub(t) >= hold => {
                        out.push(notice(Kind::Firing));
                        Some(State::Firing(None))
                    }
                    Some(State::Firing(Some(t))) if now.saturating_sub(t) >= hold => {
                        out.push(notice(Kind::Resolved));
                        None
                    }
                    n => n,
                };
                match next {
                    Some(s) => self.state.insert(key, s),
                    None => self.state.remove(&key),
                };
            }
        }
        // Over the threshold, then not measured (too few requests): the
        // clock of `for_s` starts again on the next crossing.
        self.state
            .retain(|k, s| !matches!(s, State::Pending(_)) || seen_now.contains(k));
        out
    }
}

#[cfg(test)]
#[path = "alerts_tests.rs"]
mod tests;
