//! A ready-made training loop: an MLP classifier over a dataset of
//! feature rows and integer labels, trained with DDP. Registered as
//! `"mlp_classifier"`; configure it with [`MlpConfig::to_bytes`].

use crate::data::Dataset;
use crate::train::{Sgd, TrainContext};
use crate::{MlError, Result};
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Tensor};

/// The classifier and how to train it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MlpConfig {
    /// Layer widths, input first, classes last (e.g. `[64, 256, 256, 10]`).
    pub layers: Vec<i64>,
    /// Passes over the data.
    pub epochs: u64,
    /// Batch size per worker.
    pub batch_size: usize,
    /// SGD learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 penalty.
    pub weight_decay: f64,
    /// Seed of the weights' initialisation (the same on every rank).
    pub seed: i64,
    /// Train on the worker's GPU (`cuda:0` of the GPUs Prism gave it);
    /// gradients are then all-reduced by NCCL when built with the `cuda`
    /// feature, through host memory otherwise.
    #[serde(default)]
    pub cuda: bool,
}

impl MlpConfig {
    /// The bytes for [`crate::train::DdpTrainer::config`].
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses [`MlpConfig::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Result<MlpConfig> {
        serde_json::from_slice(b).map_err(|e| MlError::Train(format!("bad MLP config: {e}")))
    }
}

/// The network: linear layers with ReLU between them.
pub fn mlp(p: &nn::Path, layers: &[i64]) -> nn::Sequential {
    let mut seq = nn::seq();
    for (i, w) in layers.windows(2).enumerate() {
        seq = seq.add(nn::linear(
            p / format!("l{i}"),
            w[0],
            w[1],
            Default::default(),
        ));
        if i + 2 < layers.len() {
            seq = seq.add_fn(|x| x.relu());
        }
    }
    seq
}

/// A fresh model from the config's seed, identical on every process.
pub fn build(cfg: &MlpConfig) -> (VarStore, nn::Sequential) {
    tch::manual_seed(cfg.seed);
    let device = if cfg.cuda {
        Device::Cuda(0)
    } else {
        Device::Cpu
    };
    let vs = VarStore::new(device);
    let net = mlp(&vs.root(), &cfg.layers);
    (vs, net)
}

fn mlp_classifier(ctx: &mut TrainContext) -> std::result::Result<(), String> {
    run(ctx).map_err(|e| e.to_string())
}

crate::train_loop!(mlp_classifier);

fn run(ctx: &mut TrainContext) -> Result<()> {
    let cfg = MlpConfig::from_bytes(ctx.config())?;
    let (mut vs, net) = build(&cfg);
    let mut opt = Sgd::new(cfg.lr, cfg.momentum, cfg.weight_decay);
    let start = ctx.restore(&mut vs, &mut opt)?;
    let shard = ctx.shard()?.clone();
    let per_epoch = shard.count() / cfg.batch_size as u64;
    if per_epoch == 0 {
        return Err(MlError::Train(format!(
            "a shard of {} rows holds no batch of {}",
            shard.count(),
            cfg.batch_size
        )));
    }
    for epoch in start / per_epoch..cfg.epochs {
        let skip = if epoch == start / per_epoch {
            start % per_epoch
        } else {
            0
        };
        let batches = shard
            .iter_batches(cfg.batch_size)
            .drop_last(true)
            .prefetch(2);
        for batch in batches.skip(skip as usize) {
            let batch = batch?;
            let labels = batch
                .labels
                .ok_or_else(|| MlError::Train("the dataset has no labels".into()))?;
            let logits = net.forward(&batch.features.f_to_device(vs.device())?);
            let loss = logits.cross_entropy_for_logits(&labels.f_to_device(vs.device())?);
            opt.zero_grad(&vs);
            loss.backward();
            ctx.all_reduce_gradients(&vs)?;
            opt.step(&vs)?;
            let l = loss.f_double_value(&[])?;
            ctx.step_done(epoch, &[("loss", l)], &vs, &opt)?;
        }
    }
    ctx.save_checkpoint(&vs, &opt)?;
    if ctx.rank() == 0 {
        ctx.set_output(flat_weights(&vs)?);
    }
    Ok(())
}

/// Every trainable weight, in creation order, as f32 bytes.
pub fn flat_weights(vs: &VarStore) -> Result<Vec<u8>> {
    let mut out: Vec<f32> = Vec::new();
    for v in vs.trainable_variables() {
        let n = v.numel();
        let mut buf = vec![0f32; n];
        v.f_to_device(Device::Cpu)?
            .f_contiguous()?
            .f_view([-1])?
            .f_copy_data(&mut buf, n)?;
        out.extend(buf);
    }
    Ok(bytemuck::cast_slice(&out).to_vec())
}

/// Loads weights from [`flat_weights`] bytes into a fresh model.
pub fn load_flat(cfg: &MlpConfig, bytes: &[u8]) -> Result<(VarStore, nn::Sequential)> {
    let (vs, net) = build(cfg);
    copy_flat(&vs, bytes)?;
    Ok((vs, net))
}

/// Copies [`flat_weights`] bytes into `vs`'s variables, in creation order.
pub fn copy_flat(vs: &VarStore, bytes: &[u8]) -> Result<()> {
    let flat: Vec<f32> = bytes
        .chunks_exact(4)
        .map(bytemuck::pod_read_unaligned::<f32>)
        .collect();
    let mut at = 0;
    tch::no_grad(|| -> Result<()> {
        for v in vs.trainable_variables() {
            let n = v.numel();
            let src = flat
                .get(at..at + n)
                .ok_or_else(|| MlError::Train("too few weights".into()))?;
            let t = Tensor::f_from_slice(src)?.f_view(v.size().as_slice())?;
            v.shallow_clone().f_copy_(&t)?;
            at += n;
        }
        Ok(())
    })?;
    Ok(())
}

/// The fraction of `data`'s rows the model labels right.
pub fn accuracy(net: &nn::Sequential, data: &Dataset) -> Result<f64> {
    accuracy_of(|x| net.forward(x), data)
}

/// The fraction of `data`'s rows `forward` (features → logits) labels right.
pub fn accuracy_of(forward: impl Fn(&Tensor) -> Tensor, data: &Dataset) -> Result<f64> {
    let (mut right, mut all) = (0i64, 0i64);
    for batch in data.iter_batches(512) {
        let batch = batch?;
        let labels = batch
            .labels
            .ok_or_else(|| MlError::Train("the dataset has no labels".into()))?;
        let guess = tch::no_grad(|| forward(&batch.features)).argmax(-1, false);
        right += guess
            .eq_tensor(&labels)
            .to_kind(Kind::Int64)
            .sum(Kind::Int64)
            .int64_value(&[]);
        all += labels.size()[0];
    }
    Ok(if all == 0 {
        0.0
    } else {
        right as f64 / all as f64
    })
}
