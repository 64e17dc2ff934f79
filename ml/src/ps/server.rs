//! A parameter-server shard as an actor around [`ShardState`], with
//! optional checkpoints: every `every` updates its state is written to
//! `<dir>/shard-<i>.bin` (a temporary file, then renamed), and a shard
//! restarted after its process died starts from that file (PS-4). On a
//! preemption notice the driver stops the workers between steps through
//! the shards ([`Pull::Stop`]) and has every shard save now (PS-6).

use super::shard::{Mode, ServerSgd, ShardState};
use std::path::{Path, PathBuf};

/// Where and how often a shard checkpoints.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct ShardCheckpoint {
    /// The directory.
    pub dir: String,
    /// Every this many updates.
    pub every: u64,
}

/// How a shard starts.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct ShardSpec {
    /// Its index.
    pub index: u32,
    /// Its slice of the initial weights.
    pub init: Vec<f32>,
    /// Workers pushing to it.
    pub workers: u32,
    /// The consistency mode.
    pub mode: Mode,
    /// The optimizer.
    pub opt: ServerSgd,
    /// Checkpoints, if any.
    pub checkpoint: Option<ShardCheckpoint>,
}

/// A pull's answer.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub enum Pull {
    /// The shard's weights for the step.
    Ready(Vec<f32>),
    /// The step may not start yet (bounded staleness): ask again.
    Wait,
    /// The run is stopping (a preemption notice): end before this step.
    Stop,
}

/// One shard of the parameters, in its own worker process.
#[prism::actor]
pub struct PsShard {
    state: ShardState,
    file: Option<(PathBuf, u64)>,
    saved: u64,
    stopping: bool,
}

impl PsShard {
    fn save(&mut self) -> Result<(), String> {
        let Some((_, every)) = &self.file else {
            return Ok(());
        };
        if self.state.updates() < self.saved + every {
            return Ok(());
        }
        self.write()
    }

    fn write(&mut self) -> Result<(), String> {
        let Some((path, _)) = &self.file else {
            return Ok(());
        };
        self.saved = self.state.updates();
        // Sealed when the cluster encrypts at rest (`prism::at_rest`).
        let tmp = path.with_extension("tmp");
        prism::at_rest::write_file(&tmp, &self.state.to_bytes()?).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| format!("checkpoint {}: {e}", path.display()))
    }
}

/// Shard `index`'s state from its checkpoint `path`, if it has one. One
/// that does not open (another cluster's key, changed, damaged) is set
/// aside, never overwritten.
fn restore(index: u32, path: &Path) -> Option<ShardState> {
    if !path.exists() {
        return None;
    }
    let state = prism::at_rest::read_file(path)
        .map_err(|e| e.to_string())
        .and_then(|b| ShardState::restored(&b));
    match state {
        Ok(s) => Some(s),
        Err(e) => {
            let aside = path.with_extension("unreadable");
            let _ = std::fs::rename(path, &aside);
            eprintln!(
                "shard {index}: cannot restore from {}: {e}; moved to {} and starting afresh",
                path.display(),
                aside.display()
            );
            None
        }
    }
}

#[prism::actor]
impl PsShard {
    fn new(spec: ShardSpec) -> Self {
        let file = spec.checkpoint.as_ref().map(|c| {
            let dir = PathBuf::from(&c.dir);
            let _ = std::fs::create_dir_all(&dir);
            // Operators (and tests) find each shard's process here.
            let _ = std::fs::write(
                dir.join(format!("shard-{}.pid", spec.index)),
                std::process::id().to_string(),
            );
            (dir.join(format!("shard-{}.bin", spec.index)), c.every)
        });
        let restored = file.as_ref().and_then(|(p, _)| restore(spec.index, p));
        if restored.is_some() {
            println!("shard {} restored from its checkpoint", spec.index);
        }
        let state = restored.unwrap_or_else(|| {
            ShardState::new(spec.init, spec.workers as usize, spec.mode, spec.opt)
        });
        let saved = state.updates();
        PsShard {
            state,
            file,
            saved,
            stopping: false,
        }
    }

    /// The weights for step `step`, unless it must wait or the run stops.
    fn pull(&mut self, step: u64) -> Pull {
        if self.stopping {
            return Pull::Stop;
        }
        self.state.catch_up(step);
        match self.state.pull(step) {
            Some(w) => Pull::Ready(w.to_vec()),
            None => Pull::Wait,
        }
    }

    /// PS-6: every pull from now on answers [`Pull::Stop`], so workers end
    /// between steps, each having pushed every step it pulled.
    fn stop(&mut self) {
        self.stopping = true;
    }

    /// Saves the state now (whatever `every` says); whether there is a
    /// checkpoint file to save to.
    fn save_now(&mut self) -> Result<bool, String> {
        self.state.mark_stopped();
        self.write()?;
        Ok(self.file.is_some())
    }

    /// `worker`'s gradient for `step`; the updates applied so far.
    fn push(&mut self, worker: u32, step: u64, grads: Vec<f32>) -> Result<u64, String> {
        self.state.push(worker as usize, step, &grads)?;
        self.save()?;
        Ok(self.state.updates())
    }

    /// Steps `worker` has pushed (where a restarted worker resumes).
    fn done(&self, worker: u32) -> u64 {
        self.state.done(worker as usize)
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
