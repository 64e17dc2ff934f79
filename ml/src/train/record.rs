//! What a training run records about itself without the user writing a
//! line: the trainer's settings, the loop's config (a JSON object is
//! flattened into `config.<key>`), the data set's size and version, the job binary's
//! content hash and the source tree's git commit (and whether it was
//! dirty), when known. The head keeps them with the run (`prism runs`).

use super::ScalingConfig;
use crate::data::Dataset;
use prism::raylet::workers::{file_hash, hex, sha256};

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

/// A fresh run id for `name`.
pub(crate) fn new_run_id(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}-{:08x}", nanos as u32)
}

/// What a trainer of the MLP recipe records at its start (the pipeline
/// trainer and the parameter server): `extra`, the recipe's config, the
/// data set's size and version, the code.
pub(crate) fn mlp_params(
    trainer: &str,
    cfg: &crate::recipes::MlpConfig,
    dataset: Option<&Dataset>,
    extra: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let mut p = vec![("trainer".to_string(), trainer.to_string())];
    p.extend(extra);
    p.extend(data_params(dataset));
    p.extend(config_params(&cfg.to_bytes()));
    p.extend(code_params());
    p
}

/// Whether trainers record their runs: yes unless `PRISM_TRACK` is `0`
/// or `off` (for measuring what tracking costs).
pub(crate) fn enabled() -> bool {
    !matches!(std::env::var("PRISM_TRACK").as_deref(), Ok("0" | "off"))
}

/// Records `params` for a run starting now (a failure to record is only
/// logged: tracking never fails a run).
pub(crate) fn begin(run_id: &str, name: &str, params: Vec<(String, String)>) {
    if !enabled() {
        return;
    }
    if let Err(e) = prism::log_run_params(run_id, name, params, Vec::new()) {
        tracing::debug!("run params not recorded: {e}");
    }
}

/// Records how a run ended.
pub(crate) fn finish<T>(run_id: &str, name: &str, result: &crate::Result<T>) {
    if !enabled() {
        return;
    }
    let outcome = match result {
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = prism::end_run(run_id, name, outcome) {
        tracing::debug!("run end not recorded: {e}");
    }
}

/// Records a run's metric points.
pub(crate) fn points(run_id: &str, name: &str, points: Vec<prism::proto::runs::RunPoint>) {
    if !enabled() {
        return;
    }
    if let Err(e) = prism::report_run(run_id, name, points) {
        tracing::debug!("run metrics not recorded: {e}");
    }
}

fn data_params(dataset: Option<&Dataset>) -> Vec<(String, String)> {
    let mut p = Vec::new();
    if let Some(ds) = dataset {
        p.push(("dataset.rows".into(), ds.count().to_string()));
        p.push(("dataset.blocks".into(), ds.blocks().len().to_string()));
        match ds.version() {
            Ok(v) => p.push(("dataset.version".into(), v)),
            Err(e) => tracing::debug!("no dataset version: {e}"),
        }
    }
    p
}

fn code_params() -> Vec<(String, String)> {
    let mut p = Vec::new();
    // The hash the raylets ship job binaries by (cached per file).
    if let Ok(h) = std::env::current_exe().and_then(|exe| file_hash(&exe)) {
        p.push(("code.binary_hash".into(), hex(&h)));
    }
    p.extend(git());
    p
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
    p.extend(data_params(dataset));
    p.extend(config_params(config));
    p.extend(code_params());
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
