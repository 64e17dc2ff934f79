//! SGD with momentum and weight decay, whose state can be checkpointed
//! (tch's own optimizers keep their state inside libtorch, out of reach).

use crate::Result;
use tch::nn::VarStore;
use tch::Tensor;

/// `v = momentum * v + (g + weight_decay * p); p -= lr * v` (PyTorch's SGD).
#[derive(Debug)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f64,
    /// Momentum (0 for plain SGD).
    pub momentum: f64,
    /// L2 penalty.
    pub weight_decay: f64,
    pub(super) velocity: Vec<Tensor>,
}

impl Sgd {
    /// A new optimizer (no state yet).
    pub fn new(lr: f64, momentum: f64, weight_decay: f64) -> Sgd {
        Sgd {
            lr,
            momentum,
            weight_decay,
            velocity: Vec::new(),
        }
    }

    /// Clears every trainable variable's gradient.
    pub fn zero_grad(&self, vs: &VarStore) {
        for mut v in vs.trainable_variables() {
            v.zero_grad();
        }
    }

    /// Updates every trainable variable from its gradient.
    pub fn step(&mut self, vs: &VarStore) -> Result<()> {
        let vars = vs.trainable_variables();
        if self.velocity.len() != vars.len() {
            self.velocity = vars.iter().map(|v| v.zeros_like()).collect();
        }
        tch::no_grad(|| -> Result<()> {
            for (p, v) in vars.iter().zip(self.velocity.iter_mut()) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                if step_in_place(p, &g, v, [self.lr, self.momentum, self.weight_decay]) {
                    continue;
                }
                let mut d = g.shallow_clone();
                if self.weight_decay != 0.0 {
                    d = d.f_add(&p.f_mul_scalar(self.weight_decay)?)?;
                }
                if self.momentum != 0.0 {
                    let _ = v.f_mul_scalar_(self.momentum)?.f_add_(&d)?;
                    d = v.shallow_clone();
                }
                let _ = p.shallow_clone().f_sub_(&d.f_mul_scalar(self.lr)?)?;
            }
            Ok(())
        })
    }

    /// The momentum buffers, for checkpoints.
    pub fn state(&self) -> &[Tensor] {
        &self.velocity
    }
}

/// The update as one pass over host memory, for contiguous CPU f32
/// tensors (libtorch's ops would allocate and fault in a temporary as
/// big as the weight for `lr * v`); false when it does not apply.
/// Written through raw pointers, the update does not bump autograd's
/// version counter: a graph kept across `step` (retain_graph) would not
/// notice the weights changed, as it would with in-place tensor ops.
fn step_in_place(p: &Tensor, g: &Tensor, v: &Tensor, [lr, m, wd]: [f64; 3]) -> bool {
    let fits = |t: &Tensor| {
        t.device() == tch::Device::Cpu
            && t.kind() == tch::Kind::Float
            && t.is_contiguous()
            && t.numel() == p.numel()
    };
    let distinct = p.data_ptr() != g.data_ptr()
        && p.data_ptr() != v.data_ptr()
        && g.data_ptr() != v.data_ptr();
    if !(fits(p) && fits(g) && fits(v) && distinct) {
        return false;
    }
    let n = p.numel();
    // SAFETY: three distinct (checked above) contiguous CPU f32 tensors of
    // `n` elements (a weight, its gradient, its momentum buffer), used on this thread only, under no_grad, between
    // backward() and the next forward; the slices end with this call.
    let (p, g, v) = unsafe {
        (
            std::slice::from_raw_parts_mut(p.data_ptr() as *mut f32, n),
            std::slice::from_raw_parts(g.data_ptr() as *const f32, n),
            std::slice::from_raw_parts_mut(v.data_ptr() as *mut f32, n),
        )
    };
    let (lr, m, wd) = (lr as f32, m as f32, wd as f32);
    for ((p, g), v) in p.iter_mut().zip(g).zip(v.iter_mut()) {
        let d = *g + wd * *p;
        if m != 0.0 {
            *v = m * *v + d;
            *p -= lr * *v;
        } else {
            *p -= lr * d;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::Sgd;
    use tch::nn::VarStore;
    use tch::{Device, Kind, Tensor};

    /// Two steps of loss = sum(c * p) from p0, by the formula.
    fn expected(p0: &[f64], c: &[f64], [lr, m, wd]: [f64; 3]) -> Vec<f64> {
        let mut out = Vec::new();
        for (&p, &c) in p0.iter().zip(c) {
            let (mut p, mut v) = (p, 0.0);
            for _ in 0..2 {
                v = m * v + (c + wd * p);
                p -= lr * v;
            }
            out.push(p);
        }
        out
    }

    fn two_steps(kind: Kind, hp: [f64; 3]) -> Vec<f64> {
        let mut vs = VarStore::new(Device::Cpu);
        let p = vs.root().var("p", &[4], tch::nn::Init::Const(0.0));
        vs.set_kind(kind);
        assert_eq!(
            p.kind(),
            kind,
            "the weight is {kind:?}, so {kind:?}'s path runs"
        );
        tch::no_grad(|| {
            p.shallow_clone()
                .copy_(&Tensor::from_slice(&[1.0, -2.0, 0.5, 3.0]))
        });
        let c = Tensor::from_slice(&[0.5, 1.0, -1.5, 2.0]).to_kind(kind);
        let mut opt = Sgd::new(hp[0], hp[1], hp[2]);
        for _ in 0..2 {
            opt.zero_grad(&vs);
            (&p * &c).sum(kind).backward();
            opt.step(&vs).unwrap();
        }
        Vec::<f64>::try_from(p.to_kind(Kind::Double)).unwrap()
    }

    #[test]
    fn the_in_place_f32_update_and_the_tensor_op_update_match_the_formula() {
        let hp = [0.1, 0.9, 0.01];
        let want = expected(&[1.0, -2.0, 0.5, 3.0], &[0.5, 1.0, -1.5, 2.0], hp);
        for kind in [Kind::Float, Kind::Double] {
            let got = two_steps(kind, hp);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{kind:?}: {got:?} vs {want:?}");
            }
        }
    }
}
