//! Lineage reconstruction against real processes: the raylet holding the
//! only copy of a 64 MB task result is `kill -9`ed; `get` returns the right
//! bytes by running the task again elsewhere (and, for a result computed
//! from another lost result, that one first); with `max_retries(0)`, and
//! for an actor call's result, it fails with `ObjectLost` naming the node.

use prism::TaskError;
use prism_test_support::*;
use std::path::Path;
use std::time::Duration;

const MB: usize = 1 << 20;

/// 64 MB whose bytes depend on `seed`.
#[prism::remote]
fn big(seed: u8) -> Vec<u8> {
    (0..64 * MB)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// A second 64 MB result made from the first.
#[prism::remote]
fn flip(data: Vec<u8>) -> Vec<u8> {
    data.into_iter().map(|b| !b).collect()
}

#[prism::actor]
struct Maker;

#[prism::actor]
impl Maker {
    fn new() -> Self {
        Maker
    }
    fn make(&self, seed: u8) -> Vec<u8> {
        (0..64 * MB)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }
}

fn expected(seed: u8) -> Vec<u8> {
    (0..64 * MB)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn role_lineage() {
    let _c = prism::init().unwrap();
    let victim: prism::NodeId = std::env::var("PRISM_TEST_VICTIM").unwrap().parse().unwrap();
    let go = std::env::var("PRISM_TEST_GO").unwrap();
    let on_victim = || {
        big::options()
            .resource("x", 1.0)
            .node_affinity(victim, true)
    };
    let rebuilt = on_victim().max_retries(2).remote(1u8).unwrap();
    let chained_arg = on_victim().max_retries(2).remote(2u8).unwrap();
    let chained = flip::options()
        .resource("x", 1.0)
        .node_affinity(victim, true)
        .max_retries(2)
        .remote(&chained_arg)
        .unwrap();
    let once = on_victim().max_retries(0).remote(3u8).unwrap();
    let maker = Maker::options()
        .resource("x", 1.0)
        .node_affinity(victim, true)
        .spawn()
        .unwrap();
    let from_actor = maker.make(4u8).unwrap();
    // Wait for every result without pulling a copy here.
    let all = [&rebuilt, &chained_arg, &chained, &once, &from_actor];
    for r in all {
        let (ready, _) =
            prism::wait(std::slice::from_ref(r), 1, Some(Duration::from_secs(120))).unwrap();
        assert_eq!(ready.len(), 1, "a result is not ready");
    }
    drop(chained_arg);
    println!("READY");
    assert!(
        wait_until(Duration::from_secs(60), || Path::new(&go).exists()),
        "the test never said go"
    );
    check(
        rebuilt.get().unwrap() == expected(1),
        "a lost 64 MB result is rebuilt by running its task again",
    );
    let want: Vec<u8> = expected(2).into_iter().map(|b| !b).collect();
    check(
        chained.get().unwrap() == want,
        "a result made from another lost result is rebuilt after it",
    );
    match once.get() {
        Err(prism::Error::Task(TaskError::ObjectLost { detail, .. })) => {
            check(
                detail.contains(&victim.to_string()),
                "the loss names the node",
            );
            check(
                detail.contains("max_retries 0"),
                "and why it is not rebuilt",
            );
        }
        other => panic!("max_retries(0): {:?}", other.map(|v| v.len())),
    }
    match from_actor.get() {
        Err(prism::Error::Task(TaskError::ObjectLost { detail, .. })) => check(
            detail.contains("an actor call, which cannot be run again"),
            "an actor call's lost result says it cannot be rebuilt",
        ),
        other => panic!("actor result: {:?}", other.map(|v| v.len())),
    }
    println!("ALL OK");
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE")
        .expect("run by the tests in this file")
        .as_str()
    {
        "lineage" => role_lineage(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn object_lost_results_are_rebuilt_from_their_lineage() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--head-only"]);
    let store = ["--object-store-memory", "600M"];
    let a = sb.start_raylet("a", &head, &["--num-cpus", "1", store[0], store[1]]);
    let x = r#"{"x": 4}"#;
    let mut b = sb.start_raylet(
        "b",
        &head,
        &["--num-cpus", "4", "--resources", x, store[0], store[1]],
    );
    let c = sb.start_raylet(
        "c",
        &head,
        &["--num-cpus", "4", "--resources", x, store[0], store[1]],
    );
    assert!(wait_until(Duration::from_secs(10), || sb
        .nodes_in_state("alive")
        .len()
        == 3));
    let go = sb.temp().join("go");
    let mut envs = sb.driver_envs(&head, &a);
    envs.push(("PRISM_TEST_VICTIM".into(), b.node_id()));
    envs.push(("PRISM_TEST_GO".into(), go.display().to_string()));
    let mut job = Job::spawn("lineage", &envs);
    assert!(
        wait_until(Duration::from_secs(180), || job.stdout().contains("READY")),
        "{}\n--- b:\n{}",
        job.stdout(),
        b.log()
    );
    let victim = b.node_id();
    b.kill9();
    assert!(wait_until(Duration::from_secs(30), || sb
        .nodes_in_state("dead")
        .iter()
        .any(|n| n["node_id"] == victim.as_str())));
    std::fs::write(&go, "go").unwrap();
    let (ok, out) = job.finish(Duration::from_secs(300));
    assert!(
        ok && out.contains("ALL OK"),
        "{out}\n--- a:\n{}\n--- c:\n{}",
        a.log(),
        c.log()
    );
}
