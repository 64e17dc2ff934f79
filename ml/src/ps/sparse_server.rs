//! A sparse shard as an actor around [`SparseState`].

use super::shard::Mode;
use super::sparse::{Adagrad, SparseState};

/// One shard of a sparse table, in its own worker process.
#[prism::actor]
pub struct SparseShard {
    state: SparseState,
}

#[prism::actor]
impl SparseShard {
    fn new(dim: u32, workers: u32, mode: Mode, opt: Adagrad) -> Self {
        SparseShard {
            state: SparseState::new(dim as usize, workers as usize, mode, opt),
        }
    }

    /// The rows `ids` for step `step` (`dim` floats each), or `None` while
    /// the step must wait.
    fn pull(&self, step: u64, ids: Vec<u64>) -> Option<Vec<f32>> {
        self.state.pull(step, &ids)
    }

    /// `worker`'s row gradients for `step`.
    fn push(
        &mut self,
        worker: u32,
        step: u64,
        ids: Vec<u64>,
        grads: Vec<f32>,
    ) -> Result<u64, String> {
        self.state.push(worker as usize, step, &ids, &grads)?;
        Ok(self.state.updates())
    }

    /// Every row held, by id.
    fn rows(&self) -> Vec<(u64, Vec<f32>)> {
        self.state.rows()
    }

    /// Rows named by pushes so far, and updates applied.
    fn counters(&self) -> (u64, u64) {
        (self.state.rows_pushed(), self.state.updates())
    }
}
