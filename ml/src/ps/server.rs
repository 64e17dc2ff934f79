//! A parameter-server shard as an actor around [`ShardState`].

use super::shard::{Mode, ServerSgd, ShardState};

/// One shard of the parameters, in its own worker process.
#[prism::actor]
pub struct PsShard {
    state: ShardState,
}

#[prism::actor]
impl PsShard {
    fn new(init: Vec<f32>, workers: u32, mode: Mode, opt: ServerSgd) -> Self {
        PsShard {
            state: ShardState::new(init, workers as usize, mode, opt),
        }
    }

    /// The weights for step `step`, or `None` while it must wait.
    fn pull(&self, step: u64) -> Option<Vec<f32>> {
        self.state.pull(step).map(<[f32]>::to_vec)
    }

    /// `worker`'s gradient for `step`; the updates applied so far.
    fn push(&mut self, worker: u32, step: u64, grads: Vec<f32>) -> Result<u64, String> {
        self.state.push(worker as usize, step, &grads)?;
        Ok(self.state.updates())
    }

    /// The weights now.
    fn weights(&self) -> Vec<f32> {
        self.state.params().to_vec()
    }

    /// Updates applied so far.
    fn updates(&self) -> u64 {
        self.state.updates()
    }
}
