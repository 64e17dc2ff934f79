//! User-defined pipeline models: a function that builds each stage's
//! layers, registered by name with [`crate::pipeline_model!`] (as
//! [`crate::train_loop!`] registers a training loop) so that every stage
//! actor, in its own process, builds its own part of the same model.
//!
//! ```no_run
//! use prism_ml::pipeline::{PipelineTrainer, Schedule};
//! use tch::nn;
//!
//! /// Two stages: a tanh block, then a classifier.
//! fn tanh_net(p: &nn::Path, stage: u32, _stages: u32) -> nn::Sequential {
//!     match stage {
//!         0 => nn::seq()
//!             .add(nn::linear(p / "in", 64, 32, Default::default()))
//!             .add_fn(|x| x.tanh()),
//!         _ => nn::seq().add(nn::linear(p / "out", 32, 10, Default::default())),
//!     }
//! }
//! prism_ml::pipeline_model!(tanh_net);
//!
//! # fn main() -> prism_ml::Result<()> {
//! # let _c = prism::init()?;
//! # let (train, _) = prism_ml::data::digits(128)?.train_test_split(0.2, 7)?;
//! # let cfg = prism_ml::recipes::MlpConfig { layers: vec![64, 10], epochs: 1, batch_size: 32,
//! #     lr: 0.1, momentum: 0.9, weight_decay: 0.0, seed: 1, cuda: false };
//! let r = PipelineTrainer::new(cfg, 2, 4, Schedule::OneFOneB)
//!     .model("tanh_net")
//!     .dataset(train)
//!     .fit()?;
//! let (_vs, net) = prism_ml::pipeline::load_model("tanh_net", 2, 1, &r.output)?;
//! # Ok(()) }
//! ```
//!
//! Stage `s` starts from the weights the builder makes after
//! `tch::manual_seed(seed + s)`, under the path `s<s>`, in its process and
//! in [`whole_model`] alike, so a trained pipeline loads into one process.

use crate::{MlError, Result};
use tch::nn::{self, VarStore};

/// A pipeline model: `build(path, stage, stages)` returns stage `stage`'s
/// layers (of `stages`), made under `path`.
#[derive(Debug)]
pub struct StageModelRegistration {
    /// The function's name.
    pub name: &'static str,
    /// The builder.
    pub build: fn(&nn::Path, u32, u32) -> nn::Sequential,
}

inventory::collect!(StageModelRegistration);

/// Registers a pipeline model builder `fn(&nn::Path, stage: u32, stages:
/// u32) -> nn::Sequential` under its name, for
/// [`super::PipelineTrainer::model`].
#[macro_export]
macro_rules! pipeline_model {
    ($f:ident) => {
        $crate::__private::inventory::submit! {
            $crate::pipeline::StageModelRegistration { name: stringify!($f), build: $f }
        }
    };
}

/// The registered model called `name`.
pub fn find_model(name: &str) -> Result<&'static StageModelRegistration> {
    let all: Vec<&StageModelRegistration> = inventory::iter::<StageModelRegistration>().collect();
    all.iter().copied().find(|r| r.name == name).ok_or_else(|| {
        let known: Vec<&str> = all.iter().map(|r| r.name).collect();
        MlError::Train(format!(
            "no pipeline model named {name:?} is registered with prism_ml::pipeline_model! \
             (registered: {known:?})"
        ))
    })
}

/// Stage `stage`'s layers of model `reg` in `vs`, from its starting
/// weights (seeded with `seed + stage`).
pub(super) fn build_stage(
    reg: &StageModelRegistration,
    vs: &VarStore,
    stage: u32,
    stages: u32,
    seed: i64,
) -> nn::Sequential {
    tch::manual_seed(seed + i64::from(stage));
    (reg.build)(&(vs.root() / format!("s{stage}")), stage, stages)
}

/// The whole model `name` of `stages` stages in one process, from the
/// weights a pipeline run of it starts from.
pub fn whole_model(name: &str, stages: u32, seed: i64) -> Result<(VarStore, nn::Sequential)> {
    let reg = find_model(name)?;
    let vs = VarStore::new(tch::Device::Cpu);
    let mut net = nn::seq();
    for s in 0..stages {
        let stage = build_stage(reg, &vs, s, stages, seed);
        net = net.add(stage);
    }
    Ok((vs, net))
}

/// The whole model `name` with a pipeline run's weights (its `output`).
pub fn load_model(
    name: &str,
    stages: u32,
    seed: i64,
    output: &[u8],
) -> Result<(VarStore, nn::Sequential)> {
    let (vs, net) = whole_model(name, stages, seed)?;
    crate::recipes::copy_flat(&vs, output)?;
    Ok((vs, net))
}
