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
