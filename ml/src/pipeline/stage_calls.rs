//! What a pipeline's driver waits for from its stages: why an attempt
//! ends early, a batch in flight, and the calls made to every stage at
//! once (the optimizer steps, the checkpoints).

use super::{Act, PipeStage};
use crate::MlError;
use prism::{ActorHandle, ObjectRef};

/// Why an attempt ended early.
pub(super) enum Attempt {
    /// A stage (its process or node) was lost: start again.
    Lost(MlError),
    /// Anything else: give up.
    Fatal(MlError),
}

impl From<MlError> for Attempt {
    fn from(e: MlError) -> Attempt {
        match e {
            MlError::Prism(_) => Attempt::Lost(e),
            other => Attempt::Fatal(other),
        }
    }
}

impl From<prism::Error> for Attempt {
    fn from(e: prism::Error) -> Attempt {
        Attempt::Lost(e.into())
    }
}

/// A replica's batch in flight.
pub(super) struct Pending {
    /// The first stage's input gradients: the end of the backward.
    pub(super) ends: Vec<ObjectRef<Act>>,
    /// Linked stages: every pass (their tensors went through channels).
    pub(super) passes: Vec<ObjectRef<()>>,
    /// Each micro-batch's loss.
    pub(super) losses: Vec<ObjectRef<f64>>,
}

impl Pending {
    /// Waits for the batch; its mean loss.
    pub(super) fn finish(self) -> std::result::Result<f64, Attempt> {
        super::links::wait_all(&self.passes, &self.losses)?;
        for g in &self.ends {
            g.get()?;
        }
        let mut sum = 0.0;
        for l in &self.losses {
            sum += l.get()?;
        }
        Ok(sum / self.losses.len().max(1) as f64)
    }
}

/// A stage's step: the most micro-batches and bytes of activations it
/// held during the batch, and the microseconds it computed.
pub(super) type StepPeaks = Result<(u64, u64, u64), String>;

/// Every stage's optimizer step, all submitted at once.
pub(super) fn submit_steps(
    stages: &[ActorHandle<PipeStage>],
) -> std::result::Result<Vec<ObjectRef<StepPeaks>>, Attempt> {
    Ok(stages
        .iter()
        .map(|s| s.step())
        .collect::<prism::Result<Vec<_>>>()?)
}

/// Every stage of replica 0 saves `step` (the replicas hold the same
/// weights).
pub(super) fn save_all(
    stages: &[ActorHandle<PipeStage>],
    step: u64,
) -> std::result::Result<(), Attempt> {
    let saves = stages
        .iter()
        .map(|s| s.save(step))
        .collect::<prism::Result<Vec<_>>>()?;
    for r in saves {
        r.get()?.map_err(|e| Attempt::Fatal(MlError::Train(e)))?;
    }
    Ok(())
}
