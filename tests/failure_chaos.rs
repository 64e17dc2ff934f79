//! The chaos findings, each against real processes: a spilled task's wait
//! ends when its node is declared dead (not at QUIC's idle timeout), new
//! drivers skip dead raylets' sessions, a worker that never says hello is
//! killed at its deadline, infeasible work waits for a node that joins —
//! and a bounded chaos run (workers `kill -9`ed every 200 ms, a raylet
//! killed once, garbage on the local sockets) that must give the exact
//! answer and leave no process behind.

use prism::TaskError;
use prism_test_support::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[prism::remote]
fn slow_square(x: u64, ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x * x
}

#[prism::remote]
fn node_of(_x: u64) -> String {
    std::env::var("PRISM_NODE_ID").unwrap_or_default()
}

#[prism::actor]
struct Adder {
    calls: u64,
}

#[prism::actor]
impl Adder {
    fn new() -> Self {
        Adder { calls: 0 }
    }
    fn add(&mut self, a: u64, b: u64) -> u64 {
        self.calls += 1;
        a + b
    }
}

/// Tasks that only nodes with `w` run; their node is killed under them.
fn role_spill_failover() {
    let _c = prism::init().unwrap();
    let refs: Vec<_> = (0..4u64)
        .map(|i| {
            slow_square::options()
                .num_cpus(0.0)
                .resource("w", 1.0)
                .max_retries(3)
                .remote(i, 3_000u64)
                .unwrap()
        })
        .collect();
    println!("SUBMITTED");
    // Far below the QUIC idle timeout this test sets (300 s): the retries
    // must start when the node is declared dead (1 s here), so all four are
    // back well within 30 s (about 6 s here; 40 s when the forward waited
    // for the connection to time out instead).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let got: Vec<u64> = refs
        .iter()
        .map(|r| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            r.get_timeout(left).unwrap()
        })
        .collect();
    check(
        got == vec![0, 1, 4, 9],
        "every task finished after its node died",
    );
    println!("ALL OK");
}

/// A driver that finds its raylet by searching the session directories.
fn role_find_live_raylet() {
    let _c = prism::init().unwrap();
    let node = node_of::remote(0u64).unwrap().get().unwrap();
    check(!node.is_empty(), "a task ran on a live raylet");
    println!("RAN ON {node}");
    println!("ALL OK");
}

/// Its workers never say hello: the task must fail, naming the deadline.
fn role_silent_worker() {
    if prism::is_worker() {
        // A job binary that hangs before `prism::init()`.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let _c = prism::init().unwrap();
    let r = slow_square::remote(3u64, 0u64).unwrap();
    match r.get_timeout(Duration::from_secs(60)) {
        Err(prism::Error::Task(TaskError::WorkerStartFailed { detail, .. })) => {
            check(detail.contains("did not connect"), "the failure says why");
            check(detail.contains("1500 ms"), "and names the deadline");
            check(
                detail.contains(&std::env::current_exe().unwrap().display().to_string()),
                "and the binary",
            );
            let pid: u32 = detail
                .split("(pid ")
                .nth(1)
                .and_then(|s| s.split(')').next())
                .and_then(|s| s.parse().ok())
                .expect("a pid in the detail");
            check(
                wait_until(Duration::from_secs(10), || !process_running(pid)),
                "the silent worker was killed",
            );
        }
        other => panic!("expected WorkerStartFailed, got {other:?}"),
    }
    println!("ALL OK");
}

/// An actor that needs `r1`, which no node has until the test starts one.
fn role_infeasible_waits() {
    let _c = prism::init().unwrap();
    let adder = Adder::options().resource("r1", 1.0).spawn().unwrap();
    let sum = adder.add(2, 3).unwrap();
    println!("ACTOR_PENDING");
    check(
        sum.get_timeout(Duration::from_secs(60)).unwrap() == 5,
        "the actor was created on the node that joined",
    );
    println!("ALL OK");
}

/// Squares summed under kills; the answer must be exact.
fn role_chaos() {
    let _c = prism::init().unwrap();
    let n: u64 = std::env::var("PRISM_CHAOS_TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_500);
    let adder = Adder::options()
        .max_restarts(1_000)
        .max_task_retries(1_000)
        .spawn()
        .unwrap();
    println!("STARTED");
    let mut total = 0u64;
    let mut actor_total = 0u64;
    for wave in (0..n).collect::<Vec<_>>().chunks(100) {
        let refs: Vec<_> = wave
            .iter()
            .map(|&i| {
                slow_square::options()
                    .max_retries(50)
                    .remote(i, 10u64)
                    .unwrap()
            })
            .collect();
        let sums: Vec<_> = wave
            .iter()
            .step_by(10)
            .map(|&i| adder.add(i, 1).unwrap())
            .collect();
        for r in refs {
            total += r.get_timeout(Duration::from_secs(120)).unwrap();
        }
        for s in sums {
            actor_total += s.get_timeout(Duration::from_secs(120)).unwrap();
        }
    }
    let want: u64 = (0..n).map(|i| i * i).sum();
    let want_actor: u64 = (0..n).step_by(10).map(|i| i + 1).sum();
    check(
        total == want,
        &format!("exact sum of {n} squares under kills"),
    );
    check(
        actor_total == want_actor,
        "exact actor sums across restarts",
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
        "spill_failover" => role_spill_failover(),
        "find_live_raylet" => role_find_live_raylet(),
        "silent_worker" => role_silent_worker(),
        "infeasible_waits" => role_infeasible_waits(),
        "chaos" => role_chaos(),
        other => panic!("unknown role {other}"),
    }
}

/// Running tasks per node id, from `prism list tasks --json`.
fn running_nodes(sb: &Sandbox) -> BTreeSet<String> {
    let out = sb.run(&["list", "tasks", "--state", "running", "--json"]);
    let tasks: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    tasks
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["node_id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn failure_spilled_tasks_fail_over_when_their_node_is_declared_dead() {
    // QUIC would notice the dead peer only after 300 s.
    let sb = Sandbox::new().with_env("PRISM_IDLE_TIMEOUT_MS", "300000");
    let head = sb.start_head(&["--head-only"]);
    let a = sb.start_raylet("a", &head, &["--num-cpus", "1"]);
    let mut b = sb.start_raylet(
        "b",
        &head,
        &["--num-cpus", "2", "--resources", r#"{"w": 2}"#],
    );
    let mut c = sb.start_raylet(
        "c",
        &head,
        &["--num-cpus", "2", "--resources", r#"{"w": 2}"#],
    );
    let mut job = Job::spawn_exe(
        &std::env::current_exe().unwrap(),
        "spill_failover",
        &sb.driver_envs(&head, &a),
    );
    // Kill a node that runs some of the spilled tasks.
    let mut running = BTreeSet::new();
    assert!(
        wait_until(Duration::from_secs(60), || {
            running = running_nodes(&sb);
            !running.is_empty()
        }),
        "no task started: {}",
        job.stdout()
    );
    let killed = Instant::now();
    let victim = if running.contains(&b.node_id()) {
        &mut b
    } else {
        &mut c
    };
    victim.kill9();
    let (ok, out) = job.finish(Duration::from_secs(120));
    let failover = killed.elapsed();
    assert!(ok && out.contains("ALL OK"), "{out}\n--- a:\n{}", a.log());
    assert!(
        a.log().contains("spilled task failed on the peer"),
        "the tasks were retried by the raylet that spilled them:\n{}",
        a.log()
    );
    println!("failover after kill -9 of a raylet holding spilled tasks: {failover:?}");
}

/// Session directories under `temp`, oldest first.
fn sessions(temp: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(temp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("session_")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn failure_new_drivers_skip_a_dead_raylets_session_and_stop_cleans_it() {
    let sb = Sandbox::new();
    let start = |args: &[&str]| {
        let out = sb.run(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    start(&["start", "--head", "--head-only", "--port", "0"]);
    let head_session = sessions(sb.temp())[0].clone();
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(head_session.join("cluster.json")).unwrap())
            .unwrap();
    let (addr, token) = (
        info["head_address"].as_str().unwrap(),
        info["token"].as_str().unwrap(),
    );
    start(&[
        "start",
        "--address",
        addr,
        "--token",
        token,
        "--num-cpus",
        "1",
    ]);
    start(&[
        "start",
        "--address",
        addr,
        "--token",
        token,
        "--num-cpus",
        "1",
    ]);
    // The newest session is the one a driver would try first: kill it.
    let newest = sessions(sb.temp()).pop().unwrap();
    let daemon: Value =
        serde_json::from_str(&std::fs::read_to_string(newest.join("daemon.json")).unwrap())
            .unwrap();
    let pid = daemon["pid"].as_u64().unwrap() as i32;
    // SAFETY: kill(2) on a daemon this test started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    assert!(wait_until(Duration::from_secs(10), || !process_running(
        pid as u32
    )));
    assert!(
        newest.join("tasks.sock").exists(),
        "a killed raylet leaves its socket"
    );

    let temp = sb.temp().display().to_string();
    let mut envs: Vec<(String, String)> = sb.envs.clone();
    envs.push(("PRISM_ADDRESS".into(), addr.into()));
    envs.push(("PRISM_TEMP_DIR".into(), temp));
    let mut job = Job::spawn("find_live_raylet", &envs);
    let (ok, out) = job.finish(Duration::from_secs(60));
    assert!(ok && out.contains("ALL OK"), "{out}");

    let out = sb.run(&["stop"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("Stopped 2"), "{said}");
    assert!(said.contains("Cleaned up 1 session"), "{said}");
    assert!(!newest.join("tasks.sock").exists() && !newest.join("ready.json").exists());
    assert!(daemon_pids(sb.temp()).is_empty());
}

#[test]
fn failure_a_worker_that_never_says_hello_is_killed_at_its_deadline() {
    run_role_with(
        "silent_worker",
        &[("PRISM_WORKER_START_TIMEOUT_MS", "1500")],
        Duration::from_secs(120),
    );
}

#[test]
fn failure_infeasible_actor_waits_for_the_node_that_joins() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--head-only"]);
    let a = sb.start_raylet("a", &head, &["--num-cpus", "1"]);
    let mut job = Job::spawn_exe(
        &std::env::current_exe().unwrap(),
        "infeasible_waits",
        &sb.driver_envs(&head, &a),
    );
    let demand_names_r1 = || {
        sb.status()["demand"].as_array().is_some_and(|d| {
            d.iter()
                .any(|d| d["infeasible"].as_str().is_some_and(|w| w.contains("r1")))
        })
    };
    assert!(
        wait_until(Duration::from_secs(60), demand_names_r1),
        "infeasible demand not reported: {:#}\n{}",
        sb.status(),
        job.stdout()
    );
    let _b = sb.start_raylet(
        "b",
        &head,
        &["--num-cpus", "1", "--resources", r#"{"r1": 4}"#],
    );
    let (ok, out) = job.finish(Duration::from_secs(120));
    assert!(ok && out.contains("ALL OK"), "{out}\n--- a:\n{}", a.log());
    assert!(
        out.contains("cannot be scheduled on any node now") && out.contains("r1"),
        "the driver was warned, naming the resource:\n{out}"
    );
    assert!(!demand_names_r1(), "{:#}", sb.status());
}

/// Writes garbage to a Unix socket (a local client gone wrong).
fn garbage_to(sock: &Path, seed: u64) {
    use std::io::Write;
    if let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) {
        let bytes: Vec<u8> = (0..64u64)
            .map(|i| (seed.wrapping_mul(31) ^ i) as u8)
            .collect();
        let _ = s.write_all(b"PZ\x01\x00\xff\xff\x00\x00");
        let _ = s.write_all(&bytes);
    }
}

/// The chaos run, bounded for CI: `PRISM_CHAOS_TASKS` tasks (default
/// 1,500) and an actor's calls under a `kill -9` of a random worker every
/// 200 ms, one raylet killed midway, garbage on the local sockets; the sums
/// must be exact and no process may outlive the run.
fn chaos_run(tasks: u64, budget: Duration) {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "2"]);
    let a = sb.start_raylet("a", &head, &["--num-cpus", "2"]);
    let mut b = sb.start_raylet("b", &head, &["--num-cpus", "2"]);
    assert!(wait_until(Duration::from_secs(10), || sb
        .nodes_in_state("alive")
        .len()
        == 3));
    let mut envs = sb.driver_envs(&head, &head);
    envs.push(("PRISM_CHAOS_TASKS".into(), tasks.to_string()));
    let mut job = Job::spawn_exe(&std::env::current_exe().unwrap(), "chaos", &envs);
    assert!(wait_until(Duration::from_secs(60), || job
        .stdout()
        .contains("STARTED")));

    let raylets = [head.pid(), a.pid(), b.pid()];
    let mut seen_workers: BTreeSet<u32> = BTreeSet::new();
    let (mut kills, mut garbage) = (0u64, 0u64);
    let started = Instant::now();
    let mut b_killed = false;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    loop {
        if job.child.as_mut().unwrap().try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            started.elapsed() < budget,
            "the chaos run did not finish in {budget:?}"
        );
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let live: Vec<u32> = raylets
            .iter()
            .filter(|p| process_running(**p))
            .flat_map(|p| children_of(*p))
            .collect();
        seen_workers.extend(&live);
        if !live.is_empty() {
            let victim = live[(rng % live.len() as u64) as usize];
            // SAFETY: kill(2) on a worker of a raylet this test started.
            unsafe {
                libc::kill(victim as i32, libc::SIGKILL);
            }
            kills += 1;
        }
        if kills % 3 == 0 {
            for node in [&head, &a] {
                garbage_to(&node.session.join("tasks.sock"), rng);
                garbage_to(&node.session.join("store.sock"), rng >> 8);
                garbage += 2;
            }
        }
        if !b_killed && started.elapsed() > Duration::from_secs(3) {
            seen_workers.extend(children_of(b.pid()));
            b.kill9();
            b_killed = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, out) = job.finish(Duration::from_secs(10));
    assert!(
        ok && out.contains("ALL OK"),
        "{out}\n--- head:\n{}",
        head.log()
    );
    println!(
        "chaos: {tasks} tasks in {:?}, {kills} workers killed, raylet b killed: {b_killed}, {garbage} garbage connections",
        started.elapsed()
    );
    // The cluster still serves a new driver.
    let mut again = Job::spawn_exe(
        &std::env::current_exe().unwrap(),
        "find_live_raylet",
        &sb.driver_envs(&head, &a),
    );
    let (ok, out) = again.finish(Duration::from_secs(60));
    assert!(ok, "{out}");
    // No orphans: every worker seen is gone once its job ended (the killed
    // raylet's workers with it).
    drop((head, a, b));
    let left: Vec<u32> = seen_workers
        .iter()
        .copied()
        .filter(|p| process_running(*p))
        .collect();
    assert!(
        wait_until(Duration::from_secs(10), || seen_workers
            .iter()
            .all(|p| !process_running(*p))),
        "workers outlived the run: {left:?}"
    );
}

#[test]
fn failure_chaos_bounded() {
    chaos_run(3_000, Duration::from_secs(300));
}

#[test]
#[ignore = "the full chaos run (20,000 tasks); run with --ignored"]
fn stress_chaos_20k() {
    chaos_run(20_000, Duration::from_secs(1_800));
}
