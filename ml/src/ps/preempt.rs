//! A parameter-server run's preemption (PS-6), for dense and sparse runs
//! alike: SIGTERM while the driver waits for its workers is a notice; the
//! shards are told to answer every pull with `Stop` (so each worker ends
//! between steps, having pushed every step it pulled to every shard), the
//! workers are waited for (bounded), every shard saves now, and the run
//! fails with `MlError::Preempted` naming the step every worker reached.

use super::server::PsShard;
use super::sparse_server::SparseShard;
use super::CALL;
use crate::{MlError, Result};
use prism::{ActorHandle, ObjectRef};
use std::time::Duration;

/// What the driver asks of a shard when preempted: the same three calls
/// on a dense and on a sparse shard.
pub(crate) trait Stoppable {
    /// From now on, answer pulls with `Stop`.
    fn stop(&self) -> prism::Result<ObjectRef<()>>;
    /// Save now; whether there is a file to save to.
    fn save_now(&self) -> prism::Result<ObjectRef<std::result::Result<bool, String>>>;
    /// Steps `worker` has pushed.
    fn done(&self, worker: u32) -> prism::Result<ObjectRef<u64>>;
}

macro_rules! stoppable {
    ($shard:ty) => {
        impl Stoppable for ActorHandle<$shard> {
            fn stop(&self) -> prism::Result<ObjectRef<()>> {
                // The actor's own method, on the handle's stub.
                (**self).stop()
            }
            fn save_now(&self) -> prism::Result<ObjectRef<std::result::Result<bool, String>>> {
                (**self).save_now()
            }
            fn done(&self, worker: u32) -> prism::Result<ObjectRef<u64>> {
                (**self).done(worker)
            }
        }
    };
}
stoppable!(PsShard);
stoppable!(SparseShard);

/// The step every one of `workers` workers reached (each pushed every
/// step it pulled, to every shard), as the first shard counts them.
pub(crate) fn reached(shards: &[impl Stoppable], workers: usize) -> Result<u64> {
    let Some(s) = shards.first() else {
        return Ok(0);
    };
    let mut least = u64::MAX;
    for w in 0..workers.max(1) as u32 {
        least = least.min(s.done(w)?.get_timeout(CALL)?);
    }
    Ok(least)
}

/// Waits for every run in `runs`; on a preemption notice, stops them
/// through `shards` (workers get `grace` to end) and returns the
/// `Preempted` error (or why stopping failed).
pub(crate) fn gather<T: prism::Value>(
    runs: &[ObjectRef<T>],
    grace: Duration,
    shards: &[impl Stoppable],
    workers: usize,
) -> Result<()> {
    // SIGTERM while this runs is a preemption notice (train/preempt.rs).
    let _notice = crate::train::preempt::arm();
    let poll = Duration::from_millis(100);
    loop {
        let (_, left) = prism::wait(runs, runs.len(), Some(poll))?;
        if left.is_empty() {
            return Ok(());
        }
        if crate::train::preempt::requested() {
            return Err(preempted(runs, grace, shards, workers));
        }
    }
}

fn preempted<T: prism::Value>(
    runs: &[ObjectRef<T>],
    grace: Duration,
    shards: &[impl Stoppable],
    workers: usize,
) -> MlError {
    let stop = || -> Result<(u64, bool)> {
        for s in shards {
            s.stop()?.get_timeout(CALL)?;
        }
        let (_, left) = prism::wait(runs, runs.len(), Some(grace))?;
        if !left.is_empty() {
            return Err(MlError::Train(format!(
                "{} workers did not stop within {grace:?} of the preemption notice",
                left.len()
            )));
        }
        let mut checkpointed = true;
        for s in shards {
            checkpointed &= s.save_now()?.get_timeout(CALL)?.map_err(MlError::Train)?;
        }
        Ok((reached(shards, workers)?, checkpointed))
    };
    match stop() {
        Ok((step, checkpointed)) => {
            println!("parameter server: preemption notice: stopped at step {step}");
            MlError::Preempted { step, checkpointed }
        }
        Err(e) => e,
    }
}
