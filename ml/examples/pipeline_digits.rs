//! Pipeline-parallel training of the 8×8 digits on an embedded cluster:
//! `cargo run --release -p prism-ml --example pipeline_digits [-- --gpipe]
//! [--replicas DP] [--hidden H]`. A 64-128-128-10 MLP (hidden width H)
//! cut into 2 stage actors, each batch of 32 split into 4 micro-batches
//! under 1F1B (or GPipe), then the held-out accuracy and the most
//! micro-batches any stage held at once. With `--replicas DP`, DP copies of
//! the pipeline each take a batch per step and average every stage's
//! gradients through a ring between the stage's copies.

use prism_ml::pipeline::{PipelineTrainer, Schedule};
use prism_ml::recipes::{self, MlpConfig};

fn main() -> anyhow::Result<()> {
    let _c = prism::init()?;
    let schedule = if std::env::args().any(|a| a == "--gpipe") {
        Schedule::GPipe
    } else {
        Schedule::OneFOneB
    };
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: i64| -> anyhow::Result<i64> {
        match args.iter().position(|a| a == name) {
            None => Ok(default),
            Some(i) => args
                .get(i + 1)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("{name} wants a number")),
        }
    };
    let replicas = flag("--replicas", 1)?.max(1) as u32;
    let hidden = flag("--hidden", 128)?.max(1);
    let (train, test) = prism_ml::data::digits(128)?
        .shuffle(2024)?
        .train_test_split(0.2, 7)?;
    let cfg = MlpConfig {
        layers: vec![64, hidden, hidden, 10],
        epochs: 10,
        batch_size: 32,
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
        seed: 1,
        cuda: false,
    };
    let r = PipelineTrainer::new(cfg.clone(), 2, 4, schedule)
        .replicas(replicas)
        // Every replica's stages on this machine's CPUs together.
        .stage_cpus(1.0 / f64::from(replicas))
        .dataset(train)
        .fit()?;
    let (_, net) = recipes::load_flat(&cfg, &r.output)?;
    let acc = recipes::accuracy(&net, &test)?;
    let peak = r.peak_alive.iter().flatten().max().copied().unwrap_or(0);
    let mut ms = r.step_ms.clone();
    ms.sort_by(f64::total_cmp);
    println!(
        "{schedule:?}, {replicas} × 2 stages × 4 micro-batches: {} steps, median {:.1} ms a step, at most {peak} micro-batches alive on a stage",
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
