//! Pipeline-parallel training of the 8×8 digits on an embedded cluster:
//! `cargo run --release -p prism-ml --example pipeline_digits [-- --gpipe]`.
//! A 64-128-128-10 MLP cut into 2 stage actors, each batch of 32 split into
//! 4 micro-batches under 1F1B (or GPipe), then the held-out accuracy and
//! the most micro-batches any stage held at once.

use prism_ml::pipeline::{PipelineTrainer, Schedule};
use prism_ml::recipes::{self, MlpConfig};

fn main() -> anyhow::Result<()> {
    let _c = prism::init()?;
    let schedule = if std::env::args().any(|a| a == "--gpipe") {
        Schedule::GPipe
    } else {
        Schedule::OneFOneB
    };
    let (train, test) = prism_ml::data::digits(128)?
        .shuffle(2024)?
        .train_test_split(0.2, 7)?;
    let cfg = MlpConfig {
        layers: vec![64, 128, 128, 10],
        epochs: 10,
        batch_size: 32,
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
        seed: 1,
        cuda: false,
    };
    let r = PipelineTrainer::new(cfg.clone(), 2, 4, schedule)
        .dataset(train)
        .fit()?;
    let (_, net) = recipes::load_flat(&cfg, &r.output)?;
    let acc = recipes::accuracy(&net, &test)?;
    let peak = r.peak_alive.iter().flatten().max().copied().unwrap_or(0);
    let mut ms = r.step_ms.clone();
    ms.sort_by(f64::total_cmp);
    println!(
        "{schedule:?}, 2 stages × 4 micro-batches: {} steps, median {:.1} ms a step, at most {peak} micro-batches alive on a stage",
        r.losses.len(),
        ms.get(ms.len() / 2).copied().unwrap_or(0.0)
    );
    println!(
        "test accuracy {:.1}% on {} held-out digits",
        acc * 100.0,
        test.count()
    );
    Ok(())
}
