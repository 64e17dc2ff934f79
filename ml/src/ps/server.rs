//! A parameter-server shard as an actor around [`ShardState`], with
//! optional checkpoints: every `every` updates its state is written to
//! `<dir>/shard-<i>.bin` (a temporary file, then renamed), and a shard
//! restarted after its process died starts from that file (PS-4). On a
//! preemption notice the driver stops the workers between steps through
//! the shards ([`Pull::Stop`]) and has every shard save now (PS-6).

use super::shard::{Mode, ServerSgd, ShardState};
use std::path::PathBuf;

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
    file: Option<ShardFile>,
    stopping: bool,
}

/// A shard's checkpoint: `<dir>/<stem>-<index>.bin`, written every
/// `every` updates (a temporary file, then renamed; sealed where the
/// cluster or the job's namespace encrypts at rest), and the shard
/// process's pid beside it in `<stem>-<index>.pid` (for operators and
/// tests).
#[derive(Debug)]
pub(super) struct ShardFile {
    path: PathBuf,
    every: u64,
    saved: u64,
}

/// `shard` or `sparse shard`, for messages.
fn label(stem: &str) -> String {
    match stem {
        "shard" => "shard".into(),
        other => format!("{other} shard"),
    }
}

impl ShardFile {
    /// Shard `index`'s file under `c`, and its state restored from it if
    /// it has one: one that does not open (another cluster's key, changed,
    /// damaged) is set aside, never overwritten.
    pub(super) fn open<T>(
        c: &ShardCheckpoint,
        stem: &str,
        index: u32,
        restore: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> (ShardFile, Option<T>) {
        let dir = PathBuf::from(&c.dir);
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(
            dir.join(format!("{stem}-{index}.pid")),
            std::process::id().to_string(),
        );
        let path = dir.join(format!("{stem}-{index}.bin"));
        let state = path.exists().then(|| {
            prism::at_rest::read_file(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| restore(&b))
        });
        let state = match state {
            None => None,
            Some(Ok(s)) => {
                println!("{} {index} restored from its checkpoint", label(stem));
                Some(s)
            }
            Some(Err(e)) => {
                let aside = path.with_extension("unreadable");
                let _ = std::fs::rename(&path, &aside);
                eprintln!(
                    "{} {index}: cannot restore from {}: {e}; moved to {} and starting afresh",
                    label(stem),
                    path.display(),
                    aside.display()
                );
                None
            }
        };
        let file = ShardFile {
            path,
            every: c.every.max(1),
            saved: 0,
        };
        (file, state)
    }

    /// Starts counting from `updates` (a restored state's).
    pub(super) fn counting_from(mut self, updates: u64) -> ShardFile {
        self.saved = updates;
        self
    }

    /// Saves the state at `updates` (`bytes` makes it) to `file`, if the
    /// shard has one, when `every` updates passed since the last save, or
    /// `now`; whether there is a file.
    pub(super) fn save(
        file: &mut Option<ShardFile>,
        updates: u64,
        now: bool,
        bytes: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<bool, String> {
        match file {
            Some(f) if now || updates >= f.saved + f.every => f.write(updates, &bytes()?)?,
            Some(_) => {}
            None => return Ok(false),
        }
        Ok(true)
    }

    /// Writes `bytes` as the state at `updates`.
    fn write(&mut self, updates: u64, bytes: &[u8]) -> Result<(), String> {
        self.saved = updates;
        let tmp = self.path.with_extension("tmp");
        prism::at_rest::write_file(&tmp, bytes).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &self.path)
            .map_err(|e| format!("checkpoint {}: {e}", self.path.display()))
    }
}

impl PsShard {
    fn save(&mut self, now: bool) -> Result<bool, String> {
        let state = &self.state;
        ShardFile::save(&mut self.file, state.updates(), now, || state.to_bytes())
    }
}

#[prism::actor]
impl PsShard {
    fn new(spec: ShardSpec) -> Self {
        let (file, restored) = match &spec.checkpoint {
            Some(c) => {
                let (f, s) = ShardFile::open(c, "shard", spec.index, ShardState::restored);
                (Some(f), s)
            }
            None => (None, None),
        };
        let state = restored.unwrap_or_else(|| {
            ShardState::new(spec.init, spec.workers as usize, spec.mode, spec.opt)
        });
        let file = file.map(|f| f.counting_from(state.updates()));
        PsShard {
            state,
            file,
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
        self.save(true)
    }

    /// `worker`'s gradient for `step`; the updates applied so far.
    fn push(&mut self, worker: u32, step: u64, grads: Vec<f32>) -> Result<u64, String> {
        self.state.push(worker as usize, step, &grads)?;
        self.save(false)?;
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
