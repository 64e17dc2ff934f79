//! Task leases: a driver leases an idle worker from its raylet and pushes
//! its tasks straight to it. Shown with the raylet stopped (SIGSTOP):
//! tasks keep finishing on the leased worker while a task of a new shape,
//! which must ask the raylet, waits. A lease revoked because another
//! driver's task waits finishes the task it runs, once, and is returned;
//! a leased worker `kill -9`ed under a task retries it (`max_retries`) or
//! fails it with the signal. A burst waits behind the leases while they
//! move; a task behind a lease stuck on a long task goes through the
//! raylet to a free CPU instead, and a burst of millisecond tasks beyond
//! what the leases run in the wait budget goes through the raylet, which
//! spreads it to another node. A placement group that needs the CPU an
//! idle lease holds gets it (L-3).

use prism::TaskError;
use prism_test_support::*;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[prism::remote]
fn square(x: u64) -> u64 {
    x * x
}

/// Appends a line to `path` (to count runs), writes its pid beside it,
/// sleeps `ms`.
#[prism::remote]
fn slow(path: String, ms: u64) -> u32 {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(f, "ran").unwrap();
    std::fs::write(format!("{path}.pid"), std::process::id().to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// Runs tasks one at a time until this driver holds a lease (the first
/// ones start the worker through the raylet).
fn warm() {
    let mut i = 0u64;
    let leased = wait_until(Duration::from_secs(30), || {
        i += 1;
        check(
            square::remote(i).unwrap().get().unwrap() == i * i,
            "a task's answer",
        );
        prism::__private::leased_workers() > 0
    });
    check(leased, "a worker is leased");
}

fn runs(path: &str) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

fn stopped_role() {
    warm();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicU64::new(0));
    let (d, s) = (done.clone(), stop.clone());
    let busy = std::thread::spawn(move || {
        let mut i = 0u64;
        while s.load(Ordering::SeqCst) == 0 {
            let got = square::remote(i)
                .unwrap()
                .get_timeout(Duration::from_secs(60));
            assert_eq!(got.unwrap(), i * i);
            d.fetch_add(1, Ordering::SeqCst);
            i += 1;
        }
    });
    println!("STOP ME");
    check(hold_until_done(), "the test stopped the raylet");
    // A new shape asks the raylet for a lease: it waits while it is stopped.
    let asks = square::options().num_cpus(0.5).remote(9u64).unwrap();
    let waited = prism::wait(std::slice::from_ref(&asks), 1, Some(Duration::from_secs(1)));
    check(
        waited.unwrap().0.is_empty(),
        "a task that needs the stopped raylet waits",
    );
    let before = done.load(Ordering::SeqCst);
    check(
        wait_until(Duration::from_secs(20), || {
            done.load(Ordering::SeqCst) >= before + 50
        }),
        "leased tasks finish with the raylet stopped",
    );
    println!("CONT ME");
    check(
        asks.get_timeout(Duration::from_secs(60)).unwrap() == 81,
        "it runs once the raylet is back",
    );
    stop.store(1, Ordering::SeqCst);
    busy.join().unwrap();
    println!("ALL OK");
}

fn holder_role() {
    let marks = std::env::var("PRISM_TEST_MARKS").unwrap();
    let other_done = format!("{marks}.other");
    warm();
    // Long enough that the other driver starts and queues its task while
    // this one runs on the lease.
    let r = slow::remote(marks.clone(), 4_000u64).unwrap();
    check(
        wait_until(Duration::from_secs(30), || runs(&marks) == 1),
        "the slow task started",
    );
    println!("RUNNING");
    r.get_timeout(Duration::from_secs(60)).unwrap();
    // Keep this driver's tasks coming: only a revoked lease lets the other
    // driver's task have the one CPU.
    let mut i = 0;
    while !Path::new(&other_done).exists() {
        check(
            square::remote(i)
                .unwrap()
                .get_timeout(Duration::from_secs(60))
                .unwrap()
                == i * i,
            "a task's answer",
        );
        i += 1;
        check(i < 1_000_000, "the other driver's task ran");
    }
    check(runs(&marks) == 1, "the slow task ran once");
    println!("ALL OK");
}

fn other_role() {
    let marks = std::env::var("PRISM_TEST_MARKS").unwrap();
    check(
        square::remote(3u64)
            .unwrap()
            .get_timeout(Duration::from_secs(60))
            .unwrap()
            == 9,
        "the other driver's task ran",
    );
    std::fs::write(format!("{marks}.other"), "").unwrap();
    println!("ALL OK");
}

fn killed_role() {
    let marks = std::env::var("PRISM_TEST_MARKS").unwrap();
    for retries in [1u32, 0] {
        // The slow task goes on a lease.
        warm();
        let path = format!("{marks}.{retries}");
        let r = slow::options()
            .max_retries(retries)
            .remote(path.clone(), 3_000u64)
            .unwrap();
        check(
            wait_until(Duration::from_secs(30), || {
                Path::new(&format!("{path}.pid")).exists()
            }),
            "the task started",
        );
        let pid: i32 = std::fs::read_to_string(format!("{path}.pid"))
            .unwrap()
            .parse()
            .unwrap();
        // SAFETY: kill(2) on a worker process of this test's cluster.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        match (retries, r.get_timeout(Duration::from_secs(60))) {
            (1, Ok(p)) => check(
                p as i32 != pid && runs(&path) == 2,
                "retried on another worker",
            ),
            (0, Err(prism::Error::Task(TaskError::WorkerDied { detail, .. }))) => check(
                detail.contains("signal 9"),
                "no retries: it fails with the signal",
            ),
            (_, other) => panic!("max_retries({retries}): {other:?}"),
        }
    }
    warm();
    println!("ALL OK");
}

fn stalled_role() {
    let marks = std::env::var("PRISM_TEST_MARKS").unwrap();
    warm();
    // A long task holds the one lease (and the one worker): what comes
    // after it does not wait for it, with a CPU free.
    let long = slow::remote(marks.clone(), 8_000u64).unwrap();
    check(
        wait_until(Duration::from_secs(30), || runs(&marks) == 1),
        "the long task started",
    );
    let quick = square::remote(7u64).unwrap();
    check(
        quick.get_timeout(Duration::from_secs(60)).unwrap() == 49,
        "the task after it answers",
    );
    let (ready, _) = prism::wait(std::slice::from_ref(&long), 1, Some(Duration::ZERO)).unwrap();
    check(
        ready.is_empty(),
        "it did not wait for the long task on the lease",
    );
    // A burst waits behind the leases while they move, and all of it runs.
    let burst: Vec<_> = (0..2_000u64).map(|i| square::remote(i).unwrap()).collect();
    let got = prism::get_all(&burst).unwrap();
    check(
        got.iter().enumerate().all(|(i, v)| *v == (i * i) as u64),
        "every task of a burst answers, in place",
    );
    println!("ALL OK");
}

/// Holds a lease of the one CPU (kept while idle), then asks for a
/// placement group that needs it: the head plans the bundle on the leased
/// CPU, the raylet refuses it and revokes the lease (L-3), and the next try
/// places it. Then again while a thread runs leased tasks one after
/// another: the owner asks for a new lease as soon as it returns one, and
/// the raylet declines it while the bundle waits.
fn group_role() {
    warm();
    // The head's view shows the CPU in use (a heartbeat came since the
    // lease), so the group is planned on it only for what the lease holds.
    let cpus_free = || -> i64 {
        prism::cluster::nodes()
            .unwrap()
            .iter()
            .flat_map(|n| n.available.0.iter())
            .filter(|e| e.name == "CPU")
            .map(|e| e.raw)
            .sum()
    };
    let placed = |what: &str| {
        check(
            wait_until(Duration::from_secs(30), || cpus_free() == 0),
            "the head sees the leased CPU in use",
        );
        let pg = prism::PlacementGroup::create(
            vec![prism::Bundle::new().cpus(1.0)],
            prism::PlacementStrategy::Pack,
        )
        .unwrap();
        let ready = pg.ready(Duration::from_secs(30));
        check(ready.is_ok(), &format!("{what}: {ready:?} {:?}", pg.info()));
        let inside = square::options()
            .placement_group(&pg, 0)
            .remote(7u64)
            .unwrap()
            .get_timeout(Duration::from_secs(60))
            .unwrap();
        check(inside == 49, "a task runs in the group's bundle");
        pg.remove().unwrap();
    };
    placed("a group needing the CPU an idle lease holds is placed");
    check(
        prism::__private::leased_workers() == 0,
        "the lease was revoked, not let go idle",
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = square::remote(i)
                    .unwrap()
                    .get_timeout(Duration::from_secs(60));
                check(r.is_ok_and(|r| r == i * i), "a streamed task's answer");
                i += 1;
            }
            i
        })
    };
    check(
        wait_until(Duration::from_secs(30), || {
            prism::__private::leased_workers() > 0
        }),
        "the stream runs on a lease",
    );
    placed("a group needing the CPU a stream of leased tasks holds is placed");
    stop.store(true, Ordering::Relaxed);
    let streamed = stream.join().unwrap();
    println!("{streamed} tasks streamed meanwhile");
    check(streamed > 0, "the stream ran");
    println!("ALL OK");
}

/// Where it ran, after `ms` of work.
#[prism::remote]
fn where_after(ms: u64) -> String {
    std::thread::sleep(Duration::from_millis(ms));
    prism::node_id().unwrap().to_string()
}

fn spread_role() {
    let here = prism::node_id().unwrap().to_string();
    // A lease of the 5 ms tasks' shape first.
    let leased = wait_until(Duration::from_secs(30), || {
        where_after::remote(5u64).unwrap().get().is_ok() && prism::__private::leased_workers() > 0
    });
    check(leased, "a worker is leased");
    let burst: Vec<_> = (0..400)
        .map(|_| where_after::remote(5u64).unwrap())
        .collect();
    let nodes = prism::get_all(&burst).unwrap();
    let elsewhere = nodes.iter().filter(|n| **n != here).count();
    println!("{elsewhere} of {} ran on the other node", nodes.len());
    check(
        elsewhere > 0,
        "a burst of millisecond tasks is not all kept on this node's leases",
    );
    println!("ALL OK");
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    let _c = prism::init().unwrap();
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "stopped" => stopped_role(),
        "holder" => holder_role(),
        "other" => other_role(),
        "killed" => killed_role(),
        "stalled" => stalled_role(),
        "spread" => spread_role(),
        "group" => group_role(),
        other => panic!("unknown role {other}"),
    }
}

/// Leases stay while idle for this long in these tests, so only a
/// revocation (or the test's end) returns them.
const IDLE: (&str, &str) = ("PRISM_LEASE_IDLE_MS", "60000");

#[test]
fn leased_tasks_finish_while_their_raylet_is_stopped() {
    // Stopped for longer than the sandbox's dead timeout (1 s) on a busy
    // machine: declared dead, the raylet would fence its actors when let
    // go (DA-4). What is shown here is work that skips a stopped raylet.
    let sb = Sandbox::new().with_env("PRISM_DEAD_AFTER_MISSED", "600");
    let (head, b) = sb.head_and_b(&["--num-cpus", "1"], &["--num-cpus", "2"]);
    sb.run_with_raylet_stopped("stopped", &head, &b, &[IDLE]);
}

#[test]
fn a_revoked_lease_finishes_its_task_once_and_is_returned() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "1"]);
    let envs = leased_envs(&sb, &head, "marks");
    let mut holder = Job::spawn("holder", &envs);
    assert!(
        wait_until(Duration::from_secs(60), || holder
            .stdout()
            .contains("RUNNING")),
        "{}",
        holder.stdout()
    );
    let mut other = Job::spawn("other", &envs);
    let (ok, out) = other.finish(Duration::from_secs(90));
    assert!(
        ok && out.contains("ALL OK"),
        "other: {out}\n--- holder:\n{}",
        holder.stdout()
    );
    let (ok, out) = holder.finish(Duration::from_secs(90));
    assert!(
        ok && out.contains("ALL OK"),
        "holder: {out}\n--- head:\n{}",
        head.log()
    );
}

/// The driver environment for `head`, with idle leases kept and a marks
/// file named `marks`.
fn leased_envs(sb: &Sandbox, head: &Node, marks: &str) -> Vec<(String, String)> {
    let mut envs = sb.driver_envs(head, head);
    let marks = sb.temp().join(marks).display().to_string();
    envs.push(("PRISM_TEST_MARKS".into(), marks));
    envs.push((IDLE.0.into(), IDLE.1.into()));
    envs
}

/// Runs the driver role `role` on `head` to its end; it must say ALL OK.
fn run_leased(sb: &Sandbox, head: &Node, role: &str, logs: &[&Node]) {
    let mut job = Job::spawn(role, &leased_envs(sb, head, role));
    let (ok, out) = job.finish(Duration::from_secs(120));
    let logs: Vec<String> = logs.iter().map(|n| n.log()).collect();
    assert!(
        ok && out.contains("ALL OK"),
        "{out}\n--- raylets:\n{}",
        logs.join("\n---\n")
    );
}

#[test]
fn a_leased_worker_killed_under_its_task_retries_it_or_fails_with_the_signal() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "1"]);
    run_leased(&sb, &head, "killed", &[&head]);
}

#[test]
fn tasks_wait_behind_a_moving_lease_but_not_behind_a_long_task() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "2"]);
    run_leased(&sb, &head, "stalled", &[&head]);
}

#[test]
fn a_burst_of_slower_tasks_spreads_past_the_leases() {
    let sb = Sandbox::new();
    let (head, b) = sb.head_and_b(&["--num-cpus", "2"], &["--num-cpus", "2"]);
    run_leased(&sb, &head, "spread", &[&head, &b]);
}

#[test]
fn a_placement_group_takes_back_the_cpus_leases_hold() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "1"]);
    run_leased(&sb, &head, "group", &[&head]);
}
