//! The state API on a real cluster (head with its raylet + raylet b, the
//! only node with resource `b_only`): a driver's long tasks show in
//! `prism list tasks --json` as running on b with their worker's pid (and
//! one that does not fit yet as queued), `--state` filters them, and an
//! object it put shows in `prism list objects --json` with its size.

use prism_test_support::*;
use serde_json::Value;
use std::time::Duration;

#[prism::remote]
fn sleepy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn hold_role() {
    let blob = prism::put(&vec![7u8; 1 << 20]).unwrap();
    println!("PUT {}", blob.id());
    let refs: Vec<_> = (0..3)
        .map(|_| {
            sleepy::options()
                .resource("b_only", 0.5)
                .remote(60_000u64)
                .unwrap()
        })
        .collect();
    for r in &refs {
        println!("TASK {}", r.id());
    }
    // Hold everything until the test has looked.
    check(hold_until_done(), "the test looked");
    println!("ALL OK");
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    let _c = prism::init().unwrap();
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "hold" => hold_role(),
        other => panic!("unknown role {other}"),
    }
}

fn list(sb: &Sandbox, args: &[&str]) -> Vec<Value> {
    let out = sb.run(args);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// `o-<hex>` (a result object) to `t-<hex>` (its task).
fn task_id(object: &str) -> String {
    format!("t-{}", object.trim_start_matches("o-"))
}

#[test]
fn cluster_list_tasks_and_objects() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "2"]);
    let b = sb.start_raylet(
        "b",
        &head,
        &["--num-cpus", "4", "--resources", r#"{"b_only": 1}"#],
    );
    assert!(wait_until(Duration::from_secs(10), || sb
        .nodes_in_state("alive")
        .len()
        == 2));
    let (mut job, done) = sb.held_driver("hold", &head, &head);
    let printed = wait_until(Duration::from_secs(60), || {
        job.stdout()
            .lines()
            .filter(|l| l.starts_with("TASK "))
            .count()
            == 3
    });
    assert!(printed, "{}", job.stdout());
    let out = job.stdout();
    let object = out
        .lines()
        .find_map(|l| l.split_once("PUT ").map(|(_, id)| id))
        .unwrap()
        .to_string();
    let tasks: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_once("TASK ").map(|(_, t)| t))
        .map(task_id)
        .collect();

    // Two tasks fit b's one `b_only`; they run there with a worker pid.
    let mut seen = Vec::new();
    let running_on_b = wait_until(Duration::from_secs(30), || {
        seen = list(&sb, &["list", "tasks", "--json"]);
        let running = seen
            .iter()
            .filter(|t| tasks.contains(&t["task_id"].as_str().unwrap_or_default().to_string()))
            .filter(|t| t["state"] == "running")
            .filter(|t| t["node_id"] == b.node_id().as_str() && t["worker_pid"].as_u64().is_some())
            .count();
        running == 2
    });
    assert!(running_on_b, "{seen:#?}");
    let ours: Vec<&Value> = seen
        .iter()
        .filter(|t| tasks.contains(&t["task_id"].as_str().unwrap_or_default().to_string()))
        .collect();
    assert_eq!(ours.len(), 3, "{seen:#?}");
    let queued: Vec<_> = ours.iter().filter(|t| t["state"] == "queued").collect();
    assert_eq!(queued.len(), 1, "the third task waits: {seen:#?}");
    for t in &ours {
        assert!(
            t["function"]
                .as_str()
                .unwrap_or_default()
                .contains("sleepy"),
            "{t:#}"
        );
        assert_eq!(t["kind"], "task");
        assert_eq!(t["resources"]["b_only"], 0.5, "{t:#}");
    }
    let running = list(&sb, &["list", "tasks", "--state", "running", "--json"]);
    assert!(
        running.iter().all(|t| t["state"] == "running"),
        "{running:#?}"
    );
    assert!(running.len() >= 2, "{running:#?}");

    // The 1 MiB object sits in the head node's store (the driver's node).
    let objects = list(&sb, &["list", "objects", "--json"]);
    let blob = objects.iter().find(|o| o["object_id"] == object.as_str());
    let blob = blob.unwrap_or_else(|| panic!("{object} not listed: {objects:#?}"));
    assert!(blob["size"].as_u64().unwrap() >= 1 << 20, "{blob:#}");
    assert_eq!(blob["node_id"], head.node_id().as_str());
    assert_eq!(blob["sealed"], true);
    let text = sb.run(&["list", "objects"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&object[..12]), "{text}");
    let table = sb.run(&["list", "tasks"]);
    println!("{text}\n{}", String::from_utf8_lossy(&table.stdout));

    std::fs::write(&done, b"").unwrap();
    let (ok, out) = job.finish(Duration::from_secs(30));
    assert!(ok && out.contains("ALL OK"), "{out}");
}
