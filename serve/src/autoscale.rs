//! The autoscaling decision, as Ray Serve makes it: the replicas wanted are
//! the requests in flight over the target per replica, clamped to
//! `[min, max]` and smoothed; a change is made only after it has been
//! wanted for the upscale (or downscale) delay, so a burst does not make
//! the deployment thrash. Pure: time is passed in, the decision returned.

use std::time::{Duration, Instant};

/// A deployment's autoscaling settings.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct AutoscalingConfig {
    /// Fewest replicas (0: scale to zero when idle).
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
    /// Requests in flight per replica to aim for.
    pub target_ongoing_requests: f64,
    /// How long more replicas must be wanted before they are started, ms.
    pub upscale_delay_ms: u64,
    /// How long fewer replicas must be wanted before some are stopped, ms.
    pub downscale_delay_ms: u64,
    /// How far to move toward the wanted count in one step (1.0: all the way).
    pub smoothing: f64,
}

impl Default for AutoscalingConfig {
    fn default() -> Self {
        AutoscalingConfig {
            min_replicas: 1,
            max_replicas: 4,
            target_ongoing_requests: 2.0,
            upscale_delay_ms: 1_000,
            downscale_delay_ms: 5_000,
            smoothing: 1.0,
        }
    }
}

/// One deployment's autoscaler.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    cfg: AutoscalingConfig,
    /// Since when a different count has been wanted, and which way.
    wanting: Option<(Instant, bool)>,
}

impl Autoscaler {
    /// An autoscaler with nothing wanted yet.
    pub fn new(cfg: AutoscalingConfig) -> Autoscaler {
        Autoscaler { cfg, wanting: None }
    }

    /// Its settings.
    pub fn config(&self) -> &AutoscalingConfig {
        &self.cfg
    }

    /// The replica count wanted for `ongoing` requests in flight (summed
    /// over replicas and callers' queues), before any delay.
    pub fn wanted(&self, current: u32, ongoing: f64) -> u32 {
        let c = &self.cfg;
        let raw = (ongoing / c.target_ongoing_requests.max(1e-9)).ceil();
        let smoothed = current as f64 + (raw - current as f64) * c.smoothing.clamp(0.0, 1.0);
        let step = if smoothed > current as f64 {
            smoothed.ceil()
        } else {
            smoothed.floor()
        };
        (step.max(0.0) as u32).clamp(c.min_replicas, c.max_replicas.max(c.min_replicas))
    }

    /// Given the current count and the load at `now`, the new count to
    /// scale to, once the wish has lasted its delay (else `None`).
    pub fn decide(&mut self, now: Instant, current: u32, ongoing: f64) -> Option<u32> {
        let want = self.wanted(current, ongoing);
        if want == current {
            self.wanting = None;
            return None;
        }
        let up = want > current;
        // From zero, the first request should not wait out a delay.
        if current == 0 && up {
            self.wanting = None;
            return Some(want);
        }
        let delay = Duration::from_millis(if up {
            self.cfg.upscale_delay_ms
        } else {
            self.cfg.downscale_delay_ms
        });
        match self.wanting {
            Some((since, dir)) if dir == up => {
                if now.duration_since(since) >= delay {
                    self.wanting = None;
                    Some(want)
                } else {
                    None
                }
            }
            _ => {
                self.wanting = Some((now, up));
                if delay.is_zero() {
                    self.wanting = None;
                    Some(want)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> AutoscalingConfig {
        AutoscalingConfig {
            min_replicas: 1,
            max_replicas: 4,
            target_ongoing_requests: 2.0,
            upscale_delay_ms: 1_000,
            downscale_delay_ms: 5_000,
            smoothing: 1.0,
        }
    }

    #[test]
    fn scales_up_only_after_the_delay_and_down_after_the_longer_one() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(cfg());
        assert_eq!(a.decide(t0, 1, 8.0), None, "wanted, not yet for a second");
        assert_eq!(a.decide(t0 + Duration::from_millis(500), 1, 8.0), None);
        assert_eq!(a.decide(t0 + Duration::from_millis(1000), 1, 8.0), Some(4));
        assert_eq!(a.decide(t0 + Duration::from_millis(1100), 4, 0.0), None);
        assert_eq!(a.decide(t0 + Duration::from_millis(5000), 4, 0.0), None);
        assert_eq!(a.decide(t0 + Duration::from_millis(6100), 4, 0.0), Some(1));
    }

    #[test]
    fn a_short_burst_does_not_thrash() {
        let t0 = Instant::now();
        let mut a = Autoscaler::new(cfg());
        assert_eq!(a.decide(t0, 2, 20.0), None);
        // The load falls back before the delay: the wish is forgotten.
        assert_eq!(a.decide(t0 + Duration::from_millis(600), 2, 4.0), None);
        assert_eq!(a.decide(t0 + Duration::from_millis(1200), 2, 20.0), None);
        assert_eq!(a.decide(t0 + Duration::from_millis(1900), 2, 20.0), None);
        assert_eq!(a.decide(t0 + Duration::from_millis(2200), 2, 20.0), Some(4));
    }

    #[test]
    fn from_zero_the_first_request_starts_a_replica_at_once() {
        let mut a = Autoscaler::new(AutoscalingConfig {
            min_replicas: 0,
            ..cfg()
        });
        assert_eq!(a.decide(Instant::now(), 0, 1.0), Some(1));
        assert_eq!(a.wanted(1, 0.0), 0, "idle goes back to zero");
    }

    #[test]
    fn smoothing_moves_part_of_the_way() {
        let a = Autoscaler::new(AutoscalingConfig {
            smoothing: 0.5,
            max_replicas: 10,
            ..cfg()
        });
        assert_eq!(a.wanted(2, 20.0), 6, "halfway from 2 to 10");
        assert_eq!(a.wanted(10, 0.0), 5, "halfway down from 10 to 0");
    }

    proptest! {
        #[test]
        fn the_decision_stays_within_bounds(
            min in 0u32..4, extra in 0u32..6, current in 0u32..12,
            ongoing in 0.0f64..100.0, smoothing in 0.0f64..1.0, ms in 0u64..20_000,
        ) {
            let c = AutoscalingConfig { min_replicas: min, max_replicas: min + extra, smoothing, ..cfg() };
            let mut a = Autoscaler::new(c);
            let t0 = Instant::now();
            let _ = a.decide(t0, current, ongoing);
            if let Some(n) = a.decide(t0 + Duration::from_millis(ms), current, ongoing) {
                prop_assert!(n >= min && n <= min + extra);
                prop_assert_ne!(n, current);
            }
        }
    }
}
