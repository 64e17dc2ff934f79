//! Prism's main demo: two DDP workers (actors in their own processes, in
//! a PACK placement group on an embedded single-machine cluster) train an
//! MLP on the 8×8 handwritten digits shipped in the repository, with a
//! progress bar and checkpoints, then the driver scores the held-out set.
//! The run is recorded on the head (`prism runs list`), registered as the
//! next version of the `digits` model, and promoted to `digits@champion`
//! if it scores at least as well as the version holding it.
//!
//!     cargo run --release -p ddp-digits [-- --workers N --epochs E]
//!
//! With `--gpu` each worker holds one GPU and trains on it; built with
//! `--features cuda` the gradients are then averaged by NCCL.

use prism_ml::data::digits;
use prism_ml::recipes::{self, MlpConfig};
use prism_ml::train::{DdpTrainer, ScalingConfig};
use std::time::Instant;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let workers = arg("--workers", 2) as usize;
    let epochs = arg("--epochs", 30);
    let gpu = std::env::args().any(|a| a == "--gpu");
    let t0 = Instant::now();
    let cluster = prism::init()?;
    println!(
        "embedded cluster up in {:.0} ms (node {})",
        t0.elapsed().as_secs_f64() * 1e3,
        cluster.node_id()
    );
    let (train, test) = digits(128)?.shuffle(2024)?.train_test_split(0.2, 7)?;
    println!(
        "digits: {} training rows, {} test rows, in the object store",
        train.count(),
        test.count()
    );
    let cfg = MlpConfig {
        layers: vec![64, 128, 10],
        epochs,
        batch_size: 32,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 1e-4,
        seed: 1,
        cuda: gpu,
    };
    let steps = epochs * (train.count() / workers as u64 / cfg.batch_size as u64);
    let ckpt = std::env::temp_dir().join(format!("prism-ddp-digits-{}", std::process::id()));
    let t = Instant::now();
    let mut scaling = ScalingConfig::new(workers);
    if gpu {
        scaling.gpus_per_worker = 1.0;
    }
    let result = DdpTrainer::new("mlp_classifier", scaling)?
        .config(cfg.to_bytes())
        .dataset(train)
        .checkpoint(&ckpt, 100)
        .max_failures(2)
        .progress(Some(steps))
        .fit()?;
    let secs = t.elapsed().as_secs_f64();
    let last = result
        .metrics
        .last()
        .map(|m| m.values.clone())
        .unwrap_or_default();
    println!(
        "trained {} steps with {workers} workers in {secs:.1} s ({:.2} ms/step on rank 0); last {:?}",
        result.metrics.len(),
        result.seconds * 1e3 / result.metrics.len().max(1) as f64,
        last
    );
    if let Some(c) = &result.checkpoint {
        println!("newest checkpoint: {}", c.display());
    }
    // Scored on the driver's CPU.
    let cpu = MlpConfig { cuda: false, ..cfg };
    let (_, net) = recipes::load_flat(&cpu, &result.output)?;
    let acc = recipes::accuracy(&net, &test)?;
    println!(
        "test accuracy: {:.2}% on {} held-out digits",
        acc * 100.0,
        test.count()
    );
    let _ = std::fs::remove_dir_all(&ckpt);
    if acc < 0.95 {
        anyhow::bail!("accuracy {acc:.4} is below the 95% aim");
    }
    // The run was recorded on the head as it trained; its weights become
    // the next version of `digits`, and take `champion` if they score at
    // least as well on the held-out set as the version holding it.
    let weights = std::env::temp_dir().join(format!("prism-{}.weights", result.run_id));
    std::fs::write(&weights, &result.output)?;
    let card = "intent: classify 8x8 handwritten digits\n\
                training data: the bundled digits, 80% split (seed 2024)\n\
                evaluation: accuracy on the 20% held out\n\
                limitations: tiny grayscale images only";
    let version = prism::models::register(
        "digits",
        &result.run_id,
        &weights.display().to_string(),
        card,
    )?;
    match prism_ml::registry::promote("digits", version, "champion", &test) {
        Ok(p) => {
            println!(
            "run {} registered as digits v{version}; digits@champion is now v{version} ({:.2}%{})",
            result.run_id,
            p.challenger * 100.0,
            p.champion.map(|(v, a)| format!(" vs v{v}'s {:.2}%", a * 100.0)).unwrap_or_default()
        )
        }
        Err(prism_ml::MlError::Promotion(why)) => println!(
            "run {} registered as digits v{version}; {why}",
            result.run_id
        ),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
