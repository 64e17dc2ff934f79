//! Running a pipeline: attempts (a stage lost → every stage starts again
//! from the last checkpoint all of them have), batches, and the schedule's
//! submission order.

use super::stage_calls::{save_all, submit_steps, Attempt, Pending};
use super::{stage_ops, Act, Op, PipeStage, PipelineResult, PipelineTrainer, StageSpec};
use crate::train::record;
use crate::{MlError, Result};
use prism::{ActorHandle, ObjectRef};
use std::time::Instant;

/// How long the driver waits for the next stage's ring to finish; each
/// ring piece has its own, shorter, wait (a lost replica ends its ring
/// sooner), so this only bounds a ring that moves but very slowly.
const AVERAGE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// The stages and their group, stopped when dropped.
struct Stages {
    pg: prism::PlacementGroup,
    handles: Vec<ActorHandle<PipeStage>>,
    /// Per replica: whether its stages pass tensors through channels.
    linked: Vec<bool>,
    /// Links of the replicas' rings that go through shared memory.
    ring_channels: usize,
}

impl Drop for Stages {
    fn drop(&mut self) {
        for s in &self.handles {
            let _ = prism::kill(s, true);
        }
        let _ = self.pg.remove();
    }
}

impl PipelineTrainer {
    /// Trains; with `max_failures`, a lost stage restarts every stage from
    /// the last common checkpoint.
    pub fn fit(&self) -> Result<PipelineResult> {
        let started = Instant::now();
        let b = self.config.batch_size;
        if !b.is_multiple_of(self.micro as usize) {
            return Err(MlError::Train(format!(
                "a batch of {b} does not split into {} equal micro-batches",
                self.micro
            )));
        }
        let linear = self.config.layers.len().saturating_sub(1);
        if let Some(name) = &self.model {
            // An unknown model fails here, not in every stage's constructor.
            super::model::find_model(name)?;
        } else if (self.stages as usize) > linear {
            return Err(MlError::Train(format!(
                "{} stages for a model of {linear} layers",
                self.stages
            )));
        }
        let mut out = PipelineResult {
            output: Vec::new(),
            losses: Vec::new(),
            peak_alive: Vec::new(),
            peak_bytes: Vec::new(),
            busy_ms: Vec::new(),
            stage_nodes: Vec::new(),
            channels: false,
            ring_channels: 0,
            failures: 0,
            step_ms: Vec::new(),
            seconds: 0.0,
            run_id: record::new_run_id("pipeline"),
        };
        // Recorded on the head like a DdpTrainer run, every step as it ends.
        let extra = vec![
            ("stages".to_string(), self.stages.to_string()),
            ("micro_batches".into(), self.micro.to_string()),
            ("schedule".into(), format!("{:?}", self.schedule)),
            ("replicas".into(), self.replicas.to_string()),
        ];
        let params = record::mlp_params("PipelineTrainer", &self.config, self.data.as_ref(), extra);
        record::begin(&out.run_id, "pipeline", params);
        // SIGTERM while this runs is a preemption notice (train/preempt.rs):
        // every stage saves the step it is at, and the run stops.
        let _notice = crate::train::preempt::arm();
        let result = loop {
            match self.attempt(&mut out) {
                Ok(()) => break Ok(()),
                Err(Attempt::Lost(e)) if out.failures < self.max_failures => {
                    out.failures += 1;
                    println!(
                        "pipeline: a stage was lost ({e}); starting again from the last checkpoint"
                    );
                }
                Err(Attempt::Lost(e) | Attempt::Fatal(e)) => break Err(e),
            }
        };
        record::finish(&out.run_id, "pipeline", &result);
        result?;
        out.seconds = started.elapsed().as_secs_f64();
        Ok(out)
    }

    fn spawn(&self) -> std::result::Result<Stages, Attempt> {
        // One bundle per stage of every replica, all or none, placed by the
        // strategy; replica r's stage s is bundle r·p + s.
        let p = self.stages as usize;
        let dp = self.replicas as usize;
        let bundle = prism::Bundle::new().cpus(self.stage_cpus);
        let pg = prism::PlacementGroup::create(vec![bundle; p * dp], self.placement)?;
        pg.ready(std::time::Duration::from_secs(120))?;
        let mut stages = Stages {
            pg,
            handles: Vec::new(),
            linked: Vec::new(),
            ring_channels: 0,
        };
        for r in 0..dp {
            // A user model cuts itself (its builder makes each stage).
            let cuts = match self.model {
                Some(_) => vec![(0, 0); p],
                None => super::partition::cut(&self.config.layers, p, self.balance),
            };
            for (i, (first, end)) in cuts.into_iter().enumerate() {
                // Replicas take each other's gradient pieces while their
                // ring runs: that needs concurrent (async) calls.
                let concurrency = if dp > 1 { 8 } else { 1 };
                let h = PipeStage::options()
                    .num_cpus(self.stage_cpus)
                    .max_concurrency(concurrency)
                    .placement_group(&stages.pg, (r * p + i) as u32)
                    .spawn(StageSpec {
                        config: self.config.to_bytes(),
                        model: self.model.clone(),
                        stages: p as u32,
                        first,
                        end,
                        micro: self.micro,
                        index: i as u32,
                        replica: r as u32,
                        replicas: dp as u32,
                        checkpoint_dir: self
                            .checkpoint
                            .as_ref()
                            .map(|(d, _)| d.display().to_string()),
                        // As many libtorch threads as the stage holds CPUs
                        // (at least one), as Ray sets OMP_NUM_THREADS: more
                        // spin on cores the neighbouring stages need.
                        threads: match self.threads {
                            0 => (self.stage_cpus.floor() as i32).max(1),
                            n => n,
                        },
                        defer_weight_grads: self.schedule == super::Schedule::GPipe,
                    })?;
                stages.handles.push(h);
            }
        }
        stages.ring_channels = self.connect_replicas(&stages.handles)?;
        let rows = self.config.batch_size / self.micro as usize;
        // A user model's tensors between stages have sizes only it knows:
        // its stages say, given a micro-batch shaped like the data's.
        let slot = match &self.model {
            None => Some(super::links::slot_bytes(&self.config.layers, rows)),
            Some(_) => self
                .input_shape(rows)
                .and_then(|input| super::links::probe_slot(&stages.handles[..p], input)),
        };
        for r in 0..dp {
            let replica = &stages.handles[r * p..(r + 1) * p];
            let linked = match slot {
                Some(slot) => super::links::connect(replica, self.micro, slot)?,
                None => false,
            };
            stages.linked.push(linked);
        }
        Ok(stages)
    }

    /// A micro-batch's input shape: `rows` rows shaped as the dataset's.
    fn input_shape(&self, rows: usize) -> Option<Vec<i64>> {
        let block = self.data.as_ref()?.blocks().first()?.read().ok()?;
        let row = block.row_shape().iter().map(|d| *d as i64);
        Some(std::iter::once(rows as i64).chain(row).collect())
    }

    /// DP: links the replicas of every stage into a ring (through
    /// shared memory between replicas on one node, the store otherwise);
    /// returns how many links go through shared memory.
    fn connect_replicas(&self, stages: &[ActorHandle<PipeStage>]) -> prism::Result<usize> {
        let p = self.stages as usize;
        let dp = self.replicas as usize;
        let mut shared = 0;
        if dp < 2 {
            return Ok(shared);
        }
        for s in 0..p {
            let at = |r: usize| &stages[r * p + s];
            shared += crate::train::ring_member::connect_ring(
                dp,
                true,
                |r| at(r).open_inbox(),
                |r, outbox, used| at(r).set_next(at((r + 1) % dp).clone(), outbox, used),
            )?;
        }
        Ok(shared)
    }

    /// DP: every stage's gradients averaged over its replicas, each stage's
    /// replicas through their ring, all stages at once.
    fn average_gradients(
        &self,
        stages: &[ActorHandle<PipeStage>],
    ) -> std::result::Result<(), Attempt> {
        if self.replicas < 2 {
            return Ok(());
        }
        let mut pending = stages
            .iter()
            .map(|s| s.average_grads())
            .collect::<prism::Result<Vec<_>>>()?;
        // As they finish, so that a replica lost mid-ring fails the step
        // at once (its call fails) rather than after its peers' timeout.
        while !pending.is_empty() {
            let (ready, rest) = prism::wait(&pending, 1, Some(AVERAGE_DEADLINE))?;
            if ready.is_empty() {
                return Err(Attempt::Lost(MlError::Train(format!(
                    "the replicas did not average their gradients within {AVERAGE_DEADLINE:?}"
                ))));
            }
            for call in ready {
                // A ring that fails lost a replica's stage (or its node).
                call.get()?.map_err(|e| {
                    Attempt::Lost(MlError::Train(format!(
                        "averaging gradients between replicas: {e}"
                    )))
                })?;
            }
            pending = rest;
        }
        Ok(())
    }

    /// The newest step every stage has a checkpoint of (0: none).
    fn common_checkpoint(&self, stages: &Stages) -> std::result::Result<u64, Attempt> {
        let mut common: Option<Vec<u64>> = None;
        for s in &stages.handles[..self.stages as usize] {
            let steps = s.saved_steps()?.get()?;
            common = Some(match common {
                None => steps,
                Some(c) => c.into_iter().filter(|x| steps.contains(x)).collect(),
            });
        }
        Ok(common.unwrap_or_default().into_iter().max().unwrap_or(0))
    }

    fn attempt(&self, out: &mut PipelineResult) -> std::result::Result<(), Attempt> {
        let data = self.data.as_ref().ok_or_else(|| {
            Attempt::Fatal(MlError::Train("no dataset: call .dataset(ds) first".into()))
        })?;
        let stages = self.spawn()?;
        // After a lost stage, or in the run after a preemption, from the
        // newest step every stage saved.
        let resume = if out.failures > 0 || crate::train::preempt::resumed() {
            self.common_checkpoint(&stages)?
        } else {
            0
        };
        if resume > 0 {
            println!("pipeline: resuming from the checkpoint of step {resume}");
            for s in &stages.handles {
                s.restore(resume)?
                    .get()?
                    .map_err(|e| Attempt::Fatal(MlError::Train(e)))?;
            }
        }
        out.losses.truncate(resume as usize);
        out.peak_alive.truncate(resume as usize);
        out.peak_bytes.truncate(resume as usize);
        out.busy_ms.truncate(resume as usize);
        out.step_ms.truncate(resume as usize);
        let b = self.config.batch_size;
        let p = self.stages as usize;
        let dp = self.replicas as usize;
        let mut step = 0u64;
        for _ in 0..self.config.epochs {
            let mut batches = data.iter_batches(b).drop_last(true);
            loop {
                // One step: the next dp batches, one per replica.
                let group: Vec<_> = batches.by_ref().take(dp).collect();
                if group.len() < dp {
                    break;
                }
                if step < resume {
                    step += 1;
                    continue;
                }
                let began = Instant::now();
                let mut pending = Vec::new();
                for (r, batch) in group.into_iter().enumerate() {
                    let batch = batch?;
                    let labels = batch.labels.ok_or_else(|| {
                        Attempt::Fatal(MlError::Train("the dataset has no labels".into()))
                    })?;
                    let mb = (b / self.micro as usize) as i64;
                    let xs = (0..self.micro as i64)
                        .map(|i| {
                            Act::of(&batch.features.narrow(0, i * mb, mb)).map_err(MlError::Train)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let ys: Vec<Vec<i64>> = (0..self.micro as i64)
                        .map(|i| Vec::<i64>::try_from(labels.narrow(0, i * mb, mb).contiguous()))
                        .collect::<std::result::Result<_, _>>()
                        .map_err(|e| Attempt::Fatal(e.into()))?;
                    let replica = &stages.handles[r * p..(r + 1) * p];
                    pending.push(if stages.linked[r] {
                        let (passes, losses) =
                            super::links::submit(replica, self.schedule, xs, ys)?;
                        Pending {
                            ends: Vec::new(),
                            passes,
                            losses,
                        }
                    } else {
                        self.submit_batch(replica, xs, ys)?
                    });
                }
                // One replica: each stage steps as soon as its own passes
                // end (its calls run in order), while the others still
                // run theirs. Replicas first average their gradients.
                let early = if dp == 1 {
                    Some(submit_steps(&stages.handles)?)
                } else {
                    None
                };
                let mut loss = 0.0;
                for batch in pending {
                    loss += batch.finish()?;
                }
                out.losses.push(loss / dp as f64);
                self.average_gradients(&stages.handles)?;
                let steps = match early {
                    Some(steps) => steps,
                    None => submit_steps(&stages.handles)?,
                };
                let step_peaks = steps
                    .iter()
                    .map(|r| r.get()?.map_err(|e| Attempt::Fatal(MlError::Train(e))))
                    .collect::<std::result::Result<Vec<_>, Attempt>>()?;
                out.peak_alive
                    .push(step_peaks.iter().map(|p| p.0).collect());
                out.peak_bytes
                    .push(step_peaks.iter().map(|p| p.1).collect());
                out.busy_ms
                    .push(step_peaks.iter().map(|p| p.2 as f64 / 1e3).collect());
                out.step_ms.push(began.elapsed().as_secs_f64() * 1e3);
                let point = prism::proto::runs::RunPoint {
                    step: step + 1,
                    values: vec![
                        ("loss".into(), *out.losses.last().unwrap_or(&0.0)),
                        ("step_ms".into(), *out.step_ms.last().unwrap_or(&0.0)),
                    ],
                    seconds: began.elapsed().as_secs_f64(),
                };
                crate::train::record::points(&out.run_id, "pipeline", vec![point]);
                step += 1;
                let preempted = crate::train::preempt::requested();
                if let Some((_, every)) = &self.checkpoint {
                    if step.is_multiple_of(*every) || preempted {
                        save_all(&stages.handles[..p], step)?;
                    }
                }
                if preempted {
                    let checkpointed = self.checkpoint.is_some();
                    println!("pipeline: preemption notice: stopped at step {step}");
                    return Err(Attempt::Fatal(MlError::Preempted { step, checkpointed }));
                }
            }
        }
        out.output.clear();
        out.stage_nodes.clear();
        out.channels = stages.linked.iter().all(|l| *l);
        out.ring_channels = stages.ring_channels;
        for s in &stages.handles[..p] {
            out.output.extend(
                s.weights()?
                    .get()?
                    .map_err(|e| Attempt::Fatal(MlError::Train(e)))?,
            );
            out.stage_nodes.push(s.node()?.get()?);
        }
        Ok(())
    }

    /// One batch on one replica: submits every stage's passes in the
    /// schedule's order, in an order where each pass's input already has a
    /// ref; [`Pending::finish`] waits for them.
    fn submit_batch(
        &self,
        stages: &[ActorHandle<PipeStage>],
        xs: Vec<Act>,
        ys: Vec<Vec<i64>>,
    ) -> std::result::Result<Pending, Attempt> {
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
                return Err(Attempt::Fatal(MlError::Train(
                    "the pipeline schedule cannot progress".into(),
                )));
            }
        }
        Ok(Pending {
            ends: bwd[0].iter().flatten().cloned().collect(),
            passes: Vec::new(),
            losses: loss.into_iter().flatten().collect(),
        })
    }
}
