//! A head and three raylets as separate processes; `prism status --json`
//! shows each node with the resources it was given.

use prism_test_support::*;
use serde_json::Value;

fn by_cpus(nodes: &[Value], cpus: f64) -> Value {
    nodes
        .iter()
        .find(|n| n["resources"]["total"]["CPU"] == cpus)
        .unwrap_or_else(|| panic!("no node with {cpus} CPUs in {nodes:#?}"))
        .clone()
}

#[test]
fn cluster_head_and_three_raylets_report_their_resources() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--head-only"]);
    let _a = sb.start_raylet(
        "a",
        &head,
        &["--num-cpus", "2", "--num-gpus", "4", "--labels", "zone=a"],
    );
    let _b = sb.start_raylet(
        "b",
        &head,
        &[
            "--num-cpus",
            "3",
            "--memory",
            "2G",
            "--resources",
            r#"{"accel": 4}"#,
        ],
    );
    let _c = sb.start_raylet(
        "c",
        &head,
        &["--num-cpus", "0.5", "--labels", "zone=b,disk=ssd"],
    );

    let status = sb.status();
    let nodes = status["nodes"].as_array().unwrap().clone();
    assert_eq!(nodes.len(), 3, "{status:#}");
    assert!(nodes.iter().all(|n| n["state"] == "alive"), "{status:#}");
    assert_eq!(status["totals"]["alive_nodes"], 3);

    let a = by_cpus(&nodes, 2.0);
    assert_eq!(a["resources"]["total"]["GPU"], 4.0);
    assert_eq!(a["gpus"].as_array().unwrap().len(), 4);
    assert_eq!(a["labels"]["zone"], "a");
    let b = by_cpus(&nodes, 3.0);
    assert_eq!(b["resources"]["total"]["accel"], 4.0);
    assert_eq!(b["resources"]["total"]["memory"], 2u64 << 30);
    assert!(b["resources"]["total"]["GPU"].is_null());
    let c = by_cpus(&nodes, 0.5);
    assert_eq!(c["labels"]["disk"], "ssd");
    assert_eq!(status["totals"]["total"]["CPU"], 5.5);
    assert_eq!(status["totals"]["total"]["GPU"], 4.0);
    let ids: std::collections::BTreeSet<_> = nodes
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| id.starts_with("n-")));

    // The human table names every node.
    let table = String::from_utf8(sb.run(&["status"]).stdout).unwrap();
    for n in &nodes {
        let short = &n["node_id"].as_str().unwrap()[..10];
        assert!(table.contains(short), "{table}");
    }
}

#[test]
fn cluster_head_runs_a_raylet_for_its_machine() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "4"]);
    let status = sb.status();
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{status:#}");
    assert_eq!(nodes[0]["is_head"], true);
    assert_eq!(nodes[0]["resources"]["total"]["CPU"], 4.0);
    assert_eq!(nodes[0]["node_id"].as_str().unwrap(), head.node_id());
}

#[test]
fn cluster_bad_start_arguments_fail_before_any_daemon_starts() {
    let sb = Sandbox::new();
    let out = sb.run(&["start", "--head", "--port", "0", "--resources", "{not json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resources"));
    let out = sb.run(&[
        "start",
        "--head",
        "--port",
        "0",
        "--resources",
        r#"{"CPU": 2}"#,
        "--block",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("built-in"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sb.run(&["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no running Prism cluster"));
    assert!(daemon_pids(sb.temp()).is_empty());
}
