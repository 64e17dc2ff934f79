//! The autoscaler with the local provider: a task needing `{"accel": 1}`,
//! which no running node has, makes it start a node of the file's `accel`
//! group; the task runs there; once that node has been idle for the
//! file's idle timeout it is removed; `prism down` stops the autoscaler
//! with the nodes.

use prism_test_support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[prism::remote]
fn where_am_i() -> String {
    prism::node_id().map(|n| n.to_string()).unwrap_or_default()
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    let _c = prism::init().unwrap();
    let t = Instant::now();
    let node = where_am_i::options()
        .resource("accel", 1.0)
        .remote()
        .unwrap();
    let node = node.get_timeout(Duration::from_secs(120)).unwrap();
    println!("RAN ON {node} AFTER {} ms", t.elapsed().as_millis());
    println!("ALL OK");
}

/// Kills every daemon of the cluster (and its autoscaler) on drop.
struct Reaper<'a>(&'a Sandbox, PathBuf);

impl Drop for Reaper<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["down", self.1.to_str().unwrap(), "-y"]);
        let nodes = self.0.temp().join("clusters/demo/nodes");
        for d in std::fs::read_dir(nodes).into_iter().flatten().flatten() {
            kill_daemons(&d.path());
        }
    }
}

fn nodes(sb: &Sandbox, file: &Path) -> Vec<Value> {
    let o = sb.run(&["status", "--cluster", file.to_str().unwrap(), "--json"]);
    serde_json::from_slice::<Value>(&o.stdout).unwrap_or_default()["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn alive_named(sb: &Sandbox, file: &Path, name: &str) -> Option<Value> {
    nodes(sb, file)
        .into_iter()
        .find(|n| n["name"] == name && n["state"] == "alive")
}

#[test]
fn launcher_autoscaler_starts_a_node_for_infeasible_demand_and_removes_it_when_idle() {
    let sb = Sandbox::new();
    let file = sb.temp().join("cluster.yaml");
    let yaml = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.yaml"))
        .unwrap()
        .replacen("min: 2", "min: 1", 1)
        .replace("idle_timeout_s: 60", "idle_timeout_s: 2");
    std::fs::write(&file, yaml).unwrap();
    let _reaper = Reaper(&sb, file.clone());
    let up = sb.run(&["up", file.to_str().unwrap(), "-y"]);
    let out = String::from_utf8_lossy(&up.stdout).into_owned();
    assert!(
        up.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(out.contains("autoscaler   started"), "{out}");
    assert!(alive_named(&sb, &file, "demo/accel-0").is_none());

    // The driver joins through the head node's raylet.
    let head_dir = sb.temp().join("clusters/demo/nodes/head");
    let session = std::fs::read_dir(&head_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("tasks.sock").exists())
        .expect("the head's session");
    let cluster: Value =
        serde_json::from_str(&std::fs::read_to_string(session.join("cluster.json")).unwrap())
            .unwrap();
    let mut envs: Vec<(String, String)> = sb.envs.clone();
    envs.push((
        "PRISM_ADDRESS".into(),
        cluster["head_address"].as_str().unwrap().into(),
    ));
    envs.push((
        "PRISM_RAYLET_SOCKET".into(),
        session.join("tasks.sock").display().to_string(),
    ));
    let mut job = Job::spawn("accel", &envs);
    let (ok, out) = job.finish(Duration::from_secs(120));
    assert!(ok && out.contains("ALL OK"), "{out}\n{}", job.stderr());
    let ran_on = out
        .lines()
        // (The test harness may have printed half a line before it.)
        .find_map(|l| l.split_once("RAN ON ").map(|(_, rest)| rest))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    println!("{}", out.lines().find(|l| l.contains("RAN ON")).unwrap());
    let accel = nodes(&sb, &file)
        .into_iter()
        .find(|n| n["node_id"] == ran_on.as_str())
        .unwrap_or_else(|| panic!("no node {ran_on}"));
    assert_eq!(accel["name"], "demo/accel-0", "{accel:#}");
    assert_eq!(accel["labels"]["pool"], "accel");

    // Idle for the timeout: removed (the cpu group keeps its min).
    let log_file = sb.temp().join("clusters/demo/autoscaler.log");
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();
    let removed = wait_until(Duration::from_secs(60), || {
        log().contains("removed accel-0") && alive_named(&sb, &file, "demo/accel-0").is_none()
    });
    let log = log();
    assert!(removed, "accel-0 is still up; autoscaler log:\n{log}");
    assert!(
        log.contains("launched accel-0") && log.contains("removed accel-0"),
        "{log}"
    );
    assert!(alive_named(&sb, &file, "demo/cpu-0").is_some(), "min stays");
    // It left by a drain (new work kept off it, its copies moved first).
    let gone = nodes(&sb, &file)
        .into_iter()
        .find(|n| n["node_id"] == ran_on.as_str())
        .unwrap_or_default();
    assert_eq!(gone["death_reason"], "drained (scale-down)", "{gone:#}");

    let info: Value = serde_json::from_str(
        &std::fs::read_to_string(sb.temp().join("clusters/demo/autoscaler.json")).unwrap(),
    )
    .unwrap();
    let scaler = info["pid"].as_u64().unwrap() as u32;
    assert!(process_running(scaler));
    let down = sb.run(&["down", file.to_str().unwrap(), "-y"]);
    assert!(down.status.success());
    assert!(!process_running(scaler), "down stops the autoscaler");
}
