//! Data-parallel training (DDP) on Prism actors.
//!
//! [`DdpTrainer::fit`] reserves one bundle per worker in a placement group
//! (PACK by default), starts one [`worker::TrainWorker`] actor per rank in
//! its bundle, wires them into a ring, and runs the registered training
//! loop on every rank. Each loop builds its model from the same seed, so
//! the replicas start identical; [`TrainContext::all_reduce_gradients`]
//! averages gradients with a ring all-reduce every step (shared-memory
//! channels between ranks on one machine, the object store and QUIC
//! between machines, NCCL for CUDA tensors with the `cuda` feature), so
//! they stay identical. Rank 0's metrics stream to the driver (with
//! a progress bar) and rank 0 checkpoints every k steps. When a worker dies,
//! the group is torn down and started again from the newest checkpoint, up
//! to `max_failures` times.
//!
//! ```no_run
//! use prism_ml::train::{DdpTrainer, ScalingConfig, Sgd, TrainContext};
//! fn my_loop(ctx: &mut TrainContext) -> Result<(), String> {
//!     tch::manual_seed(0);
//!     let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
//!     let net = tch::nn::linear(vs.root(), 64, 10, Default::default());
//!     let mut opt = Sgd::new(0.1, 0.9, 0.0);
//!     let start = ctx.restore(&mut vs, &mut opt).map_err(|e| e.to_string())?;
//!     // ... iterate ctx.shard() from `start`, backward, then
//!     // ctx.all_reduce_gradients(&vs), opt.step(&vs), ctx.step_done(..)
//!     # let _ = (net, start);
//!     Ok(())
//! }
//! prism_ml::train_loop!(my_loop);
//! # fn main() -> prism_ml::Result<()> {
//! let _c = prism::init()?;
//! let result = DdpTrainer::new("my_loop", ScalingConfig::new(2))?.fit()?;
//! # let _ = result; Ok(()) }
//! ```

pub mod checkpoint;
pub mod collective;
mod context;
pub(crate) mod grads;
#[cfg(feature = "cuda")]
pub mod nccl;
mod optim;
pub mod preempt;
pub(crate) mod record;
pub mod ring;
mod ring_links;
pub mod ring_member;
pub mod worker;

pub use context::{
    find_loop, Job, Progress, StepMetrics, TrainContext, TrainJob, TrainLoopRegistration,
};
pub use optim::Sgd;
pub use worker::TrainWorker;

use crate::data::Dataset;
use crate::{MlError, Result};
use prism::{ActorHandle, Bundle, PlacementGroup, PlacementStrategy};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How many workers and what each one holds.
#[derive(Debug, Clone)]
pub struct ScalingConfig {
    /// Ranks.
    pub num_workers: usize,
    /// CPUs reserved per worker.
    pub cpus_per_worker: f64,
    /// GPUs reserved per worker.
    pub gpus_per_worker: f64,
    /// How the workers' bundles are laid out (PACK by default).
    pub strategy: PlacementStrategy,
}

impl ScalingConfig {
    /// `n` workers of one CPU each, packed.
    pub fn new(n: usize) -> ScalingConfig {
        ScalingConfig {
            num_workers: n,
            cpus_per_worker: 1.0,
            gpus_per_worker: 0.0,
            strategy: PlacementStrategy::Pack,
        }
    }
}

/// What [`DdpTrainer::fit`] returns.
#[derive(Debug, Clone)]
pub struct TrainResult {
    /// Rank 0's metrics, every step (after a restart, from the resumed step).
    pub metrics: Vec<StepMetrics>,
    /// Worker failures recovered from.
    pub failures: u32,
    /// The newest checkpoint, if any were saved.
    pub checkpoint: Option<PathBuf>,
    /// What rank 0's loop passed to [`TrainContext::set_output`].
    pub output: Vec<u8>,
    /// Seconds rank 0's loop ran (the last attempt).
    pub seconds: f64,
    /// The run's id on the head (`prism runs show`, `prism models register --run`).
    pub run_id: String,
}

/// A data-parallel trainer.
#[derive(Debug, Clone)]
pub struct DdpTrainer {
    scaling: ScalingConfig,
    loop_name: String,
    config: Vec<u8>,
    dataset: Option<Dataset>,
    checkpoint_dir: Option<PathBuf>,
    checkpoint_every: u64,
    resume: bool,
    max_failures: u32,
    bucket_bytes: u64,
    threads: i32,
    progress: bool,
    total_steps: Option<u64>,
    expect: Option<crate::data::Expectations>,
}

impl DdpTrainer {
    /// A trainer running the loop registered as `loop_name`.
    pub fn new(loop_name: &str, scaling: ScalingConfig) -> Result<DdpTrainer> {
        find_loop(loop_name)?;
        if scaling.num_workers == 0 {
            return Err(MlError::Train("num_workers must be at least 1".into()));
        }
        Ok(DdpTrainer {
            scaling,
            loop_name: loop_name.to_string(),
            config: Vec::new(),
            dataset: None,
            checkpoint_dir: None,
            checkpoint_every: 0,
            resume: false,
            max_failures: 0,
            bucket_bytes: 25 << 20,
            threads: 1,
            progress: false,
            total_steps: None,
            expect: None,
        })
    }

    /// Opaque configuration for the loop ([`TrainContext::config`]).
    pub fn config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.config = bytes.into();
        self
    }

    /// The data set, split into one equal shard per worker.
    pub fn dataset(mut self, ds: Dataset) -> Self {
        self.dataset = Some(ds);
        self
    }

    /// Rank 0 saves a checkpoint into `dir` every `every` steps.
    pub fn checkpoint(mut self, dir: impl Into<PathBuf>, every: u64) -> Self {
        self.checkpoint_dir = Some(dir.into());
        self.checkpoint_every = every;
        self
    }

    /// Start from the newest checkpoint in the directory, if any.
    pub fn resume(mut self, yes: bool) -> Self {
        self.resume = yes;
        self
    }

    /// Restart the group from the last checkpoint after up to `n` worker deaths.
    pub fn max_failures(mut self, n: u32) -> Self {
        self.max_failures = n;
        self
    }

    /// All-reduce bucket size in bytes (default 25 MiB, like PyTorch DDP).
    pub fn bucket_bytes(mut self, n: u64) -> Self {
        self.bucket_bytes = n.max(1024);
        self
    }

    /// libtorch threads per worker (default 1; 0 leaves libtorch's default).
    pub fn threads(mut self, n: i32) -> Self {
        self.threads = n;
        self
    }

    /// Check the data set against `exp` before any worker starts: a
    /// violation fails `fit` (and the recorded run) with the report.
    pub fn expect(mut self, exp: crate::data::Expectations) -> Self {
        self.expect = Some(exp);
        self
    }

    /// Show a progress bar on stderr; `total_steps` sizes it.
    pub fn progress(mut self, total_steps: Option<u64>) -> Self {
        self.progress = true;
        self.total_steps = total_steps;
        self
    }

    /// Trains to the end; see the module docs.
    pub fn fit(&self) -> Result<TrainResult> {
        // SIGTERM while this runs is a preemption notice (train/preempt.rs).
        let _notice = preempt::arm();
        let bar = self.progress.then(|| progress_bar(self.total_steps));
        // Every step's metrics go to the head for the dashboard's training
        // page, under one id for the whole run (restarts included).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let run_id = format!("{}-{:08x}", self.loop_name, nanos as u32);
        let params = record::trainer_params(
            &self.loop_name,
            &self.scaling,
            &self.config,
            self.dataset.as_ref(),
            self.checkpoint_every,
            self.max_failures,
        );
        record::begin(&run_id, &self.loop_name, params);
        let checked = match (&self.expect, &self.dataset) {
            (Some(exp), Some(ds)) => ds.expect(exp),
            _ => Ok(()),
        };
        let result = checked.and_then(|()| self.attempts(&run_id, bar.as_ref()));
        record::finish(&run_id, &self.loop_name, &result);
        result
    }

    fn attempts(&self, run_id: &str, bar: Option<&indicatif::ProgressBar>) -> Result<TrainResult> {
        let mut failures = 0;
        loop {
            // A preempted job's next run resumes from its checkpoint.
            let resume = self.resume || failures > 0 || preempt::resumed();
            match self.attempt(resume, bar, run_id) {
                Ok(mut r) => {
                    r.failures = failures;
                    if let Some(b) = bar {
                        b.finish();
                    }
                    return Ok(r);
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::WorkerLost(why)) => {
                    failures += 1;
                    if let Some(b) = bar {
                        b.println(format!("worker lost ({why}); restart {failures}"));
                    }
                    tracing::warn!(failures, "training worker lost: {why}");
                    if failures > self.max_failures {
                        return Err(MlError::Train(format!(
                            "gave up after {failures} worker failures (max_failures = {}): {why}",
                            self.max_failures
                        )));
                    }
                }
            }
        }
    }

    fn attempt(
        &self,
        resume: bool,
        bar: Option<&indicatif::ProgressBar>,
        run_id: &str,
    ) -> std::result::Result<TrainResult, Attempt> {
        let n = self.scaling.num_workers;
        let bundle = Bundle::new()
            .cpus(self.scaling.cpus_per_worker)
            .gpus(self.scaling.gpus_per_worker);
        let pg = PlacementGroup::create(vec![bundle; n], self.scaling.strategy).map_err(fatal)?;
        let mut group = Group {
            pg,
            workers: Vec::new(),
        };
        group.pg.ready(Duration::from_secs(120)).map_err(fatal)?;
        for rank in 0..n {
            let w = TrainWorker::options()
                .num_cpus(self.scaling.cpus_per_worker)
                .num_gpus(self.scaling.gpus_per_worker)
                .max_concurrency(64)
                .placement_group(&group.pg, rank as u32)
                .spawn(rank as u32, n as u32)
                .map_err(fatal)?;
            group.workers.push(w);
        }
        worker::connect_ring(&group.workers, true).map_err(lost)?;
        let shards = match &self.dataset {
            Some(ds) => ds
                .split(n)
                .map_err(Attempt::Fatal)?
                .into_iter()
                .map(Some)
                .collect(),
            None => vec![None; n],
        };
        for (w, shard) in group.workers.iter().zip(shards) {
            let job = Job::Train(TrainJob {
                loop_name: self.loop_name.clone(),
                config: self.config.clone(),
                shard,
                checkpoint_dir: self
                    .checkpoint_dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                checkpoint_every: self.checkpoint_every,
                resume,
                bucket_bytes: self.bucket_bytes,
                threads: self.threads,
            });
            if !w.start(job).map_err(lost)?.get().map_err(lost)? {
                return Err(Attempt::Fatal(MlError::Train(
                    "a worker could not start".into(),
                )));
            }
        }
        let run = (run_id, self.loop_name.as_str());
        let (metrics, output, seconds) = watch(&group.workers, bar, run)?;
        Ok(TrainResult {
            metrics,
            failures: 0,
            checkpoint: self
                .checkpoint_dir
                .as_ref()
                .and_then(|d| checkpoint::list(d).pop().map(|(_, p)| p)),
            output,
            seconds,
            run_id: run_id.to_string(),
        })
    }
}

/// A running group: removed (workers killed) when dropped.
struct Group {
    pg: PlacementGroup,
    workers: Vec<ActorHandle<TrainWorker>>,
}

impl Drop for Group {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = prism::kill(w, true);
        }
        let _ = self.pg.remove();
    }
}

enum Attempt {
    Fatal(MlError),
    WorkerLost(String),
}

fn fatal(e: prism::Error) -> Attempt {
    Attempt::Fatal(e.into())
}

fn lost(e: prism::Error) -> Attempt {
    Attempt::WorkerLost(e.to_string())
}

fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// A preemption notice came: every rank stops two steps past the furthest
/// one (they move in lockstep through the ring, so all reach it).
fn stop_everyone(workers: &[ActorHandle<TrainWorker>]) -> std::result::Result<u64, Attempt> {
    let steps: Vec<_> = workers
        .iter()
        .map(|w| w.current_step())
        .collect::<prism::Result<_>>()
        .map_err(lost)?;
    let at = prism::get_all(&steps)
        .map_err(lost)?
        .into_iter()
        .max()
        .unwrap_or(0)
        // Steps take milliseconds: a margin so that every rank has the
        // notice before it reaches the step (ranks move in lockstep).
        + 8;
    tracing::warn!(
        step = at,
        "preemption notice: every rank stops at step {at} after a checkpoint"
    );
    let asked: Vec<_> = workers
        .iter()
        .map(|w| w.stop_after(at))
        .collect::<prism::Result<_>>()
        .map_err(lost)?;
    prism::get_all(&asked).map_err(lost)?;
    Ok(at)
}

/// Polls every worker until all finish; rank 0's metrics drive the bar.
#[allow(clippy::type_complexity)]
fn watch(
    workers: &[ActorHandle<TrainWorker>],
    bar: Option<&indicatif::ProgressBar>,
    (run_id, name): (&str, &str),
) -> std::result::Result<(Vec<StepMetrics>, Vec<u8>, f64), Attempt> {
    let mut metrics: Vec<StepMetrics> = Vec::new();
    let mut finished = vec![false; workers.len()];
    let mut output = Vec::new();
    let mut seconds = 0.0;
    let mut last_poll = Instant::now();
    let mut stop_at: Option<u64> = None;
    loop {
        if stop_at.is_none() && preempt::requested() {
            stop_at = Some(stop_everyone(workers)?);
        }
        for (rank, w) in workers.iter().enumerate() {
            if finished[rank] {
                continue;
            }
            let since = if rank == 0 {
                metrics.len() as u64
            } else {
                u64::MAX
            };
            let p = w.poll(since).map_err(lost)?.get().map_err(lost)?;
            if rank == 0 {
                if let (Some(b), Some(m)) = (bar, p.metrics.last()) {
                    b.set_position(m.step);
                    let vals: Vec<String> = m
                        .values
                        .iter()
                        .map(|(k, v)| format!("{k} {v:.4}"))
                        .collect();
                    b.set_message(format!("epoch {} {}", m.epoch, vals.join(" ")));
                }
                let points: Vec<prism::proto::runs::RunPoint> = p
                    .metrics
                    .iter()
                    .map(|m| prism::proto::runs::RunPoint {
                        step: m.step,
                        values: m.values.clone(),
                        seconds: m.seconds,
                    })
                    .collect();
                record::points(run_id, name, points);
                metrics.extend(p.metrics);
            }
            match p.done {
                None => {}
                Some(Ok(bytes)) => {
                    finished[rank] = true;
                    if rank == 0 {
                        output = bytes;
                        seconds = p.seconds;
                    }
                }
                Some(Err(e)) if e.contains("no chunk") => return Err(Attempt::WorkerLost(e)),
                Some(Err(e)) if stop_at.is_some() && e.starts_with("preempted") => {
                    // The step the rank stopped (and saved) at: past the one
                    // asked for when the notice reached it late.
                    let stopped = e
                        .strip_prefix("preempted: training stopped at step ")
                        .and_then(|r| r.split(' ').next()?.parse().ok());
                    return Err(Attempt::Fatal(MlError::Preempted {
                        step: stopped.or(stop_at).unwrap_or(0),
                        checkpointed: e.contains("after saving"),
                    }));
                }
                Some(Err(e)) => {
                    return Err(Attempt::Fatal(MlError::Train(format!("rank {rank}: {e}"))))
                }
            }
        }
        if finished.iter().all(|f| *f) {
            return Ok((metrics, output, seconds));
        }
        let spent = last_poll.elapsed();
        std::thread::sleep(Duration::from_millis(50).saturating_sub(spent));
        last_poll = Instant::now();
    }
}
