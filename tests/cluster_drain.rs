//! Draining a node on a real cluster (a head alone, raylets a and b): `prism
//! drain a` stops new work going to a while what runs there finishes, a
//! restartable actor on a starts again on b, and a leaves — its raylet
//! process exits cleanly and `prism status` names the drain as its end. A
//! raylet started with `--preemption-file` drains itself when the file
//! appears. Mistakes get a message naming the cause.

use prism_test_support::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

#[prism::remote]
fn slow(ms: u64, x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x * 10
}

#[prism::remote]
fn where_am_i() -> String {
    prism::node_id().unwrap().to_string()
}

/// `mb` MiB of the byte `i`: a result stored where it ran.
#[prism::remote]
fn blob(i: u64, mb: u64) -> Vec<u8> {
    vec![i as u8; (mb as usize) << 20]
}

#[prism::actor]
struct Counter {
    n: u64,
}

#[prism::actor]
impl Counter {
    fn new() -> Self {
        Counter { n: 0 }
    }
    fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
    fn node(&self) -> String {
        prism::node_id().unwrap().to_string()
    }
}

fn role_drain() {
    let a: prism::NodeId = std::env::var("NODE_A").unwrap().parse().unwrap();
    let b = std::env::var("NODE_B").unwrap();
    // Work on a (soft affinity: it may run elsewhere when a cannot).
    let long: Vec<_> = (1..=2u64)
        .map(|i| {
            slow::options()
                .node_affinity(a, true)
                .remote(2000u64, i)
                .unwrap()
        })
        .collect();
    let c = Counter::options()
        .node_affinity(a, true)
        .max_restarts(1)
        .spawn()
        .unwrap();
    check(c.add(5u64).unwrap().get().unwrap() == 5, "the actor runs");
    check(
        c.node().unwrap().get().unwrap() == a.to_string(),
        "the actor is on a",
    );
    println!("READY");
    let go = std::env::var("PRISM_TEST_GO").unwrap();
    check(
        wait_until(Duration::from_secs(60), || Path::new(&go).exists()),
        "the drain began",
    );
    // New work asking for a goes to b while a drains.
    let placed: Vec<String> = (0..4)
        .map(|_| {
            where_am_i::options()
                .node_affinity(a, true)
                .remote()
                .unwrap()
                .get()
                .unwrap()
        })
        .collect();
    check(
        placed.iter().all(|n| *n == b),
        &format!("new work went to b, not a: {placed:?}"),
    );
    // What ran on a finished.
    let done: Vec<u64> = long.iter().map(|r| r.get().unwrap()).collect();
    check(
        done == vec![10, 20],
        &format!("the long tasks finished: {done:?}"),
    );
    // The actor starts again on b once a leaves (its state starts anew).
    let moved = wait_until(Duration::from_secs(60), || {
        c.node().and_then(|r| r.get()).is_ok_and(|n| n == b)
    });
    check(moved, "the actor moved to b");
    check(
        c.add(1u64).unwrap().get().unwrap() == 1,
        "the restarted actor answers",
    );
    println!("ALL OK");
}

/// Results made on a, with no retries (so no lineage can make them again),
/// read after a was drained and left: their copies moved to b.
fn role_objects() {
    let a: prism::NodeId = std::env::var("NODE_A").unwrap().parse().unwrap();
    // 4 × 64 MiB by default; DRAIN_BLOBS=16 for the 1 GiB figure.
    let n: u64 = std::env::var("DRAIN_BLOBS").map_or(4, |v| v.parse().unwrap());
    let mb: u64 = 64;
    let refs: Vec<_> = (0..n)
        .map(|i| {
            blob::options()
                .node_affinity(a, true)
                .max_retries(0)
                .remote(i, mb)
                .unwrap()
        })
        .collect();
    let (ready, _) = prism::wait(&refs, n as usize, Some(Duration::from_secs(120))).unwrap();
    check(ready.len() == n as usize, "the results are stored on a");
    println!("READY {}", n * mb);
    let go = std::env::var("PRISM_TEST_GO").unwrap();
    check(
        wait_until(Duration::from_secs(120), || Path::new(&go).exists()),
        "a was drained",
    );
    for (i, r) in refs.iter().enumerate() {
        let v = r.get().unwrap();
        check(
            v.len() == (mb as usize) << 20 && v[0] == i as u8 && v[v.len() - 1] == i as u8,
            &format!("result {i} survived its node"),
        );
    }
    println!("ALL OK");
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    let _c = prism::init().unwrap();
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "drain" => role_drain(),
        "objects" => role_objects(),
        other => panic!("unknown role {other}"),
    }
}

fn node_json(sb: &Sandbox, id: &str) -> Value {
    sb.status()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits for the `--block` raylet process to exit; its status.
fn exits(node: &mut Node, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(s) = node
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A head alone and raylets a and b (2 CPUs each), both alive.
fn head_a_and_b() -> (Sandbox, Node, Node, Node) {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--head-only"]);
    let a = sb.start_raylet("a", &head, &["--num-cpus", "2"]);
    let b = sb.start_raylet("b", &head, &["--num-cpus", "2"]);
    assert!(wait_until(Duration::from_secs(10), || sb
        .nodes_in_state("alive")
        .len()
        == 2));
    (sb, head, a, b)
}

#[test]
fn cluster_drain_moves_new_work_and_actors_away_and_the_node_leaves() {
    let (sb, head, mut a, b) = head_a_and_b();
    let (a_id, b_id) = (a.node_id(), b.node_id());
    let go = sb.temp().join("go");
    let mut envs = sb.driver_envs(&head, &b);
    envs.push(("NODE_A".into(), a_id.clone()));
    envs.push(("NODE_B".into(), b_id.clone()));
    envs.push(("PRISM_TEST_GO".into(), go.display().to_string()));
    let mut job = Job::spawn("drain", &envs);
    assert!(
        wait_until(Duration::from_secs(60), || job.stdout().contains("READY")),
        "{}\n{}",
        job.stdout(),
        job.stderr()
    );
    let short: String = a_id.chars().take(8).collect();
    let began = Instant::now();
    let out = sb.run(&[
        "drain",
        &short,
        "--reason",
        "test drain",
        "--deadline",
        "60s",
        "--no-wait",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(node_json(&sb, &a_id)["draining"]["reason"], "test drain");
    std::fs::write(&go, "go").unwrap();
    let (ok, out) = job.finish(Duration::from_secs(120));
    assert!(ok && out.contains("ALL OK"), "{out}\n--- a:\n{}", a.log());
    // a left well before its 60 s deadline (nothing there needed it), its
    // raylet process ended cleanly, and its end names the drain.
    let status = exits(&mut a, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        a.log()
    );
    println!(
        "drain began to node a's raylet gone: {:?} (its 2 s tasks were running)",
        began.elapsed()
    );
    let gone = node_json(&sb, &a_id);
    assert_eq!(gone["state"], "dead", "{gone:#}");
    assert_eq!(gone["death_reason"], "drained (test drain)", "{gone:#}");
    assert!(
        a.log().contains("drained: leaving the cluster"),
        "{}",
        a.log()
    );
}

#[test]
fn cluster_a_preemption_notice_drains_its_node_and_mistakes_are_named() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--head-only"]);
    let notice = sb.temp().join("preempted");
    let mut c = sb.start_raylet("c", &head, &["--preemption-file", notice.to_str().unwrap()]);
    assert!(wait_until(Duration::from_secs(10), || sb
        .nodes_in_state("alive")
        .len()
        == 1));
    let c_id = c.node_id();
    // Mistakes: an unknown node, a bad deadline.
    let out = sb.run(&["drain", "n-ffffffff"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no live node n-ffffffff"),
        "{err}"
    );
    let out = sb.run(&["drain", &c_id, "--deadline", "soon"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a duration"),
        "{err}"
    );
    // The provider's notice: the node drains itself and leaves.
    std::fs::write(&notice, "20").unwrap();
    let status = exits(&mut c, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        c.log()
    );
    assert_eq!(
        node_json(&sb, &c_id)["death_reason"],
        "drained (preemption)"
    );
    // Draining a node that left is refused with the reason.
    let out = sb.run(&["drain", &c_id]);
    assert!(!out.status.success());
}

#[test]
fn cluster_a_drained_node_hands_its_primary_copies_to_the_others() {
    let (sb, head, mut a, b) = head_a_and_b();
    let a_id = a.node_id();
    let go = sb.temp().join("go");
    let mut envs = sb.driver_envs(&head, &b);
    envs.push(("NODE_A".into(), a_id.clone()));
    envs.push(("PRISM_TEST_GO".into(), go.display().to_string()));
    let mut job = Job::spawn("objects", &envs);
    assert!(
        wait_until(Duration::from_secs(120), || job.stdout().contains("READY")),
        "{}\n{}",
        job.stdout(),
        job.stderr()
    );
    let began = Instant::now();
    let out = sb.run(&["drain", &a_id, "--reason", "copies", "--deadline", "60s"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.log()
    );
    let held = job
        .stdout()
        .lines()
        .find_map(|l| l.split_once("READY ").map(|(_, mb)| mb.trim().to_string()))
        .unwrap_or_default();
    println!(
        "drain of a node holding {held} MiB of primary copies: {:?} until it left",
        began.elapsed()
    );
    assert!(a.log().contains("primary copies moved"), "{}", a.log());
    assert!(exits(&mut a, Duration::from_secs(30)).is_some_and(|s| s.success()));
    std::fs::write(&go, "go").unwrap();
    let (ok, out) = job.finish(Duration::from_secs(120));
    assert!(ok && out.contains("ALL OK"), "{out}\n--- b:\n{}", b.log());
}
