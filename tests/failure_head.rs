//! A head that survives `kill -9`: its state is in its session's head.db,
//! a head started again in that session recovers the cluster on the same
//! address, raylets and drivers carry on and find it again; a reservation
//! cut by the kill leaves no half-held bundle; a node id speaks only through
//! the certificate that registered it; a head frozen past the dead timeout
//! declares no node dead when it runs again (NT-7).

use prism::proto::common::Resources;
use prism::proto::head::{ErrorKind, HeadRequest};
use prism::{ActorHandle, Bundle, PlacementGroup, PlacementStrategy};
use prism_test_support::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

#[path = "common/as_node.rs"]
mod as_node;
use as_node::requests_as;

#[prism::remote]
fn square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(1));
    x * x
}

#[prism::actor]
struct Keeper {
    n: u64,
}

#[prism::actor]
impl Keeper {
    fn new() -> Self {
        Keeper { n: 0 }
    }
    fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

fn sum_squares(range: std::ops::Range<u64>) -> u64 {
    range.map(|i| i * i).sum()
}

/// Creates the detached named actor and gives it state.
fn role_keeper() {
    let _c = prism::init().unwrap();
    let k = Keeper::options().name("keeper").detached().spawn().unwrap();
    check(k.add(7).unwrap().get().unwrap() == 7, "the keeper holds 7");
    println!("ALL OK");
}

/// Runs 5,000 tasks in two halves; between them the test kills the head.
fn role_through_the_crash() {
    let _c = prism::init().unwrap();
    let go = std::env::var("PRISM_TEST_GO").unwrap();
    let refs: Vec<_> = (0..2_500u64).map(|i| square::remote(i).unwrap()).collect();
    let first: u64 = prism::get_all(&refs).unwrap().into_iter().sum();
    println!("PHASE1");
    assert!(
        wait_until(Duration::from_secs(60), || Path::new(&go).exists()),
        "the test never said go"
    );
    // The head is dead now: tasks need only the raylets.
    let refs: Vec<_> = (2_500..5_000u64)
        .map(|i| square::remote(i).unwrap())
        .collect();
    println!("PHASE2");
    let second: u64 = prism::get_all(&refs).unwrap().into_iter().sum();
    check(
        first + second == sum_squares(0..5_000),
        "5,000 tasks summed exactly across the head's death",
    );
    // A call that needs the head waits for it to come back.
    let k: ActorHandle<Keeper> = prism::get_actor("keeper").unwrap();
    check(
        k.add(1).unwrap().get().unwrap() == 8,
        "the keeper kept its state",
    );
    println!("ALL OK");
}

/// A new driver after the recovery finds the actor by name.
fn role_after() {
    let _c = prism::init().unwrap();
    let k: ActorHandle<Keeper> = prism::get_actor("keeper").unwrap();
    check(
        k.add(0).unwrap().get().unwrap() == 8,
        "a new driver finds the keeper by name, state intact",
    );
    println!("ALL OK");
}

/// Creates placement groups while the test kills the head.
fn role_groups() {
    let _c = prism::init().unwrap();
    let groups: Vec<PlacementGroup> = (0..6)
        .map(|_| {
            let b = Bundle::new().cpus(1.0);
            // SPREAD: two nodes each (a two-phase reservation), and twelve
            // bundles always fit the three 4-CPU raylets.
            PlacementGroup::create(vec![b.clone(), b], PlacementStrategy::Spread).unwrap()
        })
        .collect();
    println!("CREATED {}", groups.len());
    // Keep the job (and so its groups) alive until the test is done.
    let done = std::env::var("PRISM_TEST_DONE").unwrap();
    assert!(wait_until(Duration::from_secs(120), || Path::new(&done).exists()));
    println!("ALL OK");
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE")
        .expect("run by the tests in this file")
        .as_str()
    {
        "keeper" => role_keeper(),
        "through_the_crash" => role_through_the_crash(),
        "after" => role_after(),
        "groups" => role_groups(),
        other => panic!("unknown role {other}"),
    }
}

/// The port a node's address ends with.
fn port_of(addr: &str) -> String {
    addr.rsplit(':').next().unwrap().to_string()
}

/// Restarts the head in its own session directory, on the same port.
fn restart_head(sb: &Sandbox, head: &Node) -> Node {
    let (addr, _) = head.cluster();
    sb.spawn_in(
        "head2",
        &head.session,
        &["--head", "--head-only", "--port", &port_of(&addr)],
    )
}

fn alive_ids(sb: &Sandbox) -> Vec<String> {
    let mut v: Vec<String> = sb
        .nodes_in_state("alive")
        .iter()
        .map(|n| n["node_id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn failure_killed_head_recovers_its_cluster_and_drivers_carry_on() {
    let sb = Sandbox::new();
    let mut head = sb.start_head(&["--head-only"]);
    let a = sb.start_raylet("a", &head, &["--num-cpus", "2"]);
    let b = sb.start_raylet("b", &head, &["--num-cpus", "2"]);
    assert!(wait_until(Duration::from_secs(10), || alive_ids(&sb).len() == 2));
    let ids_before = alive_ids(&sb);
    let envs = sb.driver_envs(&head, &a);
    let (ok, out) = Job::spawn("keeper", &envs).finish(Duration::from_secs(60));
    assert!(ok && out.contains("ALL OK"), "{out}");

    let go = sb.temp().join("go");
    let mut envs2 = envs.clone();
    envs2.push(("PRISM_TEST_GO".into(), go.display().to_string()));
    let mut job = Job::spawn("through_the_crash", &envs2);
    assert!(
        wait_until(Duration::from_secs(60), || job.stdout().contains("PHASE1")),
        "{}",
        job.stdout()
    );
    head.kill9();
    let killed = Instant::now();
    std::fs::write(&go, "go").unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || job.stdout().contains("PHASE2")),
        "{}",
        job.stdout()
    );
    let head2 = restart_head(&sb, &head);
    let restarted = killed.elapsed();
    let ready_at = Instant::now();
    // Both raylets heartbeat again under their old ids.
    let back = wait_until(Duration::from_secs(30), || {
        head2
            .log()
            .matches("node is back after the head restarted")
            .count()
            >= 2
    });
    assert!(back, "{}", head2.log());
    println!(
        "head ready {restarted:?} after the kill; both raylets heartbeating again {:?} later",
        ready_at.elapsed()
    );
    let (ok, out) = job.finish(Duration::from_secs(120));
    assert!(
        ok && out.contains("ALL OK"),
        "{out}\n--- head2:\n{}\n--- a:\n{}\n--- b:\n{}",
        head2.log(),
        a.log(),
        b.log()
    );
    assert!(head2.log().contains("recovered cluster"), "{}", head2.log());
    // The same node ids, alive again without registering anew.
    let reregistered = wait_until(Duration::from_secs(30), || alive_ids(&sb) == ids_before);
    assert!(reregistered, "{:#}", sb.status());
    println!(
        "head restart to every raylet alive again: {:?} after the kill",
        killed.elapsed()
    );
    println!("(the restarted head was ready {restarted:?} after the kill)");
    let (ok, out) =
        Job::spawn("after", &sb.driver_envs(&head2, &b)).finish(Duration::from_secs(60));
    assert!(ok && out.contains("ALL OK"), "{out}");
    // The jobs from before the crash are listed.
    let out = sb.run(&["job", "list", "--json"]);
    let jobs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        jobs.as_array().unwrap().len() >= 3,
        "the jobs from before the crash are listed: {jobs:#}"
    );
}

#[test]
fn failure_head_killed_during_reservations_leaves_no_half_held_bundle() {
    let sb = Sandbox::new();
    let mut head = sb.start_head(&["--head-only"]);
    let raylets: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| sb.start_raylet(n, &head, &["--num-cpus", "4"]))
        .collect();
    assert!(wait_until(Duration::from_secs(10), || alive_ids(&sb).len() == 3));
    let (mut job, done) = sb.held_driver("groups", &head, &raylets[0]);
    assert!(
        wait_until(Duration::from_secs(60), || job.stdout().contains("CREATED")),
        "{}",
        job.stdout()
    );
    // Right after the creations: some reservations are under way.
    head.kill9();
    let head2 = restart_head(&sb, &head);
    // Every group ends created with every bundle, or pending with none, and
    // the CPUs held on the raylets are exactly the created groups' bundles.
    let settled = wait_until(Duration::from_secs(60), || {
        let out = sb.run(&["list", "placement-groups", "--json"]);
        let groups: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let Some(groups) = groups.as_array() else {
            return false;
        };
        let created = groups.iter().filter(|g| g["state"] == "created").count();
        let whole = groups.iter().all(|g| {
            let held = g["nodes"]
                .as_array()
                .map_or(0, |n| n.iter().filter(|n| !n.is_null()).count());
            (g["state"] == "created" && held == 2) || (g["state"] != "created" && held == 0)
        });
        let status = sb.status();
        // A resource with nothing free is left out of the JSON.
        let free = status["totals"]["available"]["CPU"].as_f64().unwrap_or(0.0);
        whole && groups.len() == 6 && (12.0 - free) as usize == 2 * created && created == 6
    });
    assert!(
        settled,
        "{}\n{:#}\n--- head2:\n{}\n--- a:\n{}",
        String::from_utf8_lossy(&sb.run(&["list", "placement-groups", "--json"]).stdout),
        sb.status(),
        head2.log(),
        raylets[0].log()
    );
    std::fs::write(&done, "done").unwrap();
    let (ok, out) = job.finish(Duration::from_secs(60));
    assert!(ok, "{out}");
}

#[test]
fn failure_a_raylet_cannot_speak_for_another_nodes_id() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--head-only"]);
    let a = sb.start_raylet("a", &head, &["--num-cpus", "1"]);
    let b = sb.start_raylet("b", &head, &["--num-cpus", "1"]);
    let a_id = a.node_id();
    // b's certificate, a's node id.
    let beat = HeadRequest::Heartbeat {
        node_id: a_id.parse().unwrap(),
        available: Resources::default(),
        leased: Resources::default(),
        demand: vec![],
    };
    let bye = HeadRequest::Unregister {
        node_id: a_id.parse().unwrap(),
    };
    for r in requests_as(&head, &b, &[beat, bye]) {
        match r {
            Err(prism::client::ClientError::Refused { kind, message }) => {
                assert_eq!(kind, ErrorKind::Unauthorized);
                assert!(message.contains("another certificate"), "{message}");
            }
            other => panic!("the impostor was not refused: {other:?}"),
        }
    }
    assert!(
        head.log().contains("refused a request for a node"),
        "the refusal is logged:\n{}",
        head.log()
    );
    // The real node is unaffected.
    let alive = alive_ids(&sb);
    assert!(alive.contains(&a_id), "{:#}", sb.status());
}

#[test]
fn cluster_prism_start_head_recovers_a_killed_head_and_a_stopped_one_starts_fresh() {
    let sb = Sandbox::new();
    let out = sb.run(&["start", "--head", "--port", "0", "--num-cpus", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let session = std::fs::read_dir(sb.temp())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("head.db").exists())
        .expect("the head keeps head.db in its session");
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(session.join("cluster.json")).unwrap())
            .unwrap();
    let addr = info["head_address"].as_str().unwrap().to_string();
    let token = info["token"].as_str().unwrap().to_string();
    let out = sb.run(&[
        "start",
        "--address",
        &addr,
        "--token",
        &token,
        "--num-cpus",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(wait_until(Duration::from_secs(10), || alive_ids(&sb).len() == 2));
    let raylet_ids = alive_ids(&sb);

    let daemon: Value =
        serde_json::from_str(&std::fs::read_to_string(session.join("daemon.json")).unwrap())
            .unwrap();
    let pid = daemon["pid"].as_u64().unwrap() as u32;
    // SAFETY: kill(2) on the head daemon this test started.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    assert!(wait_until(Duration::from_secs(10), || !process_running(
        pid
    )));

    let out = sb.run(&["start", "--head", "--num-cpus", "1"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("Recovered cluster c-"), "{said}");
    assert!(
        said.contains(&format!("Prism head started at {addr}")),
        "same address: {said}"
    );
    // The other raylet is alive under its old id (the head's own raylet is
    // a new incarnation of its name).
    // (One wait for either id: the head's own old raylet never comes back.)
    let joined = wait_until(Duration::from_secs(30), || {
        let alive = alive_ids(&sb);
        raylet_ids.iter().any(|id| alive.contains(id))
    });
    assert!(joined, "{:#}", sb.status());

    // A clean stop: the next start is a new cluster.
    let out = sb.run(&["stop"]);
    assert!(out.status.success());
    let out = sb.run(&["start", "--head", "--port", "0", "--num-cpus", "1"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!said.contains("Recovered"), "{said}");
    let _ = sb.run(&["stop"]);
}

/// NT-7: a head frozen (SIGSTOP) for three times the dead timeout counts
/// that time as its own stall, not as every node's silence: when it runs
/// again, no node is declared dead, no raylet is told to register again,
/// and the same node ids stay alive.
#[test]
fn failure_a_stalled_head_declares_no_node_dead() {
    let sb = Sandbox::new();
    let (head, b) = sb.head_and_b(&[], &["--num-cpus", "1"]);
    let before = alive_ids(&sb);
    let dead_timeout = Duration::from_millis(HEARTBEAT_MS * DEAD_AFTER);
    head.signal(libc::SIGSTOP);
    // The stimulus: a stall well past the dead timeout.
    std::thread::sleep(dead_timeout * 3);
    head.signal(libc::SIGCONT);
    // The head answers again (its first ticks have run by then).
    let answers = wait_until(Duration::from_secs(30), || {
        sb.run(&["status", "--json"]).status.success()
    });
    assert!(answers, "{}", head.log());
    // Absence needs a window: several dead timeouts of ticks after the
    // resume, none of which may declare a node dead.
    let died = wait_until(dead_timeout * 3, || !sb.nodes_in_state("dead").is_empty());
    assert!(
        !died,
        "a node was declared dead:\n{:#}\n--- head:\n{}",
        sb.status(),
        head.log()
    );
    assert_eq!(alive_ids(&sb), before, "{:#}", sb.status());
    assert!(
        !b.log().contains("declared dead"),
        "the raylet was told it was declared dead:\n{}",
        b.log()
    );
}
