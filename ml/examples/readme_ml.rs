//! The README's ML block, as a program CI runs (`ml/tests/examples_run.rs`);
//! `tests/readme_tour.rs` checks the README's copies of the regions below.
//! `cargo run -p prism-ml --example readme_ml` trains 2 DDP workers on the
//! 8×8 digits on an embedded cluster and scores the held-out set, then
//! masks a little click log's personal columns (the README's mask block).

fn main() -> anyhow::Result<()> {
    let ckpt = tempfile::tempdir()?;
    readme::train(ckpt.path())
}

/// The mask block's result, checked (on the cluster `train` started).
fn check_mask() -> anyhow::Result<()> {
    let (masked, ids) = readme::mask()?;
    let cells = |d: &prism_ml::data::Dataset| -> anyhow::Result<Vec<i64>> {
        Ok(d.blocks()[0].read()?.features::<i64>()?.to_vec())
    };
    let (m, back) = (cells(&masked)?, cells(&ids)?);
    let hidden = m[0] != 1001 && m[1] != 9_810_000 && m[2] == 0;
    anyhow::ensure!(hidden, "masked: {m:?}");
    anyhow::ensure!(back[0] == 1001 && back[3] == 1002, "unmasked: {back:?}");
    println!("MASK OK");
    Ok(())
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
        super::check_mask()
    }

    pub fn mask() -> anyhow::Result<(prism_ml::data::Dataset, prism_ml::data::Dataset)> {
        // readme:mask
        use prism_ml::data::{Dataset, Mask};

        let log = prism::Tensor::from_slice(&[3u64, 3], &[1001i64, 9_810_000, 34,       // [user id, phone, age]
                                                          1002, 9_810_001, 51,
                                                          1003, 9_810_002, 29])?;
        let masked = Dataset::from_tensors(&log, None, 3)?
            .mask(&[0], Mask::Tokenize)?    // same-type tokens, reversible with the key
            .mask(&[1], Mask::Hash)?        // HMAC under the namespace's key: joins still work
            .mask(&[2], Mask::Redact)?;     // zeros
        let ids = masked.unmask(&[0])?;     // the key: only for jobs whose owner holds pii:read
        // readme:end
        Ok((masked, ids))
    }
}
