//! A parameter-server run's preemption (PS-6), for dense and sparse runs
//! alike: SIGTERM while the driver waits for its workers is a notice; the
//! shards are told to answer every pull with `Stop` (so each worker ends
//! between steps, having pushed every step it pulled to every shard), the
//! workers are waited for (bounded), every shard saves now, and the run
//! fails with `MlError::Preempted` naming the step every worker reached.

use crate::{MlError, Result};
use std::time::Duration;

/// What the driver asks of its shards when preempted.
pub(crate) struct Shards<'a> {
    /// Tell every shard to answer pulls with `Stop`.
    pub stop: &'a dyn Fn() -> Result<()>,
    /// Every shard saves now; whether every one had a file to save to.
    pub save: &'a dyn Fn() -> Result<bool>,
    /// The step every worker reached.
    pub reached: &'a dyn Fn() -> Result<u64>,
}

/// Waits for every run in `runs`; on a preemption notice, stops them
/// through `shards` (workers get `grace` to end) and returns the
/// `Preempted` error (or why stopping failed).
pub(crate) fn gather<T: prism::Value>(
    runs: &[prism::ObjectRef<T>],
    grace: Duration,
    shards: Shards,
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
            return Err(preempted(runs, grace, &shards));
        }
    }
}

fn preempted<T: prism::Value>(
    runs: &[prism::ObjectRef<T>],
    grace: Duration,
    shards: &Shards,
) -> MlError {
    let stop = || -> Result<(u64, bool)> {
        (shards.stop)()?;
        let (_, left) = prism::wait(runs, runs.len(), Some(grace))?;
        if !left.is_empty() {
            return Err(MlError::Train(format!(
                "{} workers did not stop within {grace:?} of the preemption notice",
                left.len()
            )));
        }
        let checkpointed = (shards.save)()?;
        Ok(((shards.reached)()?, checkpointed))
    };
    match stop() {
        Ok((step, checkpointed)) => {
            println!("parameter server: preemption notice: stopped at step {step}");
            MlError::Preempted { step, checkpointed }
        }
        Err(e) => e,
    }
}
