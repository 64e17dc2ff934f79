//! A sparse shard as an actor around [`SparseState`], with optional
//! checkpoints as the dense shards have: every `every` updates its rows,
//! accumulators and steps go to `<dir>/sparse-<i>.bin`, and a shard
//! restarted after its process died starts from that file (PS-4); on a
//! preemption notice it stops its workers and saves (PS-6).

use super::server::{Pull, ShardCheckpoint, ShardFile};
use super::shard::Mode;
use super::sparse::{Adagrad, SparseState};

/// How a sparse shard starts.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct SparseSpec {
    /// Its index.
    pub index: u32,
    /// Floats per row.
    pub dim: u32,
    /// Workers pushing to it.
    pub workers: u32,
    /// The consistency mode.
    pub mode: Mode,
    /// The optimizer.
    pub opt: Adagrad,
    /// Checkpoints, if any.
    pub checkpoint: Option<ShardCheckpoint>,
}

/// One shard of a sparse table, in its own worker process.
#[prism::actor]
pub struct SparseShard {
    state: SparseState,
    file: Option<ShardFile>,
    stopping: bool,
}

#[prism::actor]
impl SparseShard {
    fn new(spec: SparseSpec) -> Self {
        let (file, restored) = match &spec.checkpoint {
            Some(c) => {
                let (f, s) = ShardFile::open(c, "sparse", spec.index, SparseState::restored);
                (Some(f), s)
            }
            None => (None, None),
        };
        let state = restored.unwrap_or_else(|| {
            SparseState::new(
                spec.dim as usize,
                spec.workers as usize,
                spec.mode,
                spec.opt,
            )
        });
        let file = file.map(|f| f.counting_from(state.updates()));
        SparseShard {
            state,
            file,
            stopping: false,
        }
    }

    /// The rows `ids` for step `step` (`dim` floats each), unless the step
    /// must wait or the run stops.
    fn pull(&mut self, step: u64, ids: Vec<u64>) -> Pull {
        if self.stopping {
            return Pull::Stop;
        }
        self.state.catch_up(step);
        match self.state.pull(step, &ids) {
            Some(rows) => Pull::Ready(rows),
            None => Pull::Wait,
        }
    }

    /// PS-6: every pull from now on answers [`Pull::Stop`].
    fn stop(&mut self) {
        self.stopping = true;
    }

    /// Saves the state now; whether there is a checkpoint file to save to.
    fn save_now(&mut self) -> Result<bool, String> {
        self.state.mark_stopped();
        let state = &self.state;
        ShardFile::save(&mut self.file, state.updates(), true, || state.to_bytes())
    }

    /// `worker`'s row gradients for `step`; the updates applied so far.
    fn push(
        &mut self,
        worker: u32,
        step: u64,
        ids: Vec<u64>,
        grads: Vec<f32>,
    ) -> Result<u64, String> {
        self.state.push(worker as usize, step, &ids, &grads)?;
        let state = &self.state;
        ShardFile::save(&mut self.file, state.updates(), false, || state.to_bytes())?;
        Ok(state.updates())
    }

    /// Steps `worker` has pushed (where a restarted worker resumes).
    fn done(&self, worker: u32) -> u64 {
        self.state.done(worker as usize)
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
