//! Killing and freezing real raylet processes: dead is reported within the
//! configured timeout, slow is told from dead, and a restarted raylet comes
//! back as a new incarnation; a frozen raylet declared dead, let go, ends
//! the task a peer had spilled to it, which ran on elsewhere (DF-4).

use prism_test_support::*;
use std::path::Path;
use std::time::Duration;

/// Appends `<pid> <node>` to `log`, then waits (at most 120 s) for `go`.
#[prism::remote]
fn held_task(log: String, go: String) -> String {
    use std::io::Write;
    let node = std::env::var("PRISM_NODE_ID").unwrap_or_default();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&log)
        .unwrap();
    writeln!(f, "{} {node}", std::process::id()).unwrap();
    drop(f);
    wait_until(Duration::from_secs(120), || Path::new(&go).exists());
    node
}

/// One task that only an `x` node runs (spilled there from the head's
/// raylet), retried once.
fn spilled_role() {
    let log = std::env::var("PRISM_TEST_LOG").unwrap();
    let go = std::env::var("PRISM_TEST_GO").unwrap();
    let r = held_task::options()
        .num_cpus(0.0)
        .resource("x", 1.0)
        .max_retries(1)
        .remote(log, go)
        .unwrap();
    let node = r.get_timeout(Duration::from_secs(180)).unwrap();
    println!("RAN ON {node}");
    println!("ALL OK");
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    let _c = prism::init().unwrap();
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "spilled" => spilled_role(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn failure_killed_raylet_is_dead_and_restart_is_a_new_incarnation() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--head-only"]);
    let mut a = sb.start_raylet("a", &head, &["--num-cpus", "1"]);
    let _b = sb.start_raylet("b", &head, &["--num-cpus", "2"]);
    let _c = sb.start_raylet("c", &head, &["--num-cpus", "3"]);
    let a_id = a.node_id();
    assert_eq!(sb.nodes_in_state("alive").len(), 3);

    a.kill9();
    // Dead after DEAD_AFTER missed heartbeats; allow generous slack for a loaded machine.
    let limit = Duration::from_millis(HEARTBEAT_MS * DEAD_AFTER) + Duration::from_secs(10);
    assert!(
        wait_until(limit, || sb
            .nodes_in_state("dead")
            .iter()
            .any(|n| n["node_id"] == a_id.as_str())),
        "killed raylet not reported dead: {:#}",
        sb.status()
    );
    let status = sb.status();
    let dead = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == a_id.as_str())
        .unwrap()
        .clone();
    assert!(
        dead["death_reason"]
            .as_str()
            .unwrap()
            .contains("no heartbeat"),
        "{dead:#}"
    );
    let alive = sb.nodes_in_state("alive");
    assert_eq!(alive.len(), 2, "{status:#}");

    // Restart in the same session directory: same name, next incarnation, new id.
    let a2 = sb.spawn_in(
        "a2",
        &a.session.clone(),
        &[
            "--address",
            &head.cluster().0,
            "--token",
            &head.cluster().1,
            "--num-cpus",
            "1",
        ],
    );
    let a2_id = a2.node_id();
    assert_ne!(a2_id, a_id);
    let status = sb.status();
    let nodes = status["nodes"].as_array().unwrap();
    let new = nodes
        .iter()
        .find(|n| n["node_id"] == a2_id.as_str())
        .unwrap();
    let old = nodes
        .iter()
        .find(|n| n["node_id"] == a_id.as_str())
        .unwrap();
    assert_eq!(new["state"], "alive");
    assert_eq!(new["incarnation"], 2);
    assert_eq!(new["name"], old["name"]);
    assert_eq!(old["state"], "dead");
    assert_eq!(sb.nodes_in_state("alive").len(), 3);
}

#[test]
fn failure_frozen_raylet_is_suspect_not_dead_then_recovers() {
    // Dead only after 60 missed heartbeats (6 s), so a short freeze is "slow".
    let sb = Sandbox::new().with_env("PRISM_DEAD_AFTER_MISSED", "60");
    let head = sb.start_head(&["--head-only"]);
    let a = sb.start_raylet("a", &head, &["--num-cpus", "1"]);
    let id = a.node_id();
    a.signal(libc::SIGSTOP);
    let suspect = wait_until(Duration::from_secs(5), || {
        sb.nodes_in_state("suspect")
            .iter()
            .any(|n| n["node_id"] == id.as_str())
    });
    a.signal(libc::SIGCONT);
    assert!(
        suspect,
        "frozen raylet never became suspect: {:#}",
        sb.status()
    );
    assert!(
        wait_until(Duration::from_secs(5), || sb
            .nodes_in_state("alive")
            .iter()
            .any(|n| n["node_id"] == id.as_str())),
        "raylet did not recover: {:#}",
        sb.status()
    );
    assert!(sb.nodes_in_state("dead").is_empty());
}

#[test]
fn failure_stopped_raylet_unregisters_at_once() {
    let sb = Sandbox::new().with_env("PRISM_DEAD_AFTER_MISSED", "600");
    let head = sb.start_head(&["--head-only"]);
    let mut a = sb.start_raylet("a", &head, &["--num-cpus", "1"]);
    let id = a.node_id();
    a.signal(libc::SIGTERM);
    let exited = wait_until(Duration::from_secs(10), || {
        a.child.as_mut().unwrap().try_wait().unwrap().is_some()
    });
    assert!(exited, "raylet ignored SIGTERM");
    let dead = sb.nodes_in_state("dead");
    assert!(
        dead.iter().any(|n| n["node_id"] == id.as_str()
            && n["death_reason"].as_str().unwrap().contains("stopped")),
        "{dead:#?}"
    );
}

/// The `(pid, node)` lines the held task wrote, one per attempt.
fn attempts(log: &Path) -> Vec<(u32, String)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (pid, node) = l.split_once(' ')?;
            Some((pid.parse().ok()?, node.to_string()))
        })
        .collect()
}

#[test]
fn failure_a_raylet_declared_dead_ends_the_task_a_peer_spilled_to_it() {
    let sb = Sandbox::new();
    let (head, b, c) = sb.head_and_two_x_nodes();
    let (log, go) = (sb.temp().join("attempts"), sb.temp().join("go"));
    let (log_env, go_env) = (log.display().to_string(), go.display().to_string());
    let mut envs = sb.driver_envs(&head, &head);
    envs.push(("PRISM_TEST_LOG".into(), log_env));
    envs.push(("PRISM_TEST_GO".into(), go_env));
    let mut job = Job::spawn("spilled", &envs);
    let started = wait_until(Duration::from_secs(60), || attempts(&log).len() == 1);
    assert!(started, "{}", job.stdout());
    let (pid, first) = attempts(&log)[0].clone();
    let (frozen, other) = if b.node_id() == first {
        (&b, &c)
    } else {
        (&c, &b)
    };
    // Frozen past the dead timeout: the head's raylet stops waiting for it
    // and runs the task again on the other x node, while the first
    // attempt's worker runs on.
    frozen.signal(libc::SIGSTOP);
    let retried = wait_until(Duration::from_secs(60), || attempts(&log).len() == 2);
    let again = attempts(&log);
    frozen.signal(libc::SIGCONT);
    assert!(
        retried,
        "{again:?}\n{:#}\n--- head:\n{}",
        sb.status(),
        head.log()
    );
    assert_eq!(again[1].1, other.node_id(), "{again:?}");
    // Let go, the raylet learns it was declared dead and ends the first
    // attempt before it registers again: the task runs once from now on.
    let fenced = wait_until(Duration::from_secs(30), || !process_running(pid));
    assert!(
        fenced,
        "the first attempt (pid {pid}) still runs\n--- raylet:\n{}",
        frozen.log()
    );
    std::fs::write(&go, "").unwrap();
    let (ok, out) = job.finish(Duration::from_secs(60));
    assert!(
        ok && out.contains(&format!("RAN ON {}", other.node_id())),
        "{out}"
    );
}
