//! Click-through-rate prediction on a sparse parameter server: a generated
//! click log with a known generating model (so accuracy has a target), and
//! logistic regression over one weight per categorical id (plus a bias row)
//! trained by worker tasks pulling and pushing only the rows each batch
//! touches.

use super::server::{Pull, ShardCheckpoint};
use super::shard::Mode;
use super::sparse::Adagrad;
use super::sparse_server::{SparseShard, SparseSpec};
use super::CALL;
use crate::{MlError, Result};
use prism::ActorHandle;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The bias row's id.
const BIAS: u64 = u64::MAX;

/// A click log: `fields` categorical columns of `vocab` ids each.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct ClickLog {
    /// Categorical columns.
    pub fields: u32,
    /// Ids per column.
    pub vocab: u32,
    /// The generating model's seed.
    pub seed: u64,
}

/// One example: an id per field, and whether it was clicked.
pub type Example = (Vec<u64>, bool);

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl ClickLog {
    /// The generating model's weight of `id` (and of the bias).
    pub fn true_weight(&self, id: u64) -> f64 {
        if id == BIAS {
            return -0.5;
        }
        let mut r = Rng(self.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        // Roughly N(0, 0.8²) from twelve uniforms.
        ((0..12).map(|_| r.unit()).sum::<f64>() - 6.0) * 0.8
    }

    /// The generating model's click probability.
    pub fn true_p(&self, ids: &[u64]) -> f64 {
        sigmoid(self.true_weight(BIAS) + ids.iter().map(|i| self.true_weight(*i)).sum::<f64>())
    }

    /// `n` examples of part `part` (parts are disjoint streams).
    pub fn examples(&self, part: u64, n: usize) -> Vec<Example> {
        let mut r =
            Rng((self.seed.wrapping_add(part) ^ 0xA5A5_5A5A_DEAD_BEEF).wrapping_mul(31) | 1);
        (0..n)
            .map(|_| {
                let ids: Vec<u64> = (0..self.fields as u64)
                    .map(|f| f * self.vocab as u64 + r.next() % self.vocab as u64)
                    .collect();
                let clicked = r.unit() < self.true_p(&ids);
                (ids, clicked)
            })
            .collect()
    }
}

/// Log loss and accuracy of click probabilities `p` against the labels.
pub fn score(examples: &[Example], p: impl Fn(&[u64]) -> f64) -> (f64, f64) {
    let (mut loss, mut right) = (0.0, 0usize);
    for (ids, y) in examples {
        let q = p(ids).clamp(1e-7, 1.0 - 1e-7);
        loss -= if *y { q.ln() } else { (1.0 - q).ln() };
        right += usize::from((q >= 0.5) == *y);
    }
    let n = examples.len().max(1) as f64;
    (loss / n, right as f64 / n)
}

/// What one CTR worker runs.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct CtrJob {
    /// Its rank (its part of the log).
    pub rank: u32,
    /// The log.
    pub log: ClickLog,
    /// Its examples.
    pub examples: u64,
    /// Batch size.
    pub batch: u32,
    /// Passes over its examples.
    pub epochs: u32,
    /// The table's shards (a row lives on shard `id % s`).
    pub servers: Vec<ActorHandle<SparseShard>>,
}

fn shard_of(id: u64, s: usize) -> usize {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % s
}

/// Runs the loop; returns the rows this worker's batches touched, and the
/// steps it ran (not those a run before it had done).
#[prism::remote]
pub(crate) fn ctr_worker(job: CtrJob) -> Result<(Vec<u64>, u64), String> {
    ctr_loop(&job).map_err(|e| format!("worker {}: {e}", job.rank))
}

fn ctr_loop(job: &CtrJob) -> Result<(Vec<u64>, u64)> {
    let data = job.log.examples(job.rank as u64, job.examples as usize);
    let s = job.servers.len();
    let mut touched = BTreeSet::new();
    // A worker run again after its process died resumes where it stopped
    // (the rows its earlier batches touched count as touched).
    let resume = match job.servers.first() {
        Some(srv) => srv.done(job.rank)?.get()?,
        None => 0,
    };
    let mut step = 0u64;
    for _ in 0..job.epochs {
        for batch in data.chunks(job.batch as usize) {
            if step < resume {
                for (ids, _) in batch {
                    touched.extend(ids.iter().copied().chain([BIAS]));
                }
                step += 1;
                continue;
            }
            // The rows this batch touches, grouped by shard.
            let mut by_shard: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); s];
            for (ids, _) in batch {
                for id in ids.iter().copied().chain([BIAS]) {
                    by_shard[shard_of(id, s)].insert(id);
                    touched.insert(id);
                }
            }
            let mut w: BTreeMap<u64, f64> = BTreeMap::new();
            let deadline = Instant::now() + Duration::from_secs(300);
            for (srv, ids) in job.servers.iter().zip(&by_shard) {
                let ids: Vec<u64> = ids.iter().copied().collect();
                let rows = loop {
                    match srv.pull(step, ids.clone())?.get()? {
                        Pull::Ready(r) => break r,
                        // Preempted: every step pulled was pushed (PS-6).
                        Pull::Stop => {
                            return Ok((touched.into_iter().collect(), step.saturating_sub(resume)))
                        }
                        Pull::Wait => {}
                    }
                    if Instant::now() >= deadline {
                        return Err(MlError::Train(format!(
                            "step {step} never allowed to start"
                        )));
                    }
                    std::thread::sleep(Duration::from_micros(500));
                };
                w.extend(ids.iter().copied().zip(rows.iter().map(|x| *x as f64)));
            }
            let mut g: BTreeMap<u64, f64> = BTreeMap::new();
            let n = batch.len() as f64;
            for (ids, y) in batch {
                let z = w[&BIAS] + ids.iter().map(|i| w[i]).sum::<f64>();
                let d = (sigmoid(z) - f64::from(u8::from(*y))) / n;
                for id in ids.iter().copied().chain([BIAS]) {
                    *g.entry(id).or_default() += d;
                }
            }
            let pushes = job
                .servers
                .iter()
                .zip(&by_shard)
                .map(|(srv, ids)| {
                    let ids: Vec<u64> = ids.iter().copied().collect();
                    let grads: Vec<f32> = ids.iter().map(|i| g[i] as f32).collect();
                    srv.push(job.rank, step, ids, grads)
                })
                .collect::<prism::Result<Vec<_>>>()?;
            for p in pushes {
                p.get()?.map_err(MlError::Train)?;
            }
            step += 1;
        }
    }
    Ok((touched.into_iter().collect(), step.saturating_sub(resume)))
}

/// A CTR training run on a sparse parameter server.
#[derive(Debug, Clone)]
pub struct CtrRun {
    /// The log.
    pub log: ClickLog,
    /// Sparse shards.
    pub servers: usize,
    /// Worker tasks.
    pub workers: usize,
    /// Examples per worker.
    pub examples: u64,
    /// Batch size.
    pub batch: u32,
    /// Passes.
    pub epochs: u32,
    /// Consistency.
    pub mode: Mode,
    /// Server-side optimizer.
    pub opt: Adagrad,
    /// Shard checkpoints, if any.
    pub checkpoint: Option<ShardCheckpoint>,
    /// Restarts allowed of each shard and each worker (their processes
    /// killed), as `ParameterServer::max_failures`.
    pub max_failures: u32,
}

/// What a CTR run produced.
#[derive(Debug, Clone)]
pub struct CtrResult {
    /// The learned weight of every row.
    pub weights: BTreeMap<u64, f64>,
    /// Rows the workers' batches touched (union).
    pub rows_touched: u64,
    /// Rows held by the servers (equal to `rows_touched`: PS-5).
    pub rows_held: u64,
    /// Rows named by all pushes (with repeats).
    pub rows_pushed: u64,
    /// Updates applied over all shards.
    pub updates: u64,
    /// Steps the workers ran in this run (summed; a resumed run skips
    /// those done before).
    pub steps: u64,
    /// Seconds.
    pub seconds: f64,
}

impl CtrResult {
    /// The learned model's click probability.
    pub fn p(&self, ids: &[u64]) -> f64 {
        let w = |i: &u64| self.weights.get(i).copied().unwrap_or(0.0);
        sigmoid(w(&BIAS) + ids.iter().map(w).sum::<f64>())
    }
}

impl CtrRun {
    /// The example's run over `log`: 2 shards, 2 workers of 20,000 clicks,
    /// batches of 256, 5 passes, bounded staleness 4, Adagrad (rate 1,
    /// accumulators from 0.1), no checkpoints.
    pub fn new(log: ClickLog) -> CtrRun {
        CtrRun {
            log,
            servers: 2,
            workers: 2,
            examples: 20_000,
            batch: 256,
            epochs: 5,
            mode: Mode::Stale(4),
            opt: Adagrad {
                lr: 1.0,
                initial: 0.1,
            },
            checkpoint: None,
            max_failures: 0,
        }
    }

    /// Trains.
    pub fn fit(&self) -> Result<CtrResult> {
        let started = Instant::now();
        let servers = (0..self.servers.max(1))
            .map(|i| {
                SparseShard::options()
                    .num_cpus(0.0)
                    .max_restarts(self.max_failures)
                    .max_task_retries(self.max_failures)
                    .spawn(SparseSpec {
                        index: i as u32,
                        dim: 1,
                        workers: self.workers as u32,
                        mode: self.mode,
                        opt: self.opt,
                        checkpoint: self.checkpoint.clone(),
                    })
            })
            .collect::<prism::Result<Vec<_>>>()?;
        let runs = (0..self.workers.max(1))
            .map(|rank| {
                ctr_worker::options()
                    .name("ctr_worker")
                    .max_retries(self.max_failures)
                    .remote(CtrJob {
                        rank: rank as u32,
                        log: self.log,
                        examples: self.examples,
                        batch: self.batch,
                        epochs: self.epochs,
                        servers: servers.clone(),
                    })
            })
            .collect::<prism::Result<Vec<_>>>()?;
        let (mut touched, mut steps) = (BTreeSet::new(), 0);
        let gathered = super::preempt::gather(&runs, CALL, &servers, self.workers).and_then(|()| {
            runs.iter().try_for_each(|r| -> Result<()> {
                let (rows, ran) = r.get()?.map_err(MlError::Train)?;
                touched.extend(rows);
                steps += ran;
                Ok(())
            })
        });
        if let Err(e) = gathered {
            for s in &servers {
                let _ = prism::kill(s, true);
            }
            return Err(e);
        }
        let rows_touched = touched.len() as u64;
        let (mut weights, mut rows_pushed, mut updates) = (BTreeMap::new(), 0, 0);
        for s in &servers {
            for (id, w) in s.rows()?.get()? {
                weights.insert(id, f64::from(w[0]));
            }
            let (pushed, u) = s.counters()?.get()?;
            rows_pushed += pushed;
            updates += u;
        }
        for s in &servers {
            let _ = prism::kill(s, true);
        }
        Ok(CtrResult {
            rows_held: weights.len() as u64,
            weights,
            rows_touched,
            rows_pushed,
            updates,
            steps,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}
