//! The step bookkeeping every parameter-server shard keeps, whatever its
//! parameters (a dense slice of weights, or rows of a sparse table): the
//! consistency mode, the synchronous steps applied and those still
//! gathering pushes, the staleness gate, and what a restore after a crash
//! or a clean stop means. Pure; the shards apply the gradients.
//!
//! - **PS-1** (through [`StalenessGate`]) no worker runs more than `k`
//!   steps ahead of the slowest.
//! - **PS-2** synchronous: step `t` completes once all `w` workers pushed
//!   it, in order; a pull for step `t` waits until every step before it
//!   completed.
//! - **PS-4** restored from a checkpoint after a crash, a synchronous
//!   shard skips the steps whose pushes it lost: the first pull for a later
//!   step moves it on to that step, and it is strict again once a step
//!   completes.
//! - **PS-6** saved at a clean stop, it lost nothing and skips nothing (a
//!   shard still catching up when it stopped still is).

use super::gate::StalenessGate;
use super::shard::Mode;
use std::collections::BTreeMap;

/// A push's consequence for the shard.
#[derive(Debug, PartialEq)]
pub enum Pushed<G> {
    /// Asynchronous or bounded staleness: apply this push's gradient now.
    Apply,
    /// Synchronous: these steps completed, in order; apply each sum (of
    /// `workers` pushes) in turn.
    Complete(Vec<G>),
}

/// One shard's steps; `G` is a step's gradient sum.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct Steps<G> {
    mode: Mode,
    workers: usize,
    /// Synchronous steps completed.
    applied: u64,
    /// Synchronous: step → (pushes so far, their gradients' sum).
    pending: BTreeMap<u64, (usize, G)>,
    gate: StalenessGate,
    /// Restored from a checkpoint and not yet through a full step (PS-4).
    resync: bool,
    /// Saved at a clean stop (PS-6): nothing was lost, nothing to skip.
    stopped: bool,
}

impl<G: Default> Steps<G> {
    /// No step taken by any of `workers` workers.
    pub fn new(workers: usize, mode: Mode) -> Steps<G> {
        Steps {
            mode,
            workers: workers.max(1),
            applied: 0,
            pending: BTreeMap::new(),
            gate: StalenessGate::new(workers, mode.bound()),
            resync: false,
            stopped: false,
        }
    }

    /// Workers pushing to the shard.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Whether a worker may compute step `step` now (PS-1, PS-2).
    pub fn ready(&self, step: u64) -> bool {
        match self.mode {
            Mode::Sync => self.applied >= step,
            Mode::Async => true,
            Mode::Stale(_) => self.gate.may_start(step),
        }
    }

    /// `worker`'s push for `step`; `add` adds its gradient to the step's
    /// sum (synchronous only; otherwise the push applies alone).
    pub fn push(&mut self, worker: usize, step: u64, add: impl FnOnce(&mut G)) -> Pushed<G> {
        self.gate.finished(worker, step);
        if self.mode != Mode::Sync {
            return Pushed::Apply;
        }
        let (count, sum) = self.pending.entry(step).or_default();
        add(sum);
        *count += 1;
        let mut complete = Vec::new();
        // Steps complete in order: every complete one in turn.
        while self
            .pending
            .get(&self.applied)
            .is_some_and(|(c, _)| *c >= self.workers)
        {
            let (_, sum) = self.pending.remove(&self.applied).unwrap_or_default();
            complete.push(sum);
            self.applied += 1;
            self.resync = false;
        }
        Pushed::Complete(complete)
    }

    /// PS-4: a pull for a step past the lost ones moves a restored
    /// synchronous shard on to it.
    pub fn catch_up(&mut self, step: u64) {
        if self.resync && self.mode == Mode::Sync && step > self.applied {
            self.pending.retain(|s, _| *s >= step);
            self.applied = step;
        }
    }

    /// Steps `worker` has pushed (where a restarted worker resumes).
    pub fn done(&self, worker: usize) -> u64 {
        self.gate.done(worker)
    }

    /// PS-6: every worker stopped between steps; the state about to be
    /// saved lost nothing.
    pub fn mark_stopped(&mut self) {
        self.stopped = true;
    }

    /// After a restore: a crash may have lost steps (PS-4), a clean stop
    /// did not (PS-6).
    pub fn restored(&mut self) {
        self.resync = self.resync || !self.stopped;
        self.stopped = false;
    }

    /// Whether it is still catching up after a restore (PS-4).
    pub fn resyncing(&self) -> bool {
        self.resync
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(g: f32) -> impl FnOnce(&mut f32) {
        move |s| *s += g
    }

    #[test]
    fn ps_2_sync_steps_complete_in_order_once_every_worker_pushed() {
        let mut s: Steps<f32> = Steps::new(2, Mode::Sync);
        assert!(s.ready(0) && !s.ready(1));
        assert_eq!(s.push(0, 1, add(1.0)), Pushed::Complete(vec![]));
        assert_eq!(
            s.push(1, 1, add(2.0)),
            Pushed::Complete(vec![]),
            "step 0 first"
        );
        assert_eq!(s.push(0, 0, add(4.0)), Pushed::Complete(vec![]));
        assert_eq!(s.push(1, 0, add(8.0)), Pushed::Complete(vec![12.0, 3.0]));
        assert!(s.ready(2));
        let mut a: Steps<f32> = Steps::new(2, Mode::Async);
        assert_eq!(a.push(0, 5, add(1.0)), Pushed::Apply);
        assert_eq!(a.done(0), 6);
    }

    #[test]
    fn ps_4_ps_6_restores_after_a_crash_skip_and_after_a_stop_wait() {
        let mut s: Steps<f32> = Steps::new(2, Mode::Sync);
        s.push(0, 0, add(1.0));
        s.push(1, 0, add(1.0));
        let mut crashed = s.clone();
        crashed.restored();
        assert!(crashed.resyncing() && !crashed.ready(3));
        crashed.catch_up(3);
        assert!(crashed.ready(3), "moved on to the step asked for");
        crashed.push(0, 3, add(1.0));
        crashed.push(1, 3, add(1.0));
        crashed.catch_up(9);
        assert!(!crashed.ready(9), "strict again after a full step");
        let mut stopped = s.clone();
        stopped.mark_stopped();
        stopped.restored();
        stopped.catch_up(3);
        assert!(!stopped.ready(3) && !stopped.resyncing(), "nothing skipped");
    }
}
