//! Actors whose node dies (head with its raylet + raylets b and c that
//! alone have resource `x`): one with `max_restarts(1)` comes back on the
//! other `x` node with its constructor re-run, its in-flight call re-sent
//! (`max_task_retries(1)`), and later calls reach it there; one with no
//! restarts fails its in-flight call with `ActorDied`
//! naming the lost node. A node frozen until declared dead fences its
//! actors when let go, and a call its driver had in flight there is
//! answered by the restarted incarnation.

use prism_test_support::*;
use std::time::Duration;

#[prism::actor]
struct Tally {
    n: u64,
}

#[prism::actor]
impl Tally {
    fn new() -> Self {
        Tally { n: 0 }
    }
    fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
    fn node(&self) -> String {
        std::env::var("PRISM_NODE_ID").unwrap_or_default()
    }
    fn nap(&self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
    fn pid(&self) -> u32 {
        std::process::id()
    }
    /// Its count, once `path` exists (at most 120 s).
    fn count_once(&self, path: String) -> u64 {
        wait_until(Duration::from_secs(120), || {
            std::path::Path::new(&path).exists()
        });
        self.n
    }
}

/// A Tally on an `x` node, restarted once (its calls re-sent once).
fn restartable() -> prism::ActorHandle<Tally> {
    Tally::options()
        .resource("x", 1.0)
        .max_restarts(1)
        .max_task_retries(1)
        .spawn()
        .unwrap()
}

fn restart_role() {
    let kept = restartable();
    let first = kept.node().unwrap().get().unwrap();
    check(
        kept.add(5u64).unwrap().get().unwrap() == 5,
        "the actor counts",
    );
    let node: prism::NodeId = first.parse().unwrap();
    let fragile = Tally::options()
        .resource("x", 1.0)
        .node_affinity(node, false)
        .spawn()
        .unwrap();
    check(
        fragile.node().unwrap().get().unwrap() == first,
        "a second actor, without restarts, on the same node",
    );
    let inflight = fragile.nap(120_000u64).unwrap();
    let retried = kept.nap(2_000u64).unwrap();
    println!("VICTIM {first}");
    let e = inflight.get().unwrap_err();
    println!("in-flight call: {e}");
    check(
        matches!(e, prism::Error::Task(prism::TaskError::ActorDied { .. })),
        "the in-flight call failed with ActorDied",
    );
    let e = e.to_string();
    check(
        e.contains(&first) && e.contains("died"),
        "its error names the lost node",
    );
    check(
        retried.get().unwrap() == 2_000,
        "a call in flight on the lost node was re-sent to the restarted actor (max_task_retries)",
    );
    // Calls to the restarting actor wait for it, then reach its new home.
    let again = kept.node().unwrap().get().unwrap();
    check(
        !again.is_empty() && again != first,
        "the actor came back on another node",
    );
    check(
        kept.add(1u64).unwrap().get().unwrap() == 1,
        "its constructor ran again (the count restarted)",
    );
    let e = fragile.add(1u64).unwrap().get().unwrap_err().to_string();
    check(
        e.contains(&first),
        &format!("the actor with no restarts stays dead: {e}"),
    );
    println!("ALL OK");
}

/// An actor whose raylet is frozen until declared dead: it comes back
/// on the other `x` node; the frozen raylet, let go, fences the first
/// incarnation (the test checks its process ends).
fn fence_role() {
    let kept = restartable();
    let first = kept.node().unwrap().get().unwrap();
    let pid = kept.pid().unwrap().get().unwrap();
    check(
        kept.add(5u64).unwrap().get().unwrap() == 5,
        "the actor counts",
    );
    println!("VICTIM {first} PID {pid}");
    let go = std::env::var("PRISM_TEST_GO").unwrap();
    check(
        wait_until(Duration::from_secs(60), || {
            std::path::Path::new(&go).exists()
        }),
        "the test froze the victim",
    );
    let moved = wait_until(Duration::from_secs(60), || {
        kept.node()
            .and_then(|r| r.get_timeout(Duration::from_secs(5)))
            .is_ok_and(|n| n != first)
    });
    check(moved, "the actor came back on the other x node");
    println!("MOVED {}", kept.pid().unwrap().get().unwrap());
    check(hold_until_done(), "the test saw the fence");
    check(
        kept.add(1u64).unwrap().get().unwrap() == 1,
        "the restarted incarnation answers, fresh",
    );
    println!("ALL OK");
}

/// A driver on the victim's node calls its actor there; the call is in
/// flight when the node is frozen and declared dead. When the fence ends
/// the first incarnation, the call goes on to the restarted one (DF-2),
/// which answers it.
fn fence_call_role() {
    let me = prism::node_id().unwrap();
    let kept = Tally::options()
        .resource("x", 1.0)
        .node_affinity(me, true)
        .max_restarts(1)
        .max_task_retries(1)
        .spawn()
        .unwrap();
    let first = kept.node().unwrap().get().unwrap();
    check(
        first == me.to_string(),
        "the actor runs on the driver's node",
    );
    let pid = kept.pid().unwrap().get().unwrap();
    check(
        kept.add(5u64).unwrap().get().unwrap() == 5,
        "the actor counts",
    );
    let go = std::env::var("PRISM_TEST_GO").unwrap();
    let held = kept.count_once(go).unwrap();
    println!("VICTIM {first} PID {pid}");
    let answer = held.get_timeout(Duration::from_secs(180));
    println!("ANSWER {answer:?}");
    // The restarted incarnation counted from zero: it answered.
    check(
        matches!(answer, Ok(0)),
        "the fenced call was answered by the next incarnation",
    );
    let now = kept.node().unwrap().get().unwrap();
    check(now != first, "later calls reach it on its new node");
    println!("ALL OK");
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    let _c = prism::init().unwrap();
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "restart" => restart_role(),
        "fence" => fence_role(),
        "fence_call" => fence_call_role(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn actor_restarts_on_another_node_when_its_node_dies() {
    let sb = Sandbox::new();
    let (head, b, c) = sb.head_and_two_x_nodes();
    let envs = sb.driver_envs(&head, &head);
    let mut job = Job::spawn("restart", &envs);
    let mut victim = String::new();
    let named = wait_until(Duration::from_secs(60), || {
        let out = job.stdout();
        victim = out
            .lines()
            .find_map(|l| l.split_once("VICTIM ").map(|(_, v)| v))
            .unwrap_or_default()
            .to_string();
        !victim.is_empty()
    });
    assert!(named, "no victim named:\n{}", job.stdout());
    let (mut dead, survivor) = if b.node_id() == victim {
        (b, c)
    } else {
        (c, b)
    };
    assert_eq!(dead.node_id(), victim);
    dead.kill9();
    let (ok, out) = job.finish(Duration::from_secs(120));
    assert!(
        ok && out.contains("ALL OK"),
        "{out}\n--- head:\n{}\n--- survivor:\n{}",
        head.log(),
        survivor.log()
    );
    println!("{out}");
    let listed = sb.run(&["list", "actors", "--json"]);
    let actors: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap_or_default();
    let restarted: Vec<_> = actors.iter().filter(|a| a["restarts"] == 1).collect();
    assert_eq!(restarted.len(), 1, "{actors:#?}");
    assert_eq!(restarted[0]["node_id"], survivor.node_id().as_str());
}

#[test]
fn a_node_declared_dead_fences_its_actors_when_it_comes_back() {
    let sb = Sandbox::new();
    let (head, b, c) = sb.head_and_two_x_nodes();
    let go = sb.temp().join("go");
    let go_env = go.display().to_string();
    let (mut job, done) = sb.held_driver_with("fence", &head, &head, &[("PRISM_TEST_GO", &go_env)]);
    let line = Sandbox::line_of(&job, "VICTIM ", Duration::from_secs(60));
    let line = line.unwrap_or_else(|| panic!("no victim named:\n{}", job.stdout()));
    let words: Vec<&str> = line.split_whitespace().collect();
    let (victim, pid): (String, u32) = (words[1].into(), words[3].parse().unwrap());
    let frozen = if b.node_id() == victim { &b } else { &c };
    // Frozen past the dead timeout; its actor's worker lives on.
    frozen.signal(libc::SIGSTOP);
    let dead = wait_until(Duration::from_secs(30), || {
        sb.nodes_in_state("dead")
            .iter()
            .any(|n| n["node_id"] == victim.as_str())
    });
    std::fs::write(&go, "").unwrap();
    assert!(dead, "{:#}", sb.status());
    assert!(
        process_running(pid),
        "the first incarnation runs on, unfenced yet"
    );
    let moved = wait_until(Duration::from_secs(60), || job.stdout().contains("MOVED"));
    assert!(moved, "{}\n--- head:\n{}", job.stdout(), head.log());
    // Let go, the raylet learns it was declared dead and fences the first
    // incarnation before it registers again.
    frozen.signal(libc::SIGCONT);
    let fenced = wait_until(Duration::from_secs(30), || !process_running(pid));
    assert!(
        fenced,
        "the first incarnation (pid {pid}) still runs\n--- raylet:\n{}",
        frozen.log()
    );
    // Its death is reported as the node declared dead: the head keeps the
    // restarted incarnation.
    let ignored = wait_until(Duration::from_secs(30), || {
        head.log()
            .lines()
            .any(|l| l.contains("from a node declared dead") && l.contains("state=Dead"))
    });
    assert!(ignored, "{}", head.log());
    let listed = sb.run(&["list", "actors", "--json"]);
    let actors: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap_or_default();
    let kept: Vec<_> = actors.iter().filter(|a| a["restarts"] == 1).collect();
    assert_eq!(kept.len(), 1, "{actors:#?}");
    assert_eq!(kept[0]["state"], "alive", "{actors:#?}");
    std::fs::write(&done, "").unwrap();
    let (ok, out) = job.finish(Duration::from_secs(60));
    assert!(ok && out.contains("ALL OK"), "{out}");
}

#[test]
fn a_fenced_actors_call_in_flight_is_answered_by_its_next_incarnation() {
    let sb = Sandbox::new();
    let (head, b, c) = sb.head_and_two_x_nodes();
    let go = sb.temp().join("go");
    let go_env = go.display().to_string();
    let (mut job, _done) =
        sb.held_driver_with("fence_call", &head, &b, &[("PRISM_TEST_GO", &go_env)]);
    let line = Sandbox::line_of(&job, "VICTIM ", Duration::from_secs(60));
    let line =
        line.unwrap_or_else(|| panic!("no victim named:\n{}\n{}", job.stdout(), job.stderr()));
    let words: Vec<&str> = line.split_whitespace().collect();
    let (victim, pid): (String, u32) = (words[1].into(), words[3].parse().unwrap());
    assert_eq!(victim, b.node_id());
    // Frozen past the dead timeout, with the call in flight.
    b.signal(libc::SIGSTOP);
    let moved = wait_until(Duration::from_secs(60), || {
        let listed = sb.run(&["list", "actors", "--json"]);
        let actors: Vec<serde_json::Value> =
            serde_json::from_slice(&listed.stdout).unwrap_or_default();
        actors.iter().any(|a| {
            a["restarts"] == 1 && a["state"] == "alive" && a["node_id"] == c.node_id().as_str()
        })
    });
    assert!(moved, "{:#}\n--- head:\n{}", sb.status(), head.log());
    b.signal(libc::SIGCONT);
    let fenced = wait_until(Duration::from_secs(30), || !process_running(pid));
    assert!(
        fenced,
        "the first incarnation still runs\n--- b:\n{}",
        b.log()
    );
    std::fs::write(&go, "").unwrap();
    let (ok, out) = job.finish(Duration::from_secs(120));
    assert!(
        ok && out.contains("ALL OK"),
        "{out}\n--- b:\n{}\n--- c:\n{}",
        b.log(),
        c.log()
    );
}
