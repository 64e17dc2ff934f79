//! Pipeline-parallel training: the MLP recipe's model cut into `p` stages,
//! each a [`PipeStage`] actor holding its layers; each batch split into `m`
//! micro-batches run under a [`Schedule`] — GPipe or 1F1B — with the
//! activations going forward and their gradients backward between
//! neighbouring stages, gradients accumulated over the micro-batches and
//! one optimizer step per batch on every stage. Stages all on one node pass
//! tensors through shared-memory channels (`links`: written once into a
//! slot, read in place by the neighbour); otherwise as actor-call results
//! (small ones inline, larger ones through the object store, pulled over
//! QUIC across nodes).
//!
//! The driver submits every pass of a batch at once: each stage runs its
//! passes in the schedule's order (calls from one handle run in order), and
//! a pass waits only for the activation or gradient it takes (in its
//! channel, or a ref to the neighbouring stage's result).
//!
//! ```no_run
//! use prism_ml::pipeline::{PipelineTrainer, Schedule};
//! use prism_ml::recipes::MlpConfig;
//! # fn main() -> prism_ml::Result<()> {
//! let _c = prism::init()?;
//! let (train, _) = prism_ml::data::digits(128)?.train_test_split(0.2, 7)?;
//! let cfg = MlpConfig { layers: vec![64, 128, 128, 10], epochs: 10, batch_size: 32,
//!                       lr: 0.05, momentum: 0.9, weight_decay: 0.0, seed: 1, cuda: false };
//! let result = PipelineTrainer::new(cfg, 2, 4, Schedule::OneFOneB).dataset(train).fit()?;
//! # Ok(()) }
//! ```
//!
//! The stages sit in one placement group (a bundle each): `Pack` by
//! default, `StrictSpread` for one stage per machine.
//!
//! With `.checkpoint(dir, n).max_failures(k)` every stage saves every `n`
//! steps, and a lost stage (its process or node) makes every stage start
//! again from the newest step they all saved. SIGTERM while `fit` runs (a
//! spot-class job preempted, `prism submit --spot`) makes every stage save
//! the step it is at and `fit` fail with `MlError::Preempted`; the job's
//! next run (`PRISM_PREEMPTED=1`) resumes from that checkpoint.
//!
//! With `.replicas(dp)` the whole pipeline runs `dp` times side by side (a
//! dp × p grid), each replica on its own batch; the `dp` replicas of each
//! stage form a ring (`train::ring_member`, as DDP's workers do) and
//! average their gradients through it before the step: through
//! shared-memory channels between replicas on one node, through the object
//! store (pulled over QUIC) across nodes, every stage's ring at once.
//!
//! `.balance(Balance::Params)` cuts the layers so that the largest stage's
//! parameter count is as small as can be (by default: equal layer counts).
//!
//! Not built yet: user-defined stage models, interleaved 1F1B.

mod act;
mod clock;
mod links;
mod mlp_pass;
pub mod model;
pub mod partition;
mod run;
pub mod schedule;
mod stage;
mod stage_calls;

pub use act::Act;
pub use model::{find_model, load_model, whole_model, StageModelRegistration};
pub use partition::{partition, Balance};
pub use schedule::{peak_alive, stage_ops, Op, Schedule};
pub use stage::{PipeStage, StageSpec};

use crate::data::Dataset;
use crate::recipes::MlpConfig;

/// A pipeline-parallel training run of the MLP recipe's model.
#[derive(Debug, Clone)]
pub struct PipelineTrainer {
    config: MlpConfig,
    stages: u32,
    micro: u32,
    schedule: Schedule,
    data: Option<Dataset>,
    stage_cpus: f64,
    placement: prism::PlacementStrategy,
    checkpoint: Option<(std::path::PathBuf, u64)>,
    max_failures: u32,
    threads: i32,
    replicas: u32,
    balance: Balance,
    model: Option<String>,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct PipelineResult {
    /// The final weights, in `recipes::flat_weights`'s layout.
    pub output: Vec<u8>,
    /// The mean loss of every step.
    pub losses: Vec<f64>,
    /// Per step, per stage: the most micro-batches alive at once.
    pub peak_alive: Vec<Vec<u64>>,
    /// Per step, per stage: the most bytes of activations (and their
    /// gradients awaiting the weights') held at once; 0 for a user
    /// model's stages, whose autograd graph holds what it holds.
    pub peak_bytes: Vec<Vec<u64>>,
    /// Per step, per stage (of the first replica, then the next): the
    /// milliseconds it spent computing (passes, loss, optimizer step),
    /// not waiting for a neighbour, nor passing tensors (CPU time with one
    /// libtorch thread a stage, so not waiting for a core either; wall
    /// time with more). `1 − busy / step` is the share of the step it did not
    /// compute: its bubble and overheads.
    pub busy_ms: Vec<Vec<f64>>,
    /// The node of each stage.
    pub stage_nodes: Vec<String>,
    /// Whether neighbouring stages passed tensors through shared-memory
    /// channels (every replica's stages on one node) rather than as
    /// call results.
    pub channels: bool,
    /// How many links of the replicas' gradient rings (`dp` per stage,
    /// with `dp` ≥ 2) passed their pieces through shared memory rather
    /// than the object store: all of them when the replicas share a node.
    pub ring_channels: usize,
    /// Lost stages recovered from.
    pub failures: u32,
    /// Milliseconds each step took (its batch's passes and the step).
    pub step_ms: Vec<f64>,
    /// Seconds.
    pub seconds: f64,
    /// The run's id on the head (`prism runs show`).
    pub run_id: String,
}

impl PipelineTrainer {
    /// `stages` stages, `micro` micro-batches per batch, under `schedule`.
    pub fn new(config: MlpConfig, stages: u32, micro: u32, schedule: Schedule) -> Self {
        PipelineTrainer {
            config,
            stages: stages.max(1),
            micro: micro.max(1),
            schedule,
            data: None,
            stage_cpus: 1.0,
            placement: prism::PlacementStrategy::Pack,
            checkpoint: None,
            max_failures: 0,
            threads: 0,
            replicas: 1,
            balance: Balance::Layers,
            model: None,
        }
    }

    /// Trains the model registered as `name` with [`crate::pipeline_model!`]
    /// (one builder call per stage) instead of the MLP recipe's; the
    /// config's `layers` are then unused, and stage `s` is seeded with the
    /// config's seed plus `s`. Load the result with [`load_model`]. Its
    /// stages pass tensors as call results (their sizes are the model's
    /// own).
    pub fn model(mut self, name: &str) -> Self {
        self.model = Some(name.to_string());
        self
    }

    /// Data-parallel replicas of the whole pipeline (a dp × p grid): each
    /// step, replica r trains on the r-th of `dp` consecutive batches, and
    /// every stage's gradients are averaged over the replicas before the
    /// step (a ring all-reduce between the stage's replicas), so the
    /// weights equal one process at the `dp`-times batch.
    pub fn replicas(mut self, dp: u32) -> Self {
        self.replicas = dp.max(1);
        self
    }

    /// libtorch threads in each stage's process (default: as many as the
    /// stage holds CPUs, at least one).
    pub fn threads(mut self, n: i32) -> Self {
        self.threads = n;
        self
    }

    /// Every stage saves its weights and optimizer under `dir` every
    /// `every` steps (`<dir>/stage-<s>/checkpoint-<step>/`).
    pub fn checkpoint(mut self, dir: impl Into<std::path::PathBuf>, every: u64) -> Self {
        self.checkpoint = Some((dir.into(), every.max(1)));
        self
    }

    /// How many times a lost stage may make every stage start again from
    /// the last checkpoint they all have (default 0).
    pub fn max_failures(mut self, n: u32) -> Self {
        self.max_failures = n;
        self
    }

    /// How the stages' bundles are placed: `Pack` (default: one machine if
    /// it fits), `StrictSpread` (one stage per machine), …
    pub fn placement(mut self, strategy: prism::PlacementStrategy) -> Self {
        self.placement = strategy;
        self
    }

    /// The training rows.
    pub fn dataset(mut self, ds: Dataset) -> Self {
        self.data = Some(ds);
        self
    }

    /// How the layers are cut into stages: equal counts (the default) or
    /// balanced by parameter count ([`Balance::Params`]).
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// CPUs each stage actor holds (default 1).
    pub fn stage_cpus(mut self, n: f64) -> Self {
        self.stage_cpus = n;
        self
    }
}
