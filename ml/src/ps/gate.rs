//! Stale-synchronous parallel (SSP) as a pure clock: a worker may start
//! step `t` only while `t - k` is at most the number of steps the slowest
//! worker has finished. `k = 0` is bulk-synchronous: nobody starts step `t`
//! before everyone finished step `t - 1`.
//!
//! - **PS-1** no worker ever runs more than `k` steps ahead of the slowest
//!   (property-tested over random worker speeds).

/// Each worker's finished steps, and how far ahead one may run.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StalenessGate {
    /// Steps finished (pushed) per worker.
    done: Vec<u64>,
    /// The bound.
    k: u64,
}

impl StalenessGate {
    /// `workers` workers, none started, at most `k` steps apart.
    pub fn new(workers: usize, k: u64) -> StalenessGate {
        StalenessGate {
            done: vec![0; workers.max(1)],
            k,
        }
    }

    /// Steps the slowest worker has finished.
    pub fn slowest(&self) -> u64 {
        self.done.iter().copied().min().unwrap_or(0)
    }

    /// Whether a worker may start step `step` now (PS-1).
    pub fn may_start(&self, step: u64) -> bool {
        step <= self.slowest() + self.k
    }

    /// Steps `worker` has finished.
    pub fn done(&self, worker: usize) -> u64 {
        self.done.get(worker).copied().unwrap_or(0)
    }

    /// `worker` finished step `step` (its push arrived).
    pub fn finished(&mut self, worker: usize, step: u64) {
        if let Some(d) = self.done.get_mut(worker) {
            *d = (*d).max(step + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn k_zero_is_bulk_synchronous() {
        let mut g = StalenessGate::new(2, 0);
        assert!(g.may_start(0));
        g.finished(0, 0);
        assert!(!g.may_start(1), "worker 1 has not finished step 0");
        g.finished(1, 0);
        assert!(g.may_start(1));
    }

    proptest! {
        /// Random speeds: workers try to start their next step in a random
        /// order; the gate lets them only within `k` of the slowest.
        #[test]
        fn ps_1_no_worker_runs_more_than_k_ahead(
            k in 0u64..5,
            workers in 1usize..6,
            order in proptest::collection::vec(0usize..6, 1..400),
        ) {
            let mut g = StalenessGate::new(workers, k);
            let mut next = vec![0u64; workers];
            for w in order.into_iter().map(|w| w % workers) {
                if g.may_start(next[w]) {
                    // It runs step next[w] and pushes it.
                    g.finished(w, next[w]);
                    next[w] += 1;
                }
                let slowest = *next.iter().min().unwrap();
                let fastest = *next.iter().max().unwrap();
                prop_assert!(fastest - slowest <= k + 1, "{next:?} with k={k}");
                // Started steps are never more than k ahead of the slowest
                // finished count.
                for &n in &next {
                    prop_assert!(n == 0 || n - 1 <= slowest + k);
                }
            }
        }
    }
}
