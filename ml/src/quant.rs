//! Post-training dynamic quantization for serving: each linear layer's
//! weights become int8 per output channel (symmetric, scale = max |w| /
//! 127 for each row), 4× smaller; at run time the float activations are
//! multiplied with the int8 weights by libtorch's weight-only int8 kernel
//! (`_weight_int8pack_mm`, the scales applied per output channel), with a
//! dequantizing fallback where that kernel is missing. [`compare`] reports
//! what it costs: accuracy on a test set, size and latency against fp32.

use crate::data::Dataset;
use crate::recipes::{self, MlpConfig};
use crate::{MlError, Result};
use std::time::Instant;
use tch::nn::{Module, VarStore};
use tch::{Kind, Tensor};

/// One linear layer with int8 weights.
pub struct Int8Linear {
    /// int8, `[out, in]`.
    weight: Tensor,
    /// f32, `[out]`: weight ≈ int8 × scale, row by row.
    scales: Tensor,
    bias: Option<Tensor>,
}

impl Int8Linear {
    /// Quantizes `weight` (`[out, in]`, float) per output channel.
    pub fn quantize(weight: &Tensor, bias: Option<&Tensor>) -> Result<Int8Linear> {
        let w = weight.f_to_kind(Kind::Float)?.detach();
        let max = w.f_abs()?.f_amax([1i64].as_slice(), true)?;
        // A row of zeros keeps scale 1 (its int8 values are all 0).
        let scales = (max / 127.0).f_clamp_min(1e-12)?;
        let q = (&w / &scales)
            .f_round()?
            .f_clamp(-127.0, 127.0)?
            .f_to_kind(Kind::Int8)?;
        Ok(Int8Linear {
            weight: q,
            scales: scales.f_squeeze_dim(1)?,
            bias: bias.map(|b| b.detach().to_kind(Kind::Float)),
        })
    }

    /// `x @ weightᵀ + bias` for float `x` (`[batch, in]`).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y = x
            .f_internal_weight_int8pack_mm(&self.weight, &self.scales)
            .unwrap_or_else(|_| self.dequantized_forward(x));
        match &self.bias {
            Some(b) => y + b,
            None => y,
        }
    }

    fn dequantized_forward(&self, x: &Tensor) -> Tensor {
        let w = self.weight.to_kind(Kind::Float) * self.scales.unsqueeze(1);
        x.matmul(&w.tr())
    }

    /// Bytes its tensors hold.
    pub fn size_bytes(&self) -> usize {
        let n = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
        n(&self.weight) + n(&self.scales) + self.bias.as_ref().map_or(0, n)
    }
}

/// The digits MLP ([`recipes::mlp`]) with int8 linear layers.
pub struct Int8Mlp {
    layers: Vec<Int8Linear>,
}

impl Int8Mlp {
    /// Quantizes the linear layers `l0, l1, …` of an MLP's variables.
    pub fn from_var_store(vs: &VarStore, layers: usize) -> Result<Int8Mlp> {
        let vars = vs.variables();
        let layers = (0..layers)
            .map(|i| {
                let w = vars
                    .get(&format!("l{i}.weight"))
                    .ok_or_else(|| MlError::Train(format!("no weight l{i}.weight to quantize")))?;
                Int8Linear::quantize(w, vars.get(&format!("l{i}.bias")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Int8Mlp { layers })
    }

    /// Logits for float `x`, ReLU between layers as in [`recipes::mlp`].
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.to_kind(Kind::Float);
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h);
            if i + 1 < self.layers.len() {
                h = h.relu();
            }
        }
        h
    }

    /// Bytes its tensors hold.
    pub fn size_bytes(&self) -> usize {
        self.layers.iter().map(Int8Linear::size_bytes).sum()
    }
}

/// int8 against fp32 on one test set.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantReport {
    /// Test accuracy, fp32.
    pub fp32_accuracy: f64,
    /// Test accuracy, int8.
    pub int8_accuracy: f64,
    /// Weight bytes, fp32.
    pub fp32_bytes: usize,
    /// Weight bytes, int8 (with the scales).
    pub int8_bytes: usize,
    /// Median µs for one forward pass of `batch` rows, fp32.
    pub fp32_us: f64,
    /// The same, int8.
    pub int8_us: f64,
    /// The batch the latencies are for.
    pub batch: i64,
}

impl std::fmt::Display for QuantReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fp32: {:.2}% accuracy, {} bytes, {:.1} µs per batch of {}; int8: {:.2}% ({:+.2} points), {} bytes ({:.2}×), {:.1} µs ({:.2}×)",
            self.fp32_accuracy * 100.0,
            self.fp32_bytes,
            self.fp32_us,
            self.batch,
            self.int8_accuracy * 100.0,
            (self.int8_accuracy - self.fp32_accuracy) * 100.0,
            self.int8_bytes,
            self.fp32_bytes as f64 / self.int8_bytes.max(1) as f64,
            self.int8_us,
            self.fp32_us / self.int8_us.max(1e-9),
        )
    }
}

fn median_us(mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..51)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Quantizes the MLP whose flat weights are `weights` and measures both
/// on `test` (accuracy) and on its first `batch` rows (latency, median of 51).
pub fn compare(cfg: &MlpConfig, weights: &[u8], test: &Dataset, batch: i64) -> Result<QuantReport> {
    let (vs, net) = recipes::load_flat(cfg, weights)?;
    let q = Int8Mlp::from_var_store(&vs, cfg.layers.len() - 1)?;
    let int8_accuracy = recipes::accuracy_of(|x| q.forward(x), test)?;
    let first = test
        .iter_batches(512)
        .next()
        .ok_or_else(|| MlError::Train("the test set is empty".into()))??
        .features;
    let rows = first.size()[0];
    let x = first.narrow(0, 0, batch.min(rows)).to_kind(Kind::Float);
    let fp32_bytes = vs
        .variables()
        .values()
        .map(|t| t.numel() * t.kind().elt_size_in_bytes())
        .sum();
    Ok(QuantReport {
        fp32_accuracy: recipes::accuracy(&net, test)?,
        int8_accuracy,
        fp32_bytes,
        int8_bytes: q.size_bytes(),
        fp32_us: median_us(|| drop(tch::no_grad(|| net.forward(&x)))),
        int8_us: median_us(|| drop(tch::no_grad(|| q.forward(&x)))),
        batch: x.size()[0],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_weights_reproduce_the_layer_within_the_rounding() {
        tch::manual_seed(3);
        let w = Tensor::randn([32, 64], (Kind::Float, tch::Device::Cpu));
        let b = Tensor::randn([32], (Kind::Float, tch::Device::Cpu));
        let q = Int8Linear::quantize(&w, Some(&b)).unwrap();
        let x = Tensor::randn([8, 64], (Kind::Float, tch::Device::Cpu));
        let exact = x.matmul(&w.tr()) + &b;
        let got = q.forward(&x);
        let err = (&got - &exact).abs().max().double_value(&[]);
        let scale = exact.abs().max().double_value(&[]);
        assert!(err / scale < 0.02, "relative error {}", err / scale);
        let deq = q.dequantized_forward(&x) + &b;
        assert!(
            (&got - &deq).abs().max().double_value(&[]) < 1e-3,
            "kernel = dequantized"
        );
        let kernel = x.f_internal_weight_int8pack_mm(&q.weight, &q.scales);
        println!(
            "libtorch's int8 kernel: {}",
            kernel
                .as_ref()
                .map_or_else(|e| e.to_string(), |_| "runs".into())
        );
        // int8 weights + f32 scales + f32 bias vs f32 weights + bias.
        assert_eq!(q.size_bytes(), 32 * 64 + 32 * 4 + 32 * 4);
    }

    #[test]
    fn a_zero_row_stays_zero() {
        let w = Tensor::zeros([2, 4], (Kind::Float, tch::Device::Cpu));
        let q = Int8Linear::quantize(&w, None).unwrap();
        let x = Tensor::ones([1, 4], (Kind::Float, tch::Device::Cpu));
        assert_eq!(q.forward(&x).abs().sum(Kind::Float).double_value(&[]), 0.0);
    }
}
