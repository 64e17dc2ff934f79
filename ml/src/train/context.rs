//! What runs on a worker's compute thread: the user's training loop with
//! its [`TrainContext`] (rank, data shard, gradient all-reduce, metrics,
//! checkpoints), or a bare all-reduce (for tests and benchmarks).

use super::checkpoint;
use super::optim::Sgd;
use super::ring::{Ring, Summable};
use crate::data::Dataset;
use crate::{MlError, Result};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A training loop, registered with [`crate::train_loop!`] so every worker
/// process of the job finds it by name.
#[derive(Debug)]
pub struct TrainLoopRegistration {
    /// The function's name.
    pub name: &'static str,
    /// The function.
    pub f: fn(&mut TrainContext) -> std::result::Result<(), String>,
}

inventory::collect!(TrainLoopRegistration);

/// Registers a training loop `fn(&mut TrainContext) -> Result<(), String>`
/// under its name, for [`super::DdpTrainer::new`].
#[macro_export]
macro_rules! train_loop {
    ($f:ident) => {
        $crate::__private::inventory::submit! {
            $crate::train::TrainLoopRegistration { name: stringify!($f), f: $f }
        }
    };
}

/// The registered loop called `name`.
pub fn find_loop(name: &str) -> Result<&'static TrainLoopRegistration> {
    let all: Vec<&TrainLoopRegistration> = inventory::iter::<TrainLoopRegistration>().collect();
    all.iter().copied().find(|r| r.name == name).ok_or_else(|| {
        let known: Vec<&str> = all.iter().map(|r| r.name).collect();
        MlError::Train(format!(
            "no training loop named {name:?} is registered with prism_ml::train_loop! \
             (registered: {known:?})"
        ))
    })
}

/// A training run for one rank.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct TrainJob {
    /// The registered loop.
    pub loop_name: String,
    /// The user's configuration (opaque bytes, e.g. JSON).
    pub config: Vec<u8>,
    /// This rank's data shard.
    pub shard: Option<Dataset>,
    /// Where checkpoints go ("" for none).
    pub checkpoint_dir: String,
    /// Save every this many steps (0: never).
    pub checkpoint_every: u64,
    /// Start from the newest checkpoint in `checkpoint_dir`.
    pub resume: bool,
    /// All-reduce bucket size.
    pub bucket_bytes: u64,
    /// libtorch intra-op threads (0: leave as is).
    pub threads: i32,
}

/// What a worker runs.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub enum Job {
    /// The user's training loop.
    Train(TrainJob),
    /// One all-reduce of f32s; the result is the reduced buffer.
    AllReduceF32 {
        /// This rank's input.
        data: Vec<f32>,
        /// Divide by the world size.
        average: bool,
        /// Bucket size.
        bucket_bytes: u64,
        /// Repeat this many times (benchmarks); the result is the last.
        repeat: u32,
    },
    /// The same for f64s.
    AllReduceF64 {
        /// This rank's input.
        data: Vec<f64>,
        /// Divide by the world size.
        average: bool,
        /// Bucket size.
        bucket_bytes: u64,
        /// Repeat count.
        repeat: u32,
    },
}

/// One step's metrics as reported by the loop.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct StepMetrics {
    /// The global step (after it ran).
    pub step: u64,
    /// The epoch it belongs to.
    pub epoch: u64,
    /// Named values (loss, accuracy, ...).
    pub values: Vec<(String, f64)>,
    /// Seconds since this worker's loop started, when the step ended (the
    /// difference between two steps is one step's wall time).
    pub seconds: f64,
}

/// A worker's answer to a progress poll.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Default)]
pub struct Progress {
    /// Metrics from the asked index on.
    pub metrics: Vec<StepMetrics>,
    /// `Some` once finished: the output bytes, or the error.
    pub done: Option<std::result::Result<Vec<u8>, String>>,
    /// Seconds the job has run (compute thread).
    pub seconds: f64,
}

/// Shared between the actor and its compute thread.
#[derive(Debug, Default)]
pub struct RunState {
    metrics: Vec<StepMetrics>,
    done: Option<std::result::Result<Vec<u8>, String>>,
    seconds: f64,
    /// The last step done.
    pub(super) step: u64,
    /// Stop (preempted) once this step is done.
    pub(super) stop_after: Option<u64>,
}

impl RunState {
    pub(super) fn progress(&self, since: u64) -> Progress {
        Progress {
            metrics: self.metrics.iter().skip(since as usize).cloned().collect(),
            done: self.done.clone(),
            seconds: self.seconds,
        }
    }
}

fn lock(s: &Mutex<RunState>) -> std::sync::MutexGuard<'_, RunState> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `job` to the end and records the outcome.
pub(super) fn run_job(job: Job, mut ring: Ring, state: Arc<Mutex<RunState>>) {
    let t = std::time::Instant::now();
    let out = match job {
        Job::AllReduceF32 {
            data,
            average,
            repeat,
            ..
        } => reduce(&mut ring, data, average, repeat),
        Job::AllReduceF64 {
            data,
            average,
            repeat,
            ..
        } => reduce(&mut ring, data, average, repeat),
        Job::Train(job) => train(job, ring, state.clone()).map(|o| (t.elapsed().as_secs_f64(), o)),
    };
    let mut g = lock(&state);
    match out {
        Ok((seconds, bytes)) => {
            g.seconds = seconds;
            g.done = Some(Ok(bytes));
        }
        Err(e) => {
            g.seconds = t.elapsed().as_secs_f64();
            g.done = Some(Err(e));
        }
    }
}

/// Seconds spent in the timed all-reduces, and the result.
fn reduce<T: Summable>(
    ring: &mut Ring,
    data: Vec<T>,
    average: bool,
    repeat: u32,
) -> std::result::Result<(f64, Vec<u8>), String> {
    let mut buf = data.clone();
    let mut spent = std::time::Duration::ZERO;
    // Two untimed rounds first: they line up ranks that started apart and
    // touch the store pages a steady state reuses (a chunk is freed one
    // all-reduce later, so two rounds' worth are in use).
    for i in 0..repeat.max(1) + 2 {
        buf.copy_from_slice(&data);
        let t = std::time::Instant::now();
        ring.all_reduce(&mut buf, average)?;
        if i >= 2 {
            spent += t.elapsed();
        }
    }
    Ok((spent.as_secs_f64(), bytemuck::cast_slice(&buf).to_vec()))
}

fn train(
    job: TrainJob,
    ring: Ring,
    state: Arc<Mutex<RunState>>,
) -> std::result::Result<Vec<u8>, String> {
    let reg = find_loop(&job.loop_name).map_err(|e| e.to_string())?;
    if job.threads > 0 {
        tch::set_num_threads(job.threads);
    }
    let mut ctx = TrainContext {
        ring,
        dir: (!job.checkpoint_dir.is_empty()).then(|| PathBuf::from(&job.checkpoint_dir)),
        every: job.checkpoint_every,
        resume: job.resume,
        config: job.config,
        shard: job.shard,
        step: 0,
        epoch: 0,
        state,
        output: Vec::new(),
        started: std::time::Instant::now(),
        #[cfg(feature = "cuda")]
        nccl: None,
    };
    (reg.f)(&mut ctx)?;
    Ok(ctx.output)
}

/// What a training loop sees on each rank.
pub struct TrainContext {
    ring: Ring,
    dir: Option<PathBuf>,
    every: u64,
    resume: bool,
    config: Vec<u8>,
    shard: Option<Dataset>,
    step: u64,
    epoch: u64,
    state: Arc<Mutex<RunState>>,
    output: Vec<u8>,
    started: std::time::Instant,
    #[cfg(feature = "cuda")]
    nccl: Option<super::nccl::NcclGroup>,
}

impl std::fmt::Debug for TrainContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainContext")
            .field("rank", &self.ring.rank())
            .field("step", &self.step)
            .finish()
    }
}

impl TrainContext {
    /// This worker's rank (0..world_size).
    pub fn rank(&self) -> usize {
        self.ring.rank()
    }

    /// How many workers train together.
    pub fn world_size(&self) -> usize {
        self.ring.world()
    }

    /// The configuration passed to [`super::DdpTrainer::config`].
    pub fn config(&self) -> &[u8] {
        &self.config
    }

    /// This rank's shard of the trainer's dataset.
    pub fn shard(&self) -> Result<&Dataset> {
        self.shard
            .as_ref()
            .ok_or_else(|| MlError::Train("the trainer was given no dataset".into()))
    }

    /// Steps done so far (restored from a checkpoint after a restart).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The epoch at the last checkpoint (0 on a fresh start).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Averages every variable's gradient across the ranks, in place.
    /// CPU gradients go through the ring (large contiguous f32 ones where
    /// they lie, the small ones together in one flat buffer); with the
    /// `cuda` feature, CUDA gradients are reduced on the device by NCCL.
    pub fn all_reduce_gradients(&mut self, vs: &tch::nn::VarStore) -> Result<()> {
        let grads: Vec<tch::Tensor> = vs
            .trainable_variables()
            .iter()
            .map(|v| v.grad())
            .filter(|g| g.defined())
            .collect();
        let refs: Vec<&tch::Tensor> = grads.iter().collect();
        self.all_reduce_tensors(&refs, true)
    }

    /// Sums (or averages) tensors across the ranks, in place: CPU tensors
    /// through the ring, CUDA tensors by NCCL (feature `cuda`) or else
    /// through host memory.
    pub fn all_reduce_tensors(&mut self, tensors: &[&tch::Tensor], average: bool) -> Result<()> {
        #[cfg(feature = "cuda")]
        {
            let (gpu, host): (Vec<&tch::Tensor>, Vec<&tch::Tensor>) = tensors
                .iter()
                .partition(|t| matches!(t.device(), tch::Device::Cuda(_)));
            if let Some(first) = gpu.first() {
                let tch::Device::Cuda(ordinal) = first.device() else {
                    unreachable!("partitioned on the device")
                };
                if self.nccl.as_ref().map(|g| g.ordinal()) != Some(ordinal) {
                    let group = super::nccl::NcclGroup::join(&mut self.ring, ordinal)
                        .map_err(MlError::Train)?;
                    self.nccl = Some(group);
                }
                if let Some(g) = &self.nccl {
                    if let Err(e) = g.all_reduce(&gpu, average) {
                        // A failed collective leaves the communicator in an
                        // unknown state: abort it (on drop), rejoin next time.
                        self.nccl = None;
                        return Err(MlError::Train(e));
                    }
                }
            }
            super::grads::host_all_reduce(&mut self.ring, &host, average)
        }
        #[cfg(not(feature = "cuda"))]
        super::grads::host_all_reduce(&mut self.ring, tensors, average)
    }

    /// Sums (or averages) any buffer across the ranks.
    pub fn all_reduce<T: Summable>(&mut self, buf: &mut [T], average: bool) -> Result<()> {
        self.ring.all_reduce(buf, average).map_err(MlError::Train)
    }

    /// Resumes from the newest checkpoint when the trainer restarts (or was
    /// asked to resume): loads the weights and the optimizer's state and
    /// returns the step to continue from (0 on a fresh start).
    pub fn restore(&mut self, vs: &mut tch::nn::VarStore, opt: &mut Sgd) -> Result<u64> {
        let Some(dir) = self.dir.clone().filter(|_| self.resume) else {
            return Ok(0);
        };
        if let Some((step, epoch)) = checkpoint::load_latest(&dir, vs, opt)? {
            self.step = step;
            self.epoch = epoch;
        }
        Ok(self.step)
    }

    /// One step done: records `values` (sent to the driver) and, every
    /// `checkpoint_every` steps, rank 0 saves weights and optimizer state.
    pub fn step_done(
        &mut self,
        epoch: u64,
        values: &[(&str, f64)],
        vs: &tch::nn::VarStore,
        opt: &Sgd,
    ) -> Result<()> {
        self.step += 1;
        self.epoch = epoch;
        let stop = {
            let mut s = lock(&self.state);
            s.metrics.push(StepMetrics {
                step: self.step,
                epoch,
                values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                seconds: self.started.elapsed().as_secs_f64(),
            });
            s.step = self.step;
            s.stop_after.is_some_and(|at| self.step >= at)
        };
        if stop {
            // Every rank stops at this step (they are in lockstep through
            // the ring); rank 0 saves where the next run resumes.
            if let (Some(dir), 0) = (&self.dir, self.rank()) {
                checkpoint::save(dir, self.step, epoch, vs, opt)?;
            }
            return Err(MlError::Preempted {
                step: self.step,
                checkpointed: self.dir.is_some(),
            });
        }
        if let Some(dir) = &self.dir {
            if self.rank() == 0 && self.every > 0 && self.step.is_multiple_of(self.every) {
                checkpoint::save(dir, self.step, epoch, vs, opt)?;
            }
        }
        Ok(())
    }

    /// Saves a checkpoint now (rank 0 only; others return at once).
    pub fn save_checkpoint(&self, vs: &tch::nn::VarStore, opt: &Sgd) -> Result<()> {
        match &self.dir {
            Some(dir) if self.rank() == 0 => checkpoint::save(dir, self.step, self.epoch, vs, opt),
            _ => Ok(()),
        }
    }

    /// Bytes returned to the driver in [`super::TrainResult::output`] (rank 0's).
    pub fn set_output(&mut self, bytes: Vec<u8>) {
        self.output = bytes;
    }
}
