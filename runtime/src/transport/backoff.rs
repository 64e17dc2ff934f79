//! How long to wait before dialling a lost peer again: exponential backoff
//! with jitter, a pure state machine (the randomness is a seeded
//! generator, the clock is the caller's).
//!
//! Thousands of raylets lose a restarted head at the same instant. Were
//! they all to dial again on the same beat, the head would take a burst of
//! handshakes it cannot finish before their timeouts, and every one of them
//! would be tried again — work wasted in a loop. Each wait is drawn
//! uniformly between `base` and the current ceiling (`base · 2^(failures+1)`,
//! at most `cap`: the first wait is already spread over `[base, 2·base]`),
//! so the herd spreads over the ceiling and thins as it grows ("full
//! jitter").
//!
//! - BO-1: every wait is within `[base, cap]` (`cap` is raised to `base`).
//! - BO-2: the ceiling doubles per failure up to `cap`; a success resets it.
//! - BO-3: the same seed gives the same waits.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// Waits between attempts to reach a peer.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
    rng: StdRng,
}

impl Backoff {
    /// Waits from `base` up to `cap`, drawn from `seed` (BO-3).
    pub fn new(base: Duration, cap: Duration, seed: u64) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            failures: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Waits seeded at random: processes that started together still draw
    /// different waits.
    pub fn randomized(base: Duration, cap: Duration) -> Backoff {
        Backoff::new(base, cap, rand::random())
    }

    /// An attempt failed: how long to wait before the next one (BO-1, BO-2).
    pub fn failed(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32 << self.failures.min(20))
            .min(self.cap);
        self.failures = self.failures.saturating_add(1);
        let span = (ceiling - self.base).as_nanos() as u64;
        self.base + Duration::from_nanos(self.rng.random_range(0..=span))
    }

    /// An attempt succeeded: the next failure starts again from `base`.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    proptest! {
        #[test]
        fn bo_1_2_waits_stay_under_a_ceiling_that_doubles_to_the_cap(
            seed in any::<u64>(), base_ms in 1u64..500, cap_ms in 0u64..20_000, n in 1usize..40,
        ) {
            let (base, cap) = (MS * base_ms as u32, MS * cap_ms as u32);
            let mut b = Backoff::new(base, cap, seed);
            for i in 0..n {
                let ceiling = base.saturating_mul(2 << i.min(20)).min(cap.max(base));
                let w = b.failed();
                prop_assert!(w >= base && w <= ceiling, "wait {w:?} outside [{base:?}, {ceiling:?}]");
            }
            prop_assert_eq!(b.failures() as usize, n);
            b.succeeded();
            let first = b.failed();
            prop_assert!(
                first >= base && first <= (base * 2).min(cap.max(base)),
                "after a success the ceiling is 2 base again"
            );
        }

        #[test]
        fn bo_3_the_same_seed_gives_the_same_waits(seed in any::<u64>()) {
            let mut x = Backoff::new(MS * 50, MS * 5000, seed);
            let mut y = Backoff::new(MS * 50, MS * 5000, seed);
            for _ in 0..10 {
                prop_assert_eq!(x.failed(), y.failed());
            }
        }
    }

    #[test]
    fn a_herd_spreads_over_the_ceiling() {
        // 10,000 clients failing for the 4th time: their waits cover
        // 50..800 ms evenly rather than landing on one beat.
        let mut buckets = [0u32; 8];
        for seed in 0..10_000u64 {
            let mut b = Backoff::new(MS * 50, MS * 8000, seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let w = (0..4).map(|_| b.failed()).last().unwrap() - MS * 50;
            buckets[(w.as_micros() as usize * 8 / 750_001).min(7)] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (1100..=1400).contains(&n)),
            "{buckets:?}"
        );
    }
}
