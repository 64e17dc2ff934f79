//! A parameter-server worker: a task that loops pull → gradients on its
//! shard of the data → push, for the MLP recipe's model.

use super::server::{PsShard, Pull};
use crate::data::Dataset;
use crate::recipes::{self, MlpConfig};
use prism::ActorHandle;
use std::time::{Duration, Instant};
use tch::nn::Module;

/// What one worker runs.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct WorkerJob {
    /// Its rank.
    pub rank: u32,
    /// The model's [`MlpConfig`] bytes.
    pub config: Vec<u8>,
    /// Its rows.
    pub shard: Dataset,
    /// The shards of the parameters, in order.
    pub servers: Vec<ActorHandle<PsShard>>,
    /// Each server's range of the flat weights.
    pub ranges: Vec<(u64, u64)>,
    /// How long one pull may wait for its step to be allowed.
    pub wait_ms: u64,
}

/// Runs the loop; returns the loss of every step.
#[prism::remote]
pub(crate) fn ps_worker(job: WorkerJob) -> Result<Vec<f64>, String> {
    run(&job).map_err(|e| format!("worker {}: {e}", job.rank))
}

/// The weights for `step`, from every server, waiting (bounded) while a
/// server says the step may not start yet; `None` when the run stops.
fn pull_all(job: &WorkerJob, step: u64) -> crate::Result<Option<Vec<f32>>> {
    let deadline = Instant::now() + Duration::from_millis(job.wait_ms);
    let mut out = Vec::new();
    for (i, s) in job.servers.iter().enumerate() {
        let mut pause = Duration::from_micros(200);
        loop {
            match s.pull(step)?.get()? {
                Pull::Ready(w) => {
                    out.extend(w);
                    break;
                }
                Pull::Stop => return Ok(None),
                Pull::Wait => {}
            }
            if Instant::now() >= deadline {
                return Err(crate::MlError::Train(format!(
                    "server {i} did not let step {step} start within {} ms (a worker stopped?)",
                    job.wait_ms
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }
    Ok(Some(out))
}

fn run(job: &WorkerJob) -> crate::Result<Vec<f64>> {
    let cfg = MlpConfig::from_bytes(&job.config)?;
    let (vs, net) = recipes::build(&cfg);
    let vars = vs.trainable_variables();
    let mut losses = Vec::new();
    // A worker run again after its process died resumes where it stopped.
    let resume = match job.servers.first() {
        Some(s) => s.done(job.rank)?.get()?,
        None => 0,
    };
    let mut step = 0u64;
    for _epoch in 0..cfg.epochs {
        for batch in job.shard.iter_batches(cfg.batch_size).drop_last(true) {
            if step < resume {
                step += 1;
                continue;
            }
            let batch = batch?;
            // Stopped (preempted): every step pulled was pushed (PS-6).
            let Some(flat) = pull_all(job, step)? else {
                return Ok(losses);
            };
            let mut at = 0;
            tch::no_grad(|| -> crate::Result<()> {
                for v in &vars {
                    let n = v.numel();
                    let t = tch::Tensor::f_from_slice(&flat[at..at + n])?
                        .f_view(v.size().as_slice())?;
                    v.shallow_clone().f_copy_(&t)?;
                    at += n;
                }
                Ok(())
            })?;
            for mut v in vs.trainable_variables() {
                v.zero_grad();
            }
            let labels = batch
                .labels
                .ok_or_else(|| crate::MlError::Train("the dataset has no labels".into()))?;
            let loss = net
                .forward(&batch.features)
                .cross_entropy_for_logits(&labels);
            loss.backward();
            let mut grads = Vec::with_capacity(flat.len());
            for v in &vars {
                let n = v.numel();
                let mut buf = vec![0f32; n];
                v.grad()
                    .f_contiguous()?
                    .f_view([-1])?
                    .f_copy_data(&mut buf, n)?;
                grads.extend(buf);
            }
            let pushes = job
                .servers
                .iter()
                .zip(&job.ranges)
                .map(|(s, (a, b))| s.push(job.rank, step, grads[*a as usize..*b as usize].to_vec()))
                .collect::<prism::Result<Vec<_>>>()?;
            for p in pushes {
                p.get()?.map_err(crate::MlError::Train)?;
            }
            losses.push(loss.f_double_value(&[])?);
            step += 1;
        }
    }
    Ok(losses)
}
