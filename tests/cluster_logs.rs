//! Workers' output on a real cluster (head with its raylet + raylet b, the
//! only node with `b_only`): a task's `println!` on b reaches its driver on
//! the head node with the `(name pid=… node=…)` prefix, runs of identical
//! lines are folded, `prism logs --actor NAME` reads an actor's log from
//! its node, finished tasks stay listed with their times, and
//! `prism timeline` writes their runs as a Chrome trace.

use prism_test_support::*;
use serde_json::Value;
use std::time::Duration;

#[prism::remote]
fn shout(i: u64) -> u64 {
    println!("hello from task {i}");
    eprintln!("to stderr {i}");
    i
}

#[prism::remote]
fn chatter() -> u64 {
    for _ in 0..40 {
        println!("same line again");
    }
    40
}

#[prism::remote]
fn oops() -> u64 {
    panic!("oops on purpose")
}

#[prism::actor]
struct Talker {
    said: u64,
}

#[prism::actor]
impl Talker {
    fn new() -> Self {
        Talker { said: 0 }
    }
    fn say(&mut self) -> u64 {
        self.said += 1;
        println!("actor says hi {}", self.said);
        self.said
    }
}

fn print_role() {
    let refs: Vec<_> = (0..4u64)
        .map(|i| shout::options().resource("b_only", 0.1).remote(i).unwrap())
        .collect();
    let sum: u64 = prism::get_all(&refs).unwrap().into_iter().sum();
    check(sum == 6, "the tasks ran");
    let failed = oops::options()
        .resource("b_only", 0.1)
        .max_retries(0)
        .remote()
        .unwrap()
        .get();
    check(
        matches!(
            failed,
            Err(prism::Error::Task(prism::TaskError::Panicked { .. }))
        ),
        "the panic came back as TaskError::Panicked",
    );
    let n = chatter::options().resource("b_only", 0.1).remote().unwrap();
    check(n.get().unwrap() == 40, "chatter ran");
    let t = Talker::options()
        .name("talker")
        .resource("b_only", 0.1)
        .spawn()
        .unwrap();
    check(t.say().unwrap().get().unwrap() == 1, "the actor spoke");
    // Hold the actor until the test has read its log.
    check(hold_until_done(), "the test read the actor's log");
    println!("ALL OK");
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    let _c = prism::init().unwrap();
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "print" => print_role(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn worker_output_reaches_the_driver_and_prism_logs() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "2"]);
    let b = sb.start_raylet(
        "b",
        &head,
        &["--num-cpus", "2", "--resources", r#"{"b_only": 1}"#],
    );
    assert!(wait_until(Duration::from_secs(10), || sb
        .nodes_in_state("alive")
        .len()
        == 2));
    let (mut job, done) = sb.held_driver("print", &head, &head);
    let b_short: String = b.node_id().chars().take(10).collect();

    // The driver prints its workers' lines (from node b) with their prefix.
    let printed = wait_until(Duration::from_secs(60), || {
        job.stdout().contains("actor says hi 1") && job.stdout().contains("[repeated")
    });
    let out = job.stdout();
    assert!(printed, "stdout:\n{out}\nstderr:\n{}", job.stderr());
    for i in 0..4 {
        let line = out
            .lines()
            .find(|l| l.ends_with(&format!("hello from task {i}")))
            .unwrap_or_else(|| panic!("no line of task {i}:\n{out}"));
        // (The test harness in the worker may print half a line first.)
        assert!(line.contains("(shout pid="), "{line}");
        assert!(
            line.contains(&format!("node={b_short}")),
            "{line} (b is {b_short})"
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || job
            .stderr()
            .contains("to stderr 3")),
        "stderr:\n{}",
        job.stderr()
    );
    // A panicking task is one line on the driver naming the task, its
    // worker and node: nothing that reads as if the driver crashed.
    assert!(
        wait_until(Duration::from_secs(10), || job.stderr().lines().any(|l| l
            .contains("(oops pid=")
            && l.contains(&format!("node={b_short}"))
            && l.contains("panicked at tests/cluster_logs.rs")
            && l.ends_with("oops on purpose"))),
        "stderr:\n{}",
        job.stderr()
    );
    assert!(!job.stderr().contains("thread '"), "{}", job.stderr());
    let same = out
        .lines()
        .filter(|l| l.contains("same line again"))
        .count();
    assert_eq!(same, 4, "three lines, then one fold:\n{out}");
    assert!(out.contains("same line again [repeated 37×]"), "{out}");

    // `prism logs --actor talker` reads the actor's worker log on b.
    let logs = sb.run(&["logs", "--actor", "talker"]);
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    assert!(text.contains("actor says hi 1"), "{text}");

    // Finished tasks are listed with their times.
    let listed = sb.run(&[
        "list",
        "tasks",
        "--state",
        "finished",
        "--filter",
        "name=shout",
        "--json",
    ]);
    let rows: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap_or_default();
    assert_eq!(rows.len(), 4, "{}", String::from_utf8_lossy(&listed.stdout));
    for r in &rows {
        let (s, e) = (
            r["started_us"].as_u64().unwrap(),
            r["ended_us"].as_u64().unwrap(),
        );
        assert!(r["submitted_us"].as_u64().unwrap() <= s && s <= e, "{r:#}");
        assert_eq!(r["node_id"], b.node_id().as_str());
    }

    // `prism timeline` writes one complete event per finished run.
    let trace = sb.temp().join("trace.json");
    let t = sb.run(&["timeline", "-o", trace.to_str().unwrap()]);
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
    let events: Vec<Value> = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let shouts = events
        .iter()
        .filter(|e| e["name"] == "shout" && e["ph"] == "X")
        .count();
    assert_eq!(shouts, 4, "{events:#?}");

    std::fs::write(&done, b"").unwrap();
    let (ok, out) = job.finish(Duration::from_secs(30));
    assert!(ok && out.contains("ALL OK"), "{out}");
}
