//! The README's ML block, as a program CI runs (`ml/tests/examples_run.rs`);
//! `tests/readme_tour.rs` checks the README's copy of the region below.
//! `cargo run -p prism-ml --example readme_ml` trains 2 DDP workers on the
//! 8×8 digits on an embedded cluster and scores the held-out set.

fn main() -> anyhow::Result<()> {
    let ckpt = tempfile::tempdir()?;
    readme::train(ckpt.path())
}

// Kept as the README shows it, column-aligned comments and all.
#[rustfmt::skip]
mod readme {
    pub fn train(ckpt: &std::path::Path) -> anyhow::Result<()> {
        // readme:ml
        use prism_ml::data::digits;
        use prism_ml::recipes::{self, MlpConfig};
        use prism_ml::train::{DdpTrainer, ScalingConfig};

        let _c = prism::init()?;
        let (train, test) = digits(128)?.shuffle(2024)?.train_test_split(0.2, 7)?;  // blocks in the object store
        let config = MlpConfig { layers: vec![64, 128, 10], epochs: 10, batch_size: 32,
                                 lr: 0.05, momentum: 0.9, weight_decay: 1e-4, seed: 1,
                                 cuda: false };
        let result = DdpTrainer::new("mlp_classifier", ScalingConfig::new(2))?      // 2 worker actors in a PACK group
            .config(config.to_bytes())
            .dataset(train)                                 // split(2): equal shards, local blocks first
            .checkpoint(ckpt, 100)                          // model + optimizer state every 100 steps
            .max_failures(2)                                // a dead worker: restart from the checkpoint
            .progress(None)
            .fit()?;
        let (_, net) = recipes::load_flat(&config, &result.output)?;   // rank 0's weights
        let accuracy = recipes::accuracy(&net, &test)?;
        println!("{} steps, test accuracy {:.1}%", result.metrics.len(), accuracy * 100.0);
        // readme:end
        anyhow::ensure!(accuracy > 0.9, "accuracy {accuracy} after 10 epochs");
        println!("ML OK");
        Ok(())
    }
}
