//! The MLP recipe's stage, forward and backward written out instead of
//! traced by autograd, so that a micro-batch's backward does only what
//! the previous stage waits for and the weight gradients run as one
//! matrix product over every micro-batch (the split zero-bubble pipelines
//! make: a backward for the input, one for the weights).
//!
//! A stage holds linear layers `z = x·Wᵀ + b`, each but the model's last
//! followed by a ReLU. For a micro-batch and the gradient `g` of its
//! output, layer by layer from the last: `g ← g ⊙ [out > 0]` (ReLU), the
//! layer keeps `(x, g)`, then `g ← g·W` (the gradient of its input).
//!
//! - **MP-1** a backward computes each layer's output gradient, and the
//!   stage's input gradient only when a previous stage needs it;
//! - **MP-2** a layer's weight gradient is `Σ gᵀ·x` over the micro-batches
//!   it kept, computed as one product of their stacked rows and added to
//!   the variable's gradient, as autograd would over the batch: the
//!   pipeline's weights equal one process's (tests/pipeline.rs);
//! - **MP-3** deferred (GPipe, whose stages hold every micro-batch anyway)
//!   the kept pairs wait for the batch's last backward; otherwise each
//!   backward adds its own at once, so 1F1B still holds at most `p`
//!   micro-batches (`alive` counts the pending ones too).

use std::collections::{HashMap, HashSet};
use tch::{Kind, Tensor};

/// One micro-batch's tensors between its forward and its backward.
struct Forward {
    /// Each layer's input, then the stage's output.
    acts: Vec<Tensor>,
    /// The last stage's: the gradient of the loss by the logits.
    seed: Option<Tensor>,
}

/// A stage of the MLP recipe's model, passes written out.
pub(super) struct MlpPass {
    /// Per layer: its variables' names in the stage's store, and whether
    /// a ReLU follows it.
    layers: Vec<(String, String, bool)>,
    /// Whether a previous stage waits for the input's gradient.
    input_grad: bool,
    /// MP-3: whether weight gradients wait for the batch's last backward.
    defer: bool,
    /// Micro-batches per batch.
    micro: u32,
    forwards: HashMap<u32, Forward>,
    /// Per layer: the (input, output gradient) pairs awaiting their
    /// weight gradient.
    kept: Vec<Vec<(Tensor, Tensor)>>,
    /// Micro-batches whose pairs are kept.
    kept_mbs: HashSet<u32>,
}

impl MlpPass {
    /// Layers `first..end` of a model of `widths` (named `l{i}` as
    /// `mlp_stage` names them).
    pub(super) fn new(
        widths: &[i64],
        first: u32,
        end: u32,
        input_grad: bool,
        defer: bool,
        micro: u32,
    ) -> MlpPass {
        let layers: Vec<_> = (first as usize..end as usize)
            .map(|i| {
                let relu = i + 2 < widths.len();
                (format!("l{i}.weight"), format!("l{i}.bias"), relu)
            })
            .collect();
        MlpPass {
            kept: layers.iter().map(|_| Vec::new()).collect(),
            layers,
            input_grad,
            defer,
            micro: micro.max(1),
            forwards: HashMap::new(),
            kept_mbs: HashSet::new(),
        }
    }

    /// Micro-batches whose activations the stage holds (MP-3: kept pairs
    /// count until their weight gradient is added).
    pub(super) fn alive(&self) -> usize {
        let mut mbs: HashSet<u32> = self.forwards.keys().copied().collect();
        mbs.extend(self.kept_mbs.iter().copied());
        mbs.len()
    }

    /// Bytes of the activations and gradients the stage holds for its
    /// micro-batches (what autograd's graph would keep for them).
    pub(super) fn held_bytes(&self) -> u64 {
        let bytes = |t: &Tensor| (t.numel() * t.kind().elt_size_in_bytes()) as u64;
        let fwd: u64 = self
            .forwards
            .values()
            .map(|f| f.acts.iter().chain(&f.seed).map(bytes).sum::<u64>())
            .sum();
        let kept: u64 = self
            .kept
            .iter()
            .flatten()
            .map(|(x, g)| bytes(x) + bytes(g))
            .sum();
        fwd + kept
    }

    /// Each layer's weight and bias, looked up in the stage's store once
    /// per pass (a checkpoint's restore may have replaced them).
    fn params(&self, vs: &tch::nn::VarStore) -> Result<Vec<(Tensor, Tensor)>, String> {
        let vars = vs.variables();
        let get = |n: &String| vars.get(n).map(Tensor::shallow_clone);
        self.layers
            .iter()
            .map(|(w, b, _)| match (get(w), get(b)) {
                (Some(w), Some(b)) => Ok((w, b)),
                _ => Err(format!("the stage has no variables {w} and {b}")),
            })
            .collect()
    }

    /// Micro-batch `mb`'s forward: the stage's output.
    pub(super) fn forward(
        &mut self,
        vs: &tch::nn::VarStore,
        mb: u32,
        x: Tensor,
    ) -> Result<Tensor, String> {
        let mut acts = vec![x];
        let params = self.params(vs)?;
        tch::no_grad(|| -> Result<(), String> {
            for (i, (_, _, relu)) in self.layers.iter().enumerate() {
                let (w, b) = &params[i];
                let z = acts[i].f_linear(w, Some(b)).map_err(|e| e.to_string())?;
                acts.push(if *relu { z.relu() } else { z });
            }
            Ok(())
        })?;
        let out = acts.last().map(Tensor::shallow_clone).unwrap_or_default();
        self.forwards.insert(mb, Forward { acts, seed: None });
        Ok(out)
    }

    /// The last stage's loss for `mb` from its `logits`: its mean
    /// cross-entropy; the gradient the backward starts from is that of
    /// the loss weighted `1/m` (gradients add up to the batch's).
    pub(super) fn loss(&mut self, mb: u32, logits: &Tensor, labels: &[i64]) -> f64 {
        let logits = logits.detach().set_requires_grad(true);
        let loss = logits.cross_entropy_for_logits(&Tensor::from_slice(labels));
        let value = loss.double_value(&[]);
        (loss / f64::from(self.micro)).backward();
        if let Some(f) = self.forwards.get_mut(&mb) {
            f.seed = Some(logits.grad());
        }
        value
    }

    /// Micro-batch `mb`'s backward from `grad`, the gradient of its output
    /// (`None`: from its loss). Returns its input's gradient (MP-1: an
    /// empty tensor where no previous stage needs it).
    pub(super) fn backward(
        &mut self,
        vs: &tch::nn::VarStore,
        mb: u32,
        grad: Option<Tensor>,
    ) -> Result<Tensor, String> {
        let fwd = self
            .forwards
            .remove(&mb)
            .ok_or(format!("no forward of micro-batch {mb} to go back through"))?;
        let mut g = match (grad, fwd.seed) {
            (Some(g), _) | (None, Some(g)) => g,
            (None, None) => return Err(format!("micro-batch {mb} has no loss to start from")),
        };
        let n = self.layers.len();
        let params = self.params(vs)?;
        let input_grad = tch::no_grad(|| -> Result<Tensor, String> {
            for i in (0..n).rev() {
                if self.layers[i].2 {
                    // As autograd's ReLU backward: zero where the output is.
                    g = fwd.acts[i + 1]
                        .f_threshold_backward(&g, 0.0)
                        .map_err(|e| e.to_string())?;
                }
                self.kept[i].push((fwd.acts[i].shallow_clone(), g.shallow_clone()));
                if i > 0 || self.input_grad {
                    g = g.f_mm(&params[i].0).map_err(|e| e.to_string())?;
                }
            }
            Ok(if self.input_grad {
                g
            } else {
                Tensor::zeros([0], (Kind::Float, g.device()))
            })
        })?;
        self.kept_mbs.insert(mb);
        Ok(input_grad)
    }

    /// After micro-batch `mb`'s backward (and after its input's gradient
    /// went to the previous stage, which waits for it): MP-3, its weight
    /// gradients, or deferred, at the batch's last backward (PP-1:
    /// backwards run in micro-batch order) those of the whole batch.
    pub(super) fn backward_done(&mut self, vs: &tch::nn::VarStore, mb: u32) -> Result<(), String> {
        if !self.defer || mb + 1 >= self.micro {
            self.add_weight_grads(vs)?;
        }
        Ok(())
    }

    /// Whether `mb`'s [`Self::backward_done`] adds the whole batch's weight
    /// gradients (MP-3, deferred): work that may wait for the step.
    pub(super) fn ends_batch(&self, mb: u32) -> bool {
        self.defer && mb + 1 >= self.micro
    }

    /// The weight gradients still kept, added now (none: nothing to do).
    pub(super) fn flush(&mut self, vs: &tch::nn::VarStore) -> Result<(), String> {
        self.add_weight_grads(vs)
    }

    /// MP-2: every kept pair's weight and bias gradients, one product per
    /// layer, added to the variables' gradients.
    fn add_weight_grads(&mut self, vs: &tch::nn::VarStore) -> Result<(), String> {
        if self.kept_mbs.is_empty() {
            return Ok(());
        }
        let params = self.params(vs)?;
        for (i, (w, b)) in params.iter().enumerate() {
            let pairs = std::mem::take(&mut self.kept[i]);
            if pairs.is_empty() {
                continue;
            }
            let (mut gw, mut gb) = (defined_grad(w)?, defined_grad(b)?);
            let stack = |pick: fn(&(Tensor, Tensor)) -> &Tensor| {
                let parts: Vec<&Tensor> = pairs.iter().map(pick).collect();
                Tensor::f_cat(&parts, 0).map_err(|e| e.to_string())
            };
            let (x, g) = (stack(|p| &p.0)?, stack(|p| &p.1)?);
            tch::no_grad(|| -> Result<(), String> {
                // In place: the returned handle is `gw` itself.
                let _ = gw.f_addmm_(&g.tr(), &x).map_err(|e| e.to_string())?;
                let db = g
                    .f_sum_dim_intlist(0i64, false, Kind::Float)
                    .map_err(|e| e.to_string())?;
                let _ = gb.f_add_(&db).map_err(|e| e.to_string())?;
                Ok(())
            })?;
        }
        self.kept_mbs.clear();
        Ok(())
    }

    /// Drops whatever a batch left (a failed one).
    pub(super) fn clear(&mut self) {
        self.forwards.clear();
        self.kept.iter_mut().for_each(Vec::clear);
        self.kept_mbs.clear();
    }
}

/// `v`'s gradient, made (zeros) if it has none yet: the optimizer and the
/// replicas' ring read the variables' gradients.
fn defined_grad(v: &Tensor) -> Result<Tensor, String> {
    let g = v.grad();
    if g.defined() {
        return Ok(g);
    }
    // A gradient only autograd can attach: one backward of nothing.
    (v.sum(v.kind()) * 0.0)
        .f_backward()
        .map_err(|e| e.to_string())?;
    Ok(v.grad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{self, Module, VarStore};

    /// Layers `first..end` of an MLP of `widths`, named as `mlp_stage`
    /// names them, and the same layers as an autograd `Sequential`.
    fn stage(widths: &[i64], first: usize, end: usize) -> (VarStore, nn::Sequential) {
        tch::manual_seed(7);
        let vs = VarStore::new(tch::Device::Cpu);
        let mut net = nn::seq();
        for i in first..end {
            let l = nn::linear(
                vs.root() / format!("l{i}"),
                widths[i],
                widths[i + 1],
                Default::default(),
            );
            net = net.add(l);
            if i + 2 < widths.len() {
                net = net.add_fn(|x| x.relu());
            }
        }
        (vs, net)
    }

    fn grads(vs: &VarStore) -> Vec<(String, Tensor)> {
        let mut v: Vec<_> = vs
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.grad().copy()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn close(a: &Tensor, b: &Tensor) -> bool {
        (a - b).abs().max().double_value(&[]) < 1e-5
    }

    /// MP-1..MP-3: two stages, micro-batch by micro-batch in GPipe's
    /// order, give autograd's gradients over the whole batch (and the
    /// input's, where asked for), deferred or not; deferred, every
    /// micro-batch counts as alive until the batch's last backward.
    #[test]
    fn mp_1_to_3_written_out_passes_equal_autograd_over_the_batch() {
        let widths = [6i64, 8, 7, 5, 3];
        let (m, rows) = (3u32, 4usize);
        let x = Tensor::randn(
            [(rows * m as usize) as i64, 6],
            (Kind::Float, tch::Device::Cpu),
        );
        let labels: Vec<i64> = (0..rows as i64 * i64::from(m)).map(|i| i % 3).collect();
        // Autograd over the whole batch: layers 0..2, then 2..4.
        let (va, na) = stage(&widths, 0, 2);
        let (vb, nb) = stage(&widths, 2, 4);
        let input = x.copy().set_requires_grad(true);
        let logits = nb.forward(&na.forward(&input));
        logits
            .cross_entropy_for_logits(&Tensor::from_slice(&labels))
            .backward();
        let (want_a, want_b, want_in) = (grads(&va), grads(&vb), input.grad());
        for defer in [false, true] {
            let (va, _) = stage(&widths, 0, 2);
            let (vb, _) = stage(&widths, 2, 4);
            // Deferred, the first stage is told nobody needs its input's.
            let mut a = MlpPass::new(&widths, 0, 2, !defer, defer, m);
            let mut b = MlpPass::new(&widths, 2, 4, true, defer, m);
            for mb in 0..m {
                let xs = x.narrow(0, (mb as usize * rows) as i64, rows as i64);
                let ys = &labels[mb as usize * rows..(mb as usize + 1) * rows];
                let out = b.forward(&vb, mb, a.forward(&va, mb, xs).unwrap()).unwrap();
                b.loss(mb, &out, ys);
            }
            assert_eq!(a.alive(), m as usize);
            let mut input_grads = Vec::new();
            for mb in 0..m {
                let g = b.backward(&vb, mb, None).unwrap();
                b.backward_done(&vb, mb).unwrap();
                input_grads.push(a.backward(&va, mb, Some(g)).unwrap());
                a.backward_done(&va, mb).unwrap();
                let left = match defer {
                    true if mb + 1 < m => m as usize,
                    true => 0,
                    false => (m - mb - 1) as usize,
                };
                assert_eq!(
                    a.alive(),
                    left,
                    "MP-3 after the backward of {mb} (defer {defer})"
                );
            }
            for ((n, want), (_, got)) in want_a
                .iter()
                .chain(&want_b)
                .zip(grads(&va).into_iter().chain(grads(&vb)))
            {
                assert!(close(want, &got), "{n} (defer {defer})");
            }
            if defer {
                assert!(
                    input_grads.iter().all(|g| g.numel() == 0),
                    "MP-1: none wanted"
                );
            } else {
                assert!(
                    close(&want_in, &Tensor::cat(&input_grads, 0)),
                    "the input's gradient"
                );
            }
        }
    }
}
