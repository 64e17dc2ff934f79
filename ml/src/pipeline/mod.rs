//! Pipeline-parallel training: the MLP recipe's model cut into `p` stages,
//! each a [`PipeStage`] actor holding its layers; each batch split into `m`
//! micro-batches run under a [`Schedule`] — GPipe or 1F1B — with the
//! activations going forward and their gradients backward as actor-call
//! results (small ones inline, larger ones through the object store, read
//! where they land), gradients accumulated over the micro-batches and one
//! optimizer step per batch on every stage.
//!
//! The driver submits every pass of a batch at once: each stage runs its
//! passes in the schedule's order (calls from one handle run in order), and
//! a pass waits only for the activation or gradient it takes (a ref to the
//! neighbouring stage's result).
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
//! Not built yet: data parallelism across pipeline replicas, checkpoints
//! and restart of a dead stage, user-defined stage models, interleaved 1F1B.

pub mod schedule;
mod stage;

pub use schedule::{peak_alive, stage_ops, Op, Schedule};
pub use stage::{Act, PipeStage, StageSpec};

use crate::data::Dataset;
use crate::recipes::MlpConfig;
use crate::{MlError, Result};
use prism::{ActorHandle, ObjectRef};
use std::time::Instant;

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
    /// The node of each stage.
    pub stage_nodes: Vec<String>,
    /// Seconds.
    pub seconds: f64,
}

/// `layers` linear layers cut into `p` contiguous runs, as equal as can be.
pub fn partition(layers: usize, p: usize) -> Vec<(u32, u32)> {
    crate::ps::ranges(layers, p)
        .into_iter()
        .map(|(a, b)| (a as u32, b as u32))
        .collect()
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
        }
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

    /// CPUs each stage actor holds (default 1).
    pub fn stage_cpus(mut self, n: f64) -> Self {
        self.stage_cpus = n;
        self
    }

    /// Trains.
    pub fn fit(&self) -> Result<PipelineResult> {
        let started = Instant::now();
        let data = self
            .data
            .as_ref()
            .ok_or_else(|| MlError::Train("no dataset: call .dataset(ds) first".into()))?;
        let b = self.config.batch_size;
        if !b.is_multiple_of(self.micro as usize) {
            return Err(MlError::Train(format!(
                "a batch of {b} does not split into {} equal micro-batches",
                self.micro
            )));
        }
        let linear = self.config.layers.len().saturating_sub(1);
        if (self.stages as usize) > linear {
            return Err(MlError::Train(format!(
                "{} stages for a model of {linear} layers",
                self.stages
            )));
        }
        // One bundle per stage, all or none, placed by the strategy.
        let bundle = prism::Bundle::new().cpus(self.stage_cpus);
        let pg = prism::PlacementGroup::create(vec![bundle; self.stages as usize], self.placement)?;
        pg.ready(std::time::Duration::from_secs(120))?;
        let stages = partition(linear, self.stages as usize)
            .into_iter()
            .enumerate()
            .map(|(i, (first, end))| {
                PipeStage::options()
                    .num_cpus(self.stage_cpus)
                    .placement_group(&pg, i as u32)
                    .spawn(StageSpec {
                        config: self.config.to_bytes(),
                        first,
                        end,
                        micro: self.micro,
                    })
            })
            .collect::<prism::Result<Vec<_>>>()?;
        let (mut losses, mut peaks) = (Vec::new(), Vec::new());
        for _ in 0..self.config.epochs {
            for batch in data.iter_batches(b).drop_last(true) {
                let batch = batch?;
                let labels = batch
                    .labels
                    .ok_or_else(|| MlError::Train("the dataset has no labels".into()))?;
                let mb = (b / self.micro as usize) as i64;
                let xs = (0..self.micro as i64)
                    .map(|i| Act::of(&batch.features.narrow(0, i * mb, mb)).map_err(MlError::Train))
                    .collect::<Result<Vec<_>>>()?;
                let ys: Vec<Vec<i64>> = (0..self.micro as i64)
                    .map(|i| Vec::<i64>::try_from(labels.narrow(0, i * mb, mb).contiguous()))
                    .collect::<std::result::Result<_, _>>()?;
                let loss = self.batch(&stages, xs, ys)?;
                losses.push(loss);
                let mut step_peaks = Vec::new();
                for s in &stages {
                    step_peaks.push(s.step()?.get()?.map_err(MlError::Train)?);
                }
                peaks.push(step_peaks);
            }
        }
        let (mut output, mut stage_nodes) = (Vec::new(), Vec::new());
        for s in &stages {
            output.extend(s.weights()?.get()?.map_err(MlError::Train)?);
            stage_nodes.push(s.node()?.get()?);
        }
        for s in &stages {
            let _ = prism::kill(s, true);
        }
        let _ = pg.remove();
        Ok(PipelineResult {
            output,
            losses,
            peak_alive: peaks,
            stage_nodes,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// One batch: submits every stage's passes in the schedule's order, in
    /// an order where each pass's input already has a ref; returns the
    /// batch's mean loss.
    fn batch(
        &self,
        stages: &[ActorHandle<PipeStage>],
        xs: Vec<Act>,
        ys: Vec<Vec<i64>>,
    ) -> Result<f64> {
        let p = stages.len();
        let m = self.micro;
        let ops: Vec<Vec<Op>> = (0..p as u32)
            .map(|s| stage_ops(self.schedule, p as u32, s, m))
            .collect();
        let mut next = vec![0usize; p];
        // fwd[s][mb]: stage s's output for mb; bwd[s][mb]: the gradient of
        // stage s's input; loss[mb].
        let mut fwd: Vec<Vec<Option<ObjectRef<Act>>>> = vec![vec![None; m as usize]; p];
        let mut bwd = fwd.clone();
        let mut loss: Vec<Option<ObjectRef<f64>>> = vec![None; m as usize];
        let mut xs: Vec<Option<Act>> = xs.into_iter().map(Some).collect();
        let mut ys: Vec<Option<Vec<i64>>> = ys.into_iter().map(Some).collect();
        let total: usize = ops.iter().map(Vec::len).sum();
        let mut submitted = 0;
        while submitted < total {
            let before = submitted;
            for s in 0..p {
                while let Some(op) = ops[s].get(next[s]).copied() {
                    let last = s + 1 == p;
                    match op {
                        Op::F(i) => {
                            let i = i as usize;
                            let input = if s == 0 { None } else { fwd[s - 1][i].clone() };
                            if s > 0 && input.is_none() {
                                break;
                            }
                            match (s == 0, last) {
                                (true, true) => {
                                    let x = xs[i].take().unwrap_or_default();
                                    let y = ys[i].take().unwrap_or_default();
                                    loss[i] = Some(stages[s].forward_last(i as u32, x, y)?);
                                }
                                (true, false) => {
                                    let x = xs[i].take().unwrap_or_default();
                                    fwd[s][i] = Some(stages[s].forward(i as u32, x)?);
                                }
                                (false, true) => {
                                    let y = ys[i].take().unwrap_or_default();
                                    let x = input.as_ref().expect("checked");
                                    loss[i] = Some(stages[s].forward_last(i as u32, x, y)?);
                                }
                                (false, false) => {
                                    let x = input.as_ref().expect("checked");
                                    fwd[s][i] = Some(stages[s].forward(i as u32, x)?);
                                }
                            }
                        }
                        Op::B(i) => {
                            let i = i as usize;
                            if last {
                                bwd[s][i] = Some(stages[s].backward_last(i as u32)?);
                            } else {
                                let Some(g) = bwd[s + 1][i].clone() else {
                                    break;
                                };
                                bwd[s][i] = Some(stages[s].backward(i as u32, &g)?);
                            }
                        }
                    }
                    next[s] += 1;
                    submitted += 1;
                }
            }
            if submitted == before {
                return Err(MlError::Train(
                    "the pipeline schedule cannot progress".into(),
                ));
            }
        }
        // The first stage's input gradients mark the end of the backward.
        for g in bwd[0].iter().flatten() {
            g.get()?;
        }
        let mut sum = 0.0;
        for l in loss.iter().flatten() {
            sum += l.get()?;
        }
        Ok(sum / f64::from(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_cuts_layers_into_contiguous_runs() {
        assert_eq!(partition(4, 2), vec![(0, 2), (2, 4)]);
        assert_eq!(partition(3, 3), vec![(0, 1), (1, 2), (2, 3)]);
        assert_eq!(partition(5, 2), vec![(0, 2), (2, 5)]);
    }
}
