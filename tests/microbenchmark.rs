//! `prism microbenchmark` runs Ray's workloads on the embedded cluster (the
//! `prism` binary is the job; its workers are `prism` in worker mode).

use prism_test_support::*;
use std::process::{Command, Stdio};

#[test]
fn microbenchmark_runs_a_filtered_workload_and_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(prism_bin())
        .args([
            "microbenchmark",
            "--filter",
            "1:1 actor calls sync",
            "--duration",
            "0.1",
            "--trials",
            "2",
            "--json",
        ])
        .env("PRISM_TEMP_DIR", dir.path())
        .env_remove("PRISM_ADDRESS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows
        .iter()
        .find(|r| r["name"] == "1:1 actor calls sync")
        .expect("the row");
    assert!(row["mean"].as_f64().unwrap() > 0.0, "{rows:#?}");
    assert_eq!(rows.len(), 1, "the filter keeps one workload: {rows:#?}");
    assert!(
        stderr.contains("[1] 1:1 actor calls sync"),
        "progress is shown: {stderr}"
    );
}
