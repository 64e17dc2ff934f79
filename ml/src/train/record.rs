//! What a training run records about itself without the user writing a
//! line: the trainer's settings, the loop's config (a JSON object is
//! flattened into `config.<key>`), the data set's size and version, the job binary's
//! content hash and the source tree's git commit (and whether it was
//! dirty), when known. The head keeps them with the run (`prism runs`).

use super::ScalingConfig;
use crate::data::Dataset;

/// `config.<key>` for each top-level key of a JSON object; otherwise the
/// config's length and hash.
pub(crate) fn config_params(config: &[u8]) -> Vec<(String, String)> {
    match serde_json::from_slice::<serde_json::Value>(config) {
        Ok(serde_json::Value::Object(m)) => m
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (format!("config.{k}"), v)
            })
            .collect(),
        _ if config.is_empty() => Vec::new(),
        _ => vec![
            ("config.bytes".into(), config.len().to_string()),
            (
                "config.sha256".into(),
                hex(&sha256(config))[..16].to_string(),
            ),
        ],
    }
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    // The same hash the raylets name job binaries by.
    prism::raylet::workers::sha256(bytes).to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The source tree's commit and dirty flag (`git` in the working
/// directory), or `PRISM_GIT_COMMIT` when set; nothing when unknown.
fn git() -> Vec<(String, String)> {
    if let Ok(c) = std::env::var("PRISM_GIT_COMMIT") {
        return vec![("code.git_commit".into(), c)];
    }
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match run(&["rev-parse", "HEAD"]) {
        Some(commit) if !commit.is_empty() => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            vec![
                ("code.git_commit".into(), commit),
                ("code.git_dirty".into(), dirty.to_string()),
            ]
        }
        _ => Vec::new(),
    }
}

/// Everything a `DdpTrainer` run records at its start.
pub(crate) fn trainer_params(
    loop_name: &str,
    scaling: &ScalingConfig,
    config: &[u8],
    dataset: Option<&Dataset>,
    checkpoint_every: u64,
    max_failures: u32,
) -> Vec<(String, String)> {
    let mut p = vec![
        ("trainer".to_string(), "DdpTrainer".to_string()),
        ("loop".into(), loop_name.to_string()),
        (
            "scaling.num_workers".into(),
            scaling.num_workers.to_string(),
        ),
        (
            "scaling.cpus_per_worker".into(),
            scaling.cpus_per_worker.to_string(),
        ),
        (
            "scaling.gpus_per_worker".into(),
            scaling.gpus_per_worker.to_string(),
        ),
        ("checkpoint_every".into(), checkpoint_every.to_string()),
        ("max_failures".into(), max_failures.to_string()),
    ];
    if let Some(ds) = dataset {
        p.push(("dataset.rows".into(), ds.count().to_string()));
        p.push(("dataset.blocks".into(), ds.blocks().len().to_string()));
        match ds.version() {
            Ok(v) => p.push(("dataset.version".into(), v)),
            Err(e) => tracing::debug!("no dataset version: {e}"),
        }
    }
    p.extend(config_params(config));
    if let Ok(exe) = std::env::current_exe().and_then(std::fs::read) {
        p.push(("code.binary_hash".into(), hex(&sha256(&exe))));
    }
    p.extend(git());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_config_is_flattened_and_other_bytes_are_fingerprinted() {
        let p = config_params(br#"{"lr": 0.05, "layers": [64, 10], "name": "mlp"}"#);
        assert!(p.contains(&("config.lr".into(), "0.05".into())));
        assert!(p.contains(&("config.layers".into(), "[64,10]".into())));
        assert!(p.contains(&("config.name".into(), "mlp".into())));
        let p = config_params(&[1, 2, 3]);
        assert_eq!(p[0], ("config.bytes".into(), "3".into()));
        assert_ne!(config_params(&[1, 2, 4])[1], p[1]);
        assert!(config_params(&[]).is_empty());
    }
}
