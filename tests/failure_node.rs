//! Killing and freezing real raylet processes: dead is reported within the
//! configured timeout, slow is told from dead, and a restarted raylet comes
//! back as a new incarnation.

use prism_test_support::*;
use std::time::Duration;

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
