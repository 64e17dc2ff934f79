//! Tasks on a real cluster on 127.0.0.1: a head and two raylets started as
//! `prism start` processes, and a driver joining with PRISM_ADDRESS.

use prism::TaskError;
use prism_test_support::*;
use std::collections::BTreeSet;
use std::time::Duration;

/// Sleeps, then says where it ran.
#[prism::remote]
fn where_am_i(ms: u64) -> String {
    std::thread::sleep(Duration::from_millis(ms));
    std::env::var("PRISM_NODE_ID").unwrap_or_default()
}

/// Sleeps, then returns the GPUs it was given.
#[prism::remote]
fn my_gpus(ms: u64) -> (String, Vec<u32>) {
    std::thread::sleep(Duration::from_millis(ms));
    (
        std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default(),
        prism::gpu_ids(),
    )
}

#[prism::remote]
fn double_slowly(x: u64, ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x * 2
}

fn role_spill() {
    let _c = prism::init().unwrap();
    let refs: Vec<_> = (0..2)
        .map(|_| where_am_i::remote(1_500u64).unwrap())
        .collect();
    let nodes: BTreeSet<String> = prism::get_all(&refs).unwrap().into_iter().collect();
    check(
        nodes.len() == 2,
        "two 1-CPU tasks ran on two nodes (spillback)",
    );
    let refs: Vec<_> = (0..2)
        .map(|_| {
            my_gpus::options()
                .num_cpus(0.0)
                .num_gpus(1.0)
                .remote(1_000u64)
                .unwrap()
        })
        .collect();
    let got = prism::get_all(&refs).unwrap();
    let visible: BTreeSet<String> = got.iter().map(|(v, _)| v.clone()).collect();
    check(
        visible == BTreeSet::from(["0".to_string(), "1".to_string()]),
        "GPU tasks see distinct CUDA_VISIBLE_DEVICES",
    );
    check(
        got.iter()
            .all(|(v, ids)| ids.len() == 1 && ids[0].to_string() == *v),
        "gpu_ids() matches CUDA_VISIBLE_DEVICES",
    );
    let unicorn = where_am_i::options()
        .resource("unicorn", 2.0)
        .remote(0u64)
        .unwrap();
    // It waits (the test cluster's infeasible timeout is 4 s), shown in
    // `prism status` as infeasible demand meanwhile.
    println!("UNICORN_PENDING");
    match unicorn.get() {
        Err(prism::Error::Task(TaskError::Infeasible { reason, .. })) => check(
            reason.contains("unicorn"),
            "infeasible names the missing resource",
        ),
        other => panic!("infeasible: {other:?}"),
    }
    println!("ALL OK");
}

/// The driver deletes its own binary after `init()`: every worker, here and
/// on the other raylet, must come from the copy shipped by content hash.
fn role_shipped() {
    let _c = prism::init().unwrap();
    std::fs::remove_file(std::env::current_exe().unwrap()).unwrap();
    let refs: Vec<_> = (0..2)
        .map(|_| where_am_i::remote(1_500u64).unwrap())
        .collect();
    let nodes: BTreeSet<String> = prism::get_all(&refs).unwrap().into_iter().collect();
    check(
        nodes.len() == 2,
        "workers on both nodes ran from the shipped binary",
    );
    println!("ALL OK");
}

fn role_node_death() {
    let _c = prism::init().unwrap();
    let refs: Vec<_> = (0..4u64)
        .map(|i| double_slowly::remote(i, 4_000u64).unwrap())
        .collect();
    println!("SUBMITTED");
    let got = prism::get_all(&refs).unwrap();
    check(
        got == vec![0, 2, 4, 6],
        "tasks of a killed raylet were retried elsewhere",
    );
    println!("ALL OK");
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE")
        .expect("run by the tests in this file")
        .as_str()
    {
        "spill" => role_spill(),
        "node_death" => role_node_death(),
        "shipped" => role_shipped(),
        other => panic!("unknown role {other}"),
    }
}

struct Cluster {
    sb: Sandbox,
    _head: Node,
    a: Node,
    b: Node,
}

fn cluster(b_args: &[&str]) -> Cluster {
    let sb = Sandbox::new()
        .with_env("PRISM_IDLE_TIMEOUT_MS", "3000")
        .with_env("PRISM_INFEASIBLE_TIMEOUT_MS", "4000");
    let head = sb.start_head(&["--head-only"]);
    let a = sb.start_raylet("a", &head, &["--num-cpus", "1"]);
    let b = sb.start_raylet("b", &head, b_args);
    // Both raylets are registered before the driver starts (a raylet that
    // has not heard of the other yet spills or places parked work as soon
    // as its next view arrives).
    assert!(wait_until(Duration::from_secs(10), || sb
        .nodes_in_state("alive")
        .len()
        == 2));
    Cluster {
        sb,
        _head: head,
        a,
        b,
    }
}

fn driver(c: &Cluster, role: &str) -> Job {
    driver_exe(c, role, &std::env::current_exe().unwrap())
}

fn driver_exe(c: &Cluster, role: &str, exe: &std::path::Path) -> Job {
    Job::spawn_exe(exe, role, &c.sb.driver_envs(&c._head, &c.a))
}

#[test]
fn cluster_spillback_gpus_and_infeasible() {
    let c = cluster(&["--num-cpus", "1", "--num-gpus", "2"]);
    let mut job = driver(&c, "spill");
    assert!(
        wait_until(Duration::from_secs(60), || job
            .stdout()
            .contains("UNICORN_PENDING")),
        "{}",
        job.stdout()
    );
    // The infeasible request shows in `prism status` as demand naming the
    // resource while it waits.
    let shown = wait_until(Duration::from_secs(5), || {
        c.sb.status()["demand"].as_array().is_some_and(|d| {
            d.iter().any(|d| {
                d["infeasible"]
                    .as_str()
                    .is_some_and(|w| w.contains("unicorn"))
            })
        })
    });
    assert!(shown, "{:#}", c.sb.status());
    let (ok, out) = job.finish(Duration::from_secs(120));
    assert!(
        ok && out.contains("ALL OK"),
        "{out}\n--- a:\n{}\n--- b:\n{}",
        c.a.log(),
        c.b.log()
    );
    // The driver registered its job, and its exit ended it at once.
    let ended = wait_until(Duration::from_secs(5), || {
        let out = c.sb.run(&["job", "list", "--json"]);
        let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        jobs.as_array().is_some_and(|j| {
            j.len() == 1 && j[0]["state"] == "succeeded" && j[0]["submitted"] == false
        })
    });
    assert!(
        ended,
        "{}",
        String::from_utf8_lossy(&c.sb.run(&["job", "list"]).stdout)
    );
}

#[test]
fn cluster_killed_raylet_tasks_retry_on_the_other_node() {
    let mut c = cluster(&["--num-cpus", "2"]);
    let mut job = driver(&c, "node_death");
    assert!(wait_until(Duration::from_secs(30), || job
        .stdout()
        .contains("SUBMITTED")));
    // Once a task runs on b, kill it.
    let b_id = c.b.node_id();
    let running_on_b = || {
        let out = c.sb.run(&["list", "tasks", "--state", "running", "--json"]);
        let tasks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        tasks
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["node_id"] == b_id.as_str()))
    };
    assert!(
        wait_until(Duration::from_secs(30), running_on_b),
        "no task started on b"
    );
    c.b.kill9();
    let (ok, out) = job.finish(Duration::from_secs(120));
    assert!(ok && out.contains("ALL OK"), "{out}\n--- a:\n{}", c.a.log());
    // The answer came through the retry path: tasks spilled to b failed over.
    assert!(
        c.a.log().contains("spilled task failed on the peer"),
        "no task of the killed raylet was retried:\n{}",
        c.a.log()
    );
}

#[test]
fn cluster_job_binary_is_shipped_by_content_hash() {
    let c = cluster(&["--num-cpus", "1"]);
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("job-copy");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    let mut job = driver_exe(&c, "shipped", &exe);
    let (ok, out) = job.finish(Duration::from_secs(120));
    assert!(
        ok && out.contains("ALL OK"),
        "{out}\n--- a:\n{}\n--- b:\n{}",
        c.a.log(),
        c.b.log()
    );
    assert!(!exe.exists());
}
