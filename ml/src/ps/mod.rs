//! A parameter server: the model's weights sharded over `s` server actors
//! ([`PsShard`]), `w` worker tasks looping pull → gradients on their shard
//! of the data → push, and the optimizer (SGD with momentum) on the
//! servers. Three modes ([`Mode`]): synchronous (the same arithmetic as one
//! process at the global batch, and as DDP), asynchronous, and bounded
//! staleness (a worker at most `k` steps ahead of the slowest).
//!
//! ```no_run
//! use prism_ml::ps::{Mode, ParameterServer};
//! use prism_ml::recipes::MlpConfig;
//! # fn main() -> prism_ml::Result<()> {
//! let _c = prism::init()?;
//! let (train, _test) = prism_ml::data::digits(128)?.train_test_split(0.2, 7)?;
//! let cfg = MlpConfig { layers: vec![64, 64, 10], epochs: 10, batch_size: 32,
//!                       lr: 0.05, momentum: 0.9, weight_decay: 0.0, seed: 1, cuda: false };
//! let result = ParameterServer::new(cfg, 2, 2, Mode::Stale(2)).dataset(train).fit()?;
//! # Ok(()) }
//! ```
//!
//! Fault tolerance: with [`ParameterServer::checkpoint`] each shard saves
//! its state every `n` updates, and with [`ParameterServer::max_failures`]
//! a shard whose process died restarts from its file (calls in flight are
//! sent again) and a worker task whose process died runs again from the
//! step it had reached. SIGTERM while `fit` runs (a spot-class job
//! preempted) stops every worker between steps, has every shard save its
//! state and fails with `MlError::Preempted`; shards start from their
//! files and workers from the steps they reached in the next run.
//!
//! Sparse tables ([`SparseShard`], Adagrad on the servers) pull and push
//! only the rows a batch touches; [`ctr`] trains click-through-rate
//! logistic regression on them over a generated click log. Sparse shards
//! checkpoint and restart as the dense ones do (their rows, Adagrad
//! accumulators and steps), and CTR workers resume where they stopped.
//!
//! A preemption notice stops a CTR run the same way (PS-6).
//!
//! Not yet: user-defined dense models (the MLP recipe's only).

pub mod ctr;
mod gate;
mod preempt;
mod server;
mod shard;
mod sparse;
mod sparse_server;
mod steps;
mod worker;

pub use gate::StalenessGate;
pub use server::{PsShard, Pull, ShardCheckpoint, ShardSpec};
pub use shard::{Mode, ServerSgd, ShardState};
pub use sparse::{Adagrad, SparseState};
pub use sparse_server::{SparseShard, SparseSpec};

use crate::data::Dataset;
use crate::recipes::{self, MlpConfig};
use crate::{MlError, Result};
use std::time::Instant;
use worker::{ps_worker, WorkerJob};

/// How long one call to a shard may take while stopping.
const CALL: std::time::Duration = std::time::Duration::from_secs(60);

/// A parameter-server training run of the MLP recipe's model.
#[derive(Debug, Clone)]
pub struct ParameterServer {
    config: MlpConfig,
    servers: usize,
    workers: usize,
    mode: Mode,
    data: Option<Dataset>,
    wait_ms: u64,
    checkpoint: Option<ShardCheckpoint>,
    max_failures: u32,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct PsResult {
    /// The final weights, in [`recipes::flat_weights`]'s layout (load them
    /// with [`recipes::load_flat`]).
    pub output: Vec<u8>,
    /// Each worker's loss at every step.
    pub losses: Vec<Vec<f64>>,
    /// Updates the servers applied (summed over servers).
    pub updates: u64,
    /// Seconds the run took.
    pub seconds: f64,
    /// The run's id on the head (`prism runs show`).
    pub run_id: String,
}

/// `n` weights cut into `parts` contiguous ranges, as equal as can be.
pub fn ranges(n: usize, parts: usize) -> Vec<(u64, u64)> {
    let parts = parts.clamp(1, n.max(1));
    (0..parts)
        .map(|i| ((n * i / parts) as u64, (n * (i + 1) / parts) as u64))
        .collect()
}

impl ParameterServer {
    /// `servers` shards and `workers` workers for `config`'s model.
    pub fn new(config: MlpConfig, servers: usize, workers: usize, mode: Mode) -> ParameterServer {
        ParameterServer {
            config,
            servers: servers.max(1),
            workers: workers.max(1),
            mode,
            data: None,
            wait_ms: 300_000,
            checkpoint: None,
            max_failures: 0,
        }
    }

    /// Each shard saves its state to `dir` every `every` updates.
    pub fn checkpoint(mut self, dir: impl Into<std::path::PathBuf>, every: u64) -> Self {
        self.checkpoint = Some(ShardCheckpoint {
            dir: dir.into().display().to_string(),
            every: every.max(1),
        });
        self
    }

    /// How many times a shard may restart (from its checkpoint) and a
    /// worker may run again (from where it stopped). Default 0.
    pub fn max_failures(mut self, n: u32) -> Self {
        self.max_failures = n;
        self
    }

    /// The training rows (split into equal shards, one per worker).
    pub fn dataset(mut self, ds: Dataset) -> Self {
        self.data = Some(ds);
        self
    }

    /// Trains; returns the final weights and every worker's losses. The
    /// run is recorded on the head (params at the start; each worker's
    /// loss per step, `loss.w<i>`, and their mean, at the end).
    pub fn fit(&self) -> Result<PsResult> {
        use crate::train::record;
        let run_id = record::new_run_id("parameter_server");
        let extra = vec![
            ("servers".to_string(), self.servers.to_string()),
            ("workers".into(), self.workers.to_string()),
            ("mode".into(), format!("{:?}", self.mode)),
        ];
        record::begin(
            &run_id,
            "parameter_server",
            record::mlp_params("ParameterServer", &self.config, self.data.as_ref(), extra),
        );
        let result = self.fit_inner().map(|mut r| {
            r.run_id = run_id.clone();
            r
        });
        if let Ok(r) = &result {
            let steps = r.losses.iter().map(Vec::len).max().unwrap_or(0);
            let points: Vec<prism::proto::runs::RunPoint> = (0..steps)
                .map(|i| {
                    let mut values: Vec<(String, f64)> = r
                        .losses
                        .iter()
                        .enumerate()
                        .filter_map(|(w, l)| l.get(i).map(|v| (format!("loss.w{w}"), *v)))
                        .collect();
                    let mean =
                        values.iter().map(|(_, v)| v).sum::<f64>() / values.len().max(1) as f64;
                    values.insert(0, ("loss".into(), mean));
                    prism::proto::runs::RunPoint {
                        step: i as u64 + 1,
                        values,
                        seconds: r.seconds * (i + 1) as f64 / steps as f64,
                    }
                })
                .collect();
            for chunk in points.chunks(256) {
                record::points(&run_id, "parameter_server", chunk.to_vec());
            }
        }
        record::finish(&run_id, "parameter_server", &result);
        result
    }

    /// Every worker's losses, as they finish; on a preemption notice, the
    /// workers stopped between steps and every shard saved (PS-6). (A
    /// shard that restarts while stopping forgets the stop: its workers
    /// then run on past the grace and the run fails without a checkpoint.)
    fn gather(
        &self,
        servers: &[prism::ActorHandle<PsShard>],
        runs: &[prism::ObjectRef<std::result::Result<Vec<f64>, String>>],
    ) -> Result<Vec<Vec<f64>>> {
        let grace = std::time::Duration::from_millis(self.wait_ms.min(60_000));
        preempt::gather(runs, grace, servers, self.workers)?;
        let mut losses = Vec::new();
        for r in runs {
            losses.push(r.get()?.map_err(MlError::Train)?);
        }
        Ok(losses)
    }

    fn fit_inner(&self) -> Result<PsResult> {
        let started = Instant::now();
        let data = self
            .data
            .as_ref()
            .ok_or_else(|| MlError::Train("no dataset: call .dataset(ds) first".into()))?;
        if self.config.cuda {
            return Err(MlError::Train(
                "the parameter server trains on CPUs only so far (cuda: false)".into(),
            ));
        }
        let (vs, _) = recipes::build(&self.config);
        let init: Vec<f32> = recipes::flat_weights(&vs)?
            .chunks_exact(4)
            .map(bytemuck::pod_read_unaligned::<f32>)
            .collect();
        let ranges = ranges(init.len(), self.servers);
        let opt = ServerSgd {
            lr: self.config.lr as f32,
            momentum: self.config.momentum as f32,
        };
        let servers = ranges
            .iter()
            .enumerate()
            .map(|(i, (a, b))| {
                PsShard::options()
                    .num_cpus(0.0)
                    .max_restarts(self.max_failures)
                    .max_task_retries(self.max_failures)
                    .spawn(ShardSpec {
                        index: i as u32,
                        init: init[*a as usize..*b as usize].to_vec(),
                        workers: self.workers as u32,
                        mode: self.mode,
                        opt,
                        checkpoint: self.checkpoint.clone(),
                    })
            })
            .collect::<prism::Result<Vec<_>>>()?;
        let shards = data.split(self.workers)?;
        let runs = shards
            .into_iter()
            .enumerate()
            .map(|(rank, shard)| {
                ps_worker::options()
                    .name("ps_worker")
                    .max_retries(self.max_failures)
                    .remote(WorkerJob {
                        rank: rank as u32,
                        config: self.config.to_bytes(),
                        shard,
                        servers: servers.clone(),
                        ranges: ranges.clone(),
                        wait_ms: self.wait_ms,
                    })
            })
            .collect::<prism::Result<Vec<_>>>()?;
        let losses = self.gather(&servers, &runs).inspect_err(|_| {
            for s in &servers {
                let _ = prism::kill(s, true);
            }
        })?;
        let mut weights: Vec<f32> = Vec::with_capacity(init.len());
        let mut updates = 0;
        for s in &servers {
            weights.extend(s.weights()?.get()?);
            updates += s.updates()?.get()?;
        }
        for s in &servers {
            let _ = prism::kill(s, true);
        }
        Ok(PsResult {
            output: bytemuck::cast_slice(&weights).to_vec(),
            losses,
            updates,
            seconds: started.elapsed().as_secs_f64(),
            run_id: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_weight_once() {
        assert_eq!(ranges(10, 3), vec![(0, 3), (3, 6), (6, 10)]);
        assert_eq!(ranges(2, 5), vec![(0, 1), (1, 2)]);
        assert_eq!(ranges(7, 1), vec![(0, 7)]);
    }
}
