//! `prism microbenchmark` runs Ray's workloads on the embedded cluster (the
//! `prism` binary is the job; its workers are `prism` in worker mode).

use prism_test_support::*;
use std::process::{Command, Stdio};

/// `prism microbenchmark <args>` on its own embedded cluster.
fn microbenchmark(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(prism_bin())
        .arg("microbenchmark")
        .args(args)
        .env("PRISM_TEMP_DIR", dir.path())
        .envs(envs.iter().copied())
        .env_remove("PRISM_ADDRESS")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn microbenchmark_runs_a_filtered_workload_and_prints_json() {
    let out = microbenchmark(
        &[
            "--filter",
            "1:1 actor calls sync",
            "--duration",
            "0.1",
            "--trials",
            "2",
            "--json",
        ],
        &[],
    );
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

/// The scale envelope runs only when asked for, here at toy sizes: each
/// row is there, every task's result was right, every actor answered.
#[test]
fn microbenchmark_scale_rows_run_when_asked_for() {
    let out = microbenchmark(
        &["--filter", "scale", "--json"],
        &[
            ("PRISM_SCALE_OBJECTS", "500"),
            ("PRISM_SCALE_TASKS", "1000"),
            ("PRISM_SCALE_ACTORS", "3"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    for want in [
        "scale: 500 small objects alive, puts/s",
        "scale: 100 store objects (101 KiB) alive, puts/s",
        "scale: 1000 tasks from one driver, run and gathered/s",
        "scale: 1000 tasks from one driver, bytes of RSS per queued task",
    ] {
        assert!(names.contains(&want), "{want} in {names:#?}");
    }
    let actors = rows
        .iter()
        .find(|r| r["name"] == "scale: actors running at once")
        .expect("the actors row");
    assert_eq!(actors["mean"], 3.0, "{stderr}");
    assert!(
        stderr.contains("3 actors running (all 3 started)"),
        "{stderr}"
    );
}
