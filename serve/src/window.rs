//! Sliding windows of a deployment's requests, errors and latency, built
//! from its replicas' cumulative counters: each check adds the difference
//! since the last one to the current second's slice (an HDR histogram, so
//! p50/p95/p99 are real quantiles, not averages); the window is the sum of
//! the last `span` seconds.

use crate::rollout::Window;
use hdrhistogram::Histogram;
use std::collections::VecDeque;

/// Milliseconds on this process's monotonic clock (what windows and
/// rollouts are timed by).
pub(crate) fn clock_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// A latency histogram as (µs, count) for each non-empty bucket, rising.
pub type Buckets = Vec<(u64, u64)>;

/// A latency histogram: 1 µs to 60 s, 2 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid histogram bounds")
}

/// The non-empty buckets of `h`.
pub fn buckets(h: &Histogram<u64>) -> Buckets {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// `new - old` bucket by bucket (cumulative counters only grow; a bucket
/// lower than before counts nothing).
pub fn delta(new: &Buckets, old: &Buckets) -> Buckets {
    let (mut i, mut out) = (0, Vec::new());
    for &(v, n) in new {
        while i < old.len() && old[i].0 < v {
            i += 1;
        }
        let before = match old.get(i) {
            Some(&(ov, on)) if ov == v => on,
            _ => 0,
        };
        if n > before {
            out.push((v, n - before));
        }
    }
    out
}

struct Slice {
    second: u64,
    requests: u64,
    errors: u64,
    compared: u64,
    agreed: u64,
    latency: Histogram<u64>,
}

/// Quantiles and rates of a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// The counts (what a rollout judges).
    pub window: Window,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 95th percentile, µs.
    pub p95_us: u64,
    /// Requests per second over the window.
    pub rate: f64,
}

/// The last `span_s` seconds of one deployment.
pub struct Slices {
    span_s: u64,
    slices: VecDeque<Slice>,
}

impl Slices {
    /// An empty window of `span_s` seconds.
    pub fn new(span_s: u64) -> Slices {
        Slices {
            span_s: span_s.max(1),
            slices: VecDeque::new(),
        }
    }

    /// Its span, seconds.
    pub fn span_s(&self) -> u64 {
        self.span_s
    }

    fn slice(&mut self, now_ms: u64) -> &mut Slice {
        let second = now_ms / 1000;
        if self.slices.back().is_none_or(|s| s.second != second) {
            self.slices.push_back(Slice {
                second,
                requests: 0,
                errors: 0,
                compared: 0,
                agreed: 0,
                latency: histogram(),
            });
        }
        while self
            .slices
            .front()
            .is_some_and(|s| s.second + self.span_s <= second)
        {
            self.slices.pop_front();
        }
        self.slices.back_mut().expect("just pushed")
    }

    /// Requests answered since the last check, with their latencies.
    pub fn add(&mut self, now_ms: u64, requests: u64, errors: u64, latency: &Buckets) {
        let s = self.slice(now_ms);
        s.requests += requests;
        s.errors += errors;
        for &(v, n) in latency {
            s.latency.saturating_record_n(v, n);
        }
    }

    /// Shadowed requests compared with the live version.
    pub fn add_shadow(&mut self, now_ms: u64, compared: u64, agreed: u64) {
        let s = self.slice(now_ms);
        s.compared += compared;
        s.agreed += agreed;
    }

    /// The window ending at `now_ms`.
    pub fn summary(&mut self, now_ms: u64) -> Summary {
        self.slice(now_ms);
        let mut h = histogram();
        let mut w = Window::default();
        for s in &self.slices {
            w.requests += s.requests;
            w.errors += s.errors;
            w.compared += s.compared;
            w.agreed += s.agreed;
            let _ = h.add(&s.latency);
        }
        let q = |p: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(p)
            }
        };
        w.p99_us = q(0.99);
        Summary {
            p50_us: q(0.5),
            p95_us: q(0.95),
            rate: w.requests as f64 / self.span_s as f64,
            window: w,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantiles_come_from_the_histogram() {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap();
        }
        let mut w = Slices::new(10);
        w.add(1_000, 1000, 7, &buckets(&h));
        let s = w.summary(1_500);
        assert_eq!((s.window.requests, s.window.errors), (1000, 7));
        assert!((4_900..=5_100).contains(&s.p50_us), "{s:?}");
        assert!((9_800..=10_000).contains(&s.window.p99_us), "{s:?}");
        assert!((s.rate - 100.0).abs() < 1e-9);
    }

    #[test]
    fn old_seconds_leave_the_window() {
        let mut w = Slices::new(3);
        w.add(0, 10, 1, &vec![(100, 10)]);
        w.add(2_500, 5, 0, &vec![(200, 5)]);
        assert_eq!(w.summary(2_900).window.requests, 15);
        assert_eq!(w.summary(3_000).window.requests, 5, "second 0 left");
        assert_eq!(w.summary(6_000).window, Window::default());
    }

    #[test]
    fn delta_subtracts_per_bucket() {
        let old = vec![(10, 3), (20, 1)];
        let new = vec![(5, 1), (10, 5), (20, 1), (40, 2)];
        assert_eq!(delta(&new, &old), vec![(5, 1), (10, 2), (40, 2)]);
        assert_eq!(delta(&new, &vec![]), new);
    }

    proptest! {
        /// Recording a then b, the delta of the cumulative buckets is b's.
        #[test]
        fn delta_of_cumulative_is_the_increment(
            a in prop::collection::vec(1u64..5_000_000, 0..200),
            b in prop::collection::vec(1u64..5_000_000, 0..200),
        ) {
            let mut h = histogram();
            for &v in &a { h.record(v).unwrap(); }
            let before = buckets(&h);
            let mut only_b = histogram();
            for &v in &b { h.record(v).unwrap(); only_b.record(v).unwrap(); }
            prop_assert_eq!(delta(&buckets(&h), &before), buckets(&only_b));
        }
    }
}
