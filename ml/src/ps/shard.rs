//! One parameter-server shard's state, as a pure state machine: a
//! contiguous range of the model's flat f32 weights, its momentum buffer,
//! the server-side optimizer, and its steps (the consistency mode and
//! recovery, shared with sparse shards: [`super::steps`]).
//!
//! - **PS-2** synchronous: step `t`'s update is applied once, from the
//!   average of all `w` workers' gradients for `t`; a pull for step `t`
//!   waits until every step before it is applied — the same arithmetic as
//!   one process at the global batch (and as DDP).
//! - **PS-3** asynchronous and bounded staleness: each push is applied when
//!   it arrives (its gradient divided by `w`, so `w` pushes move the weights
//!   as far as one synchronous step); with bounded staleness `k` a pull for
//!   step `t` waits while `t` is more than `k` steps ahead of the slowest
//!   worker (PS-1).
//! - **PS-4** a shard restored from its checkpoint after a crash skips the
//!   synchronous steps whose gradients it lost: the first pull for a later
//!   step moves it on to that step (its weights are the checkpoint's), and
//!   it is strict again once a step completes.

use super::steps::{Pushed, Steps};

/// How pushes become updates.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each step waits for every worker (PS-2).
    Sync,
    /// Each push is applied as it comes (PS-3).
    Async,
    /// Applied as they come, with workers at most this many steps apart.
    Stale(u64),
}

impl Mode {
    /// How many steps ahead of the slowest worker one may run.
    pub fn bound(self) -> u64 {
        match self {
            Mode::Stale(k) => k,
            Mode::Sync => 0,
            Mode::Async => u64::MAX / 2,
        }
    }
}

/// SGD with momentum on the server: `v = m*v + g; p -= lr*v`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct ServerSgd {
    /// Learning rate.
    pub lr: f32,
    /// Momentum.
    pub momentum: f32,
}

/// One shard.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct ShardState {
    params: Vec<f32>,
    velocity: Vec<f32>,
    opt: ServerSgd,
    /// Which steps may start, and which completed (PS-1, PS-2, PS-4, PS-6).
    steps: Steps<Vec<f32>>,
    updates: u64,
}

impl ShardState {
    /// A shard holding `init`.
    pub fn new(init: Vec<f32>, workers: usize, mode: Mode, opt: ServerSgd) -> ShardState {
        ShardState {
            velocity: vec![0.0; init.len()],
            params: init,
            opt,
            steps: Steps::new(workers, mode),
            updates: 0,
        }
    }

    /// The state as checkpoint bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        prism::Value::encode(self)
            .map(|b| b.to_vec())
            .map_err(|e| e.to_string())
    }

    /// A shard restored from [`ShardState::to_bytes`]: after a crash it
    /// may have lost steps (PS-4); after a clean stop it has not (PS-6).
    pub fn restored(bytes: &[u8]) -> Result<ShardState, String> {
        let mut s: ShardState = prism::Value::decode(bytes).map_err(|e| e.to_string())?;
        s.steps.restored();
        Ok(s)
    }

    /// PS-6: every worker stopped between steps; the state about to be
    /// saved lost nothing, so a shard restored from it waits for every
    /// worker's push as usual instead of skipping ahead (workers resumed at
    /// different times would otherwise skip each other's steps).
    pub fn mark_stopped(&mut self) {
        self.steps.mark_stopped();
    }

    /// Steps `worker` has pushed (where a restarted worker resumes).
    pub fn done(&self, worker: usize) -> u64 {
        self.steps.done(worker)
    }

    /// PS-4: a pull for a step past the lost ones moves a restored
    /// synchronous shard on to it.
    pub fn catch_up(&mut self, step: u64) {
        self.steps.catch_up(step);
    }

    /// The weights a worker may compute step `step` from, or `None` if it
    /// must wait (PS-1, PS-2).
    pub fn pull(&self, step: u64) -> Option<&[f32]> {
        self.steps.ready(step).then_some(&self.params[..])
    }

    /// `worker`'s gradient for `step`. `Err` names a push of the wrong size.
    pub fn push(&mut self, worker: usize, step: u64, grads: &[f32]) -> Result<(), String> {
        let n = self.params.len();
        if grads.len() != n {
            return Err(format!(
                "a push of {} values to a shard of {n}",
                grads.len()
            ));
        }
        let scale = 1.0 / self.steps.workers() as f32;
        let add = |sum: &mut Vec<f32>| {
            sum.resize(n, 0.0);
            for (s, g) in sum.iter_mut().zip(grads) {
                *s += g;
            }
        };
        match self.steps.push(worker, step, add) {
            Pushed::Apply => {
                let g: Vec<f32> = grads.iter().map(|g| g * scale).collect();
                self.apply(&g);
            }
            Pushed::Complete(sums) => {
                for sum in sums {
                    let avg: Vec<f32> = sum.iter().map(|g| g * scale).collect();
                    self.apply(&avg);
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, g: &[f32]) {
        let ServerSgd { lr, momentum } = self.opt;
        for ((p, v), g) in self.params.iter_mut().zip(&mut self.velocity).zip(g) {
            *v = momentum * *v + g;
            *p -= lr * *v;
        }
        self.updates += 1;
    }

    /// The weights now.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// Updates applied so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPT: ServerSgd = ServerSgd {
        lr: 0.5,
        momentum: 0.0,
    };

    #[test]
    fn ps_2_sync_applies_the_average_once_per_step_and_pulls_wait_for_it() {
        let mut s = ShardState::new(vec![1.0, 1.0], 2, Mode::Sync, OPT);
        assert_eq!(s.pull(0), Some(&[1.0, 1.0][..]));
        s.push(0, 0, &[2.0, 0.0]).unwrap();
        assert_eq!(s.pull(1), None, "worker 1 has not pushed step 0");
        s.push(1, 0, &[0.0, 2.0]).unwrap();
        // average (1, 1), lr 0.5: one update.
        assert_eq!(s.pull(1), Some(&[0.5, 0.5][..]));
        assert_eq!(s.updates(), 1);
        // A fast worker's step 1 before the slow one's: held until complete.
        s.push(0, 1, &[1.0, 1.0]).unwrap();
        assert_eq!(s.pull(2), None);
        s.push(1, 1, &[1.0, 1.0]).unwrap();
        assert_eq!(s.pull(2), Some(&[0.0, 0.0][..]));
        assert!(s.push(0, 2, &[1.0]).is_err(), "wrong size");
    }

    #[test]
    fn ps_3_async_applies_each_push_and_stale_gates_pulls() {
        let mut a = ShardState::new(vec![0.0], 2, Mode::Async, OPT);
        a.push(0, 0, &[2.0]).unwrap();
        assert_eq!(a.params(), &[-0.5]);
        assert!(a.pull(100).is_some(), "async never waits");
        let mut s = ShardState::new(vec![0.0], 2, Mode::Stale(1), OPT);
        s.push(0, 0, &[2.0]).unwrap();
        s.push(0, 1, &[2.0]).unwrap();
        assert_eq!(s.params(), &[-1.0], "applied as they came");
        assert!(s.pull(1).is_some(), "1 ahead of the slowest (0 done)");
        assert!(s.pull(2).is_none(), "2 ahead: waits");
        s.push(1, 0, &[0.0]).unwrap();
        assert!(s.pull(2).is_some());
    }

    #[test]
    fn ps_4_a_restored_sync_shard_skips_the_steps_it_lost() {
        let mut s = ShardState::new(vec![1.0], 2, Mode::Sync, OPT);
        s.push(0, 0, &[1.0]).unwrap();
        s.push(1, 0, &[1.0]).unwrap();
        let saved = s.to_bytes().unwrap();
        // Steps 1 and 2 complete, then the shard dies: both are lost.
        let mut r = ShardState::restored(&saved).unwrap();
        assert_eq!(r.params(), &[0.5]);
        assert_eq!(r.done(0), 1);
        assert_eq!(r.pull(3), None, "strict until it catches up");
        r.catch_up(3);
        assert_eq!(r.pull(3), Some(&[0.5][..]), "weights of the checkpoint");
        r.push(0, 3, &[1.0]).unwrap();
        r.push(1, 3, &[1.0]).unwrap();
        assert_eq!(r.params(), &[0.0]);
        r.catch_up(9);
        assert_eq!(r.pull(9), None, "strict again after a full step");
    }

    #[test]
    fn ps_6_a_shard_saved_at_a_clean_stop_skips_nothing() {
        let mut s = ShardState::new(vec![1.0], 2, Mode::Sync, OPT);
        s.push(0, 0, &[1.0]).unwrap();
        s.push(1, 0, &[1.0]).unwrap();
        // Worker 0 pushed step 1; worker 1 stopped before it.
        s.push(0, 1, &[1.0]).unwrap();
        s.mark_stopped();
        let mut r = ShardState::restored(&s.to_bytes().unwrap()).unwrap();
        assert_eq!((r.done(0), r.done(1)), (2, 1));
        // Worker 0, resumed first, waits for step 1 instead of skipping it.
        r.catch_up(2);
        assert_eq!(r.pull(2), None);
        r.push(1, 1, &[1.0]).unwrap();
        assert_eq!(r.pull(2), Some(&[0.0][..]), "step 1 applied from both");
        // A crash after it: restored from a regular save, PS-4 again.
        let mut again = ShardState::restored(&r.to_bytes().unwrap()).unwrap();
        assert!(again.steps.resyncing());
        // Stopped while still catching up: it still is after the restore.
        again.mark_stopped();
        let stopped = ShardState::restored(&again.to_bytes().unwrap()).unwrap();
        assert!(stopped.steps.resyncing());
    }

    #[test]
    fn momentum_follows_pytorchs_sgd() {
        let opt = ServerSgd {
            lr: 0.1,
            momentum: 0.9,
        };
        let mut s = ShardState::new(vec![1.0], 1, Mode::Sync, opt);
        s.push(0, 0, &[1.0]).unwrap(); // v = 1, p = 0.9
        s.push(0, 1, &[1.0]).unwrap(); // v = 1.9, p = 0.71
        assert!((s.params()[0] - 0.71).abs() < 1e-6, "{:?}", s.params());
    }
}
