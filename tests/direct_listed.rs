//! Work that skips the raylet is still listed: direct actor calls and
//! leased tasks, made while the raylet is stopped (SIGSTOP) so that they
//! can only have gone straight to their workers, show in `prism list
//! tasks --json` as finished once it runs again, from their workers'
//! reports; a long direct call shows as running with its worker's pid,
//! and as failed with the worker's exit once that worker is `kill -9`ed.
//! The sockets of the dead actor and of the job's ended workers are
//! removed. Tasks waiting in their owner for its leases are listed queued
//! until the owner goes.

use prism_test_support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[prism::actor]
struct Log {
    items: Vec<u64>,
}

#[prism::actor]
impl Log {
    fn new() -> Self {
        Log { items: Vec::new() }
    }
    fn push(&mut self, i: u64) -> usize {
        self.items.push(i);
        self.items.len()
    }
    fn pid(&self) -> u32 {
        std::process::id()
    }
    fn nap(&self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }
}

#[prism::remote]
fn square(x: u64) -> u64 {
    x * x
}

fn listed_role() {
    let log = Log::options().spawn().unwrap();
    let linked = wait_until(Duration::from_secs(30), || {
        log.pid().unwrap().get().is_ok() && prism::__private::calls_directly(log.id())
    });
    check(linked, "the driver calls the actor directly");
    println!("PID {}", log.pid().unwrap().get().unwrap());
    let raylet = std::env::var("PRISM_RAYLET_SOCKET").unwrap();
    let sockets = Path::new(&raylet).parent().unwrap().join("a");
    println!("SOCKETS {}\nACTOR {}", sockets.display(), log.id());
    let mut i = 0u64;
    let leased = wait_until(Duration::from_secs(30), || {
        i += 1;
        square::remote(i).unwrap().get().is_ok() && prism::__private::leased_workers() > 0
    });
    check(leased, "a worker is leased");
    println!("STOP ME");
    check(hold_until_done(), "the test stopped the raylet");
    for i in 0..20u64 {
        let call = log.push(i).unwrap();
        let task = square::remote(i).unwrap();
        check(
            call.get_timeout(Duration::from_secs(20)).is_ok()
                && task.get_timeout(Duration::from_secs(20)).unwrap() == i * i,
            "direct work answers with the raylet stopped",
        );
        println!("CALL {}\nTASK {}", call.id(), task.id());
    }
    let nap = log.nap(120_000).unwrap();
    println!("NAP {}", nap.id());
    println!("CONT ME");
    // Holds the nap's ref until its worker is killed.
    let _ = nap.get_timeout(Duration::from_secs(120));
    println!("ALL OK");
}

#[prism::remote]
fn tick(i: u64) -> u64 {
    i + 1
}

/// Submits more quick tasks than its lease runs in seconds: they wait in
/// this driver for it (quick ones all may, LO-2), until the test kills
/// the driver.
fn waiting_role() {
    // A lease first: else the burst goes through the raylet while the
    // lease's worker starts.
    let mut i = 0u64;
    let leased = wait_until(Duration::from_secs(30), || {
        i += 1;
        tick::remote(i).unwrap().get().is_ok() && prism::__private::leased_workers() > 0
    });
    check(leased, "a worker is leased");
    let refs: Vec<_> = (0..90_000u64).map(|i| tick::remote(i).unwrap()).collect();
    println!("SUBMITTED {}", refs.len());
    check(hold_until_done(), "the test kills this driver first");
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    let _c = prism::init().unwrap();
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "listed" => listed_role(),
        "waiting" => waiting_role(),
        other => panic!("unknown role {other}"),
    }
}

/// `o-<hex>` (a result object) to `t-<hex>` (its task).
fn task_id(object: &str) -> String {
    format!("t-{}", object.trim_start_matches("o-"))
}

fn printed(out: &str, tag: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix(tag))
        .map(task_id)
        .collect()
}

fn row<'a>(rows: &'a [Value], id: &str) -> Option<&'a Value> {
    rows.iter().find(|t| t["task_id"] == id)
}

#[test]
fn direct_calls_and_leased_tasks_are_listed_from_their_workers() {
    // The head (with its raylet) is stopped for a while: no node is to be
    // declared dead for it (a raylet declared dead fences its actors).
    let sb = Sandbox::new().with_env("PRISM_DEAD_AFTER_MISSED", "600");
    let head = sb.start_head(&["--num-cpus", "2"]);
    let env = [("PRISM_LEASE_IDLE_MS", "60000")];
    let (mut job, done) = sb.held_driver_with("listed", &head, &head, &env);
    let said = |job: &Job, what: &str| job.stdout().contains(what);
    let asked = wait_until(Duration::from_secs(60), || said(&job, "STOP ME"));
    assert!(asked, "{}\n--- head:\n{}", job.stdout(), head.log());
    head.signal(libc::SIGSTOP);
    std::fs::write(&done, "").unwrap();
    let reached = wait_until(Duration::from_secs(60), || said(&job, "CONT ME"));
    head.signal(libc::SIGCONT);
    assert!(reached, "{}", job.stdout());

    let out = job.stdout();
    let pid: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("PID "))
        .and_then(|p| p.parse().ok())
        .unwrap();
    let (calls, tasks) = (printed(&out, "CALL "), printed(&out, "TASK "));
    let nap = printed(&out, "NAP ").remove(0);
    let field = |tag: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(tag))
            .unwrap()
            .to_string()
    };
    let (sockets, actor) = (PathBuf::from(field("SOCKETS ")), field("ACTOR "));
    assert!(
        sockets.join(&actor).exists(),
        "the actor listens in {}",
        sockets.display()
    );
    assert_eq!((calls.len(), tasks.len()), (20, 20), "{out}");
    let list = || -> Vec<Value> {
        serde_json::from_slice(&sb.run(&["list", "tasks", "--json"]).stdout).unwrap_or_default()
    };
    let mut rows = Vec::new();
    let all_listed = wait_until(Duration::from_secs(30), || {
        rows = list();
        let finished = |id: &String| row(&rows, id).is_some_and(|t| t["state"] == "finished");
        calls.iter().all(finished)
            && tasks.iter().all(finished)
            && row(&rows, &nap).is_some_and(|t| t["state"] == "running")
    });
    assert!(all_listed, "{rows:#?}");
    for id in &calls {
        let t = row(&rows, id).unwrap();
        assert_eq!(t["kind"], "actor_call", "{t:#}");
        assert_eq!(t["worker_pid"], pid, "{t:#}");
        assert!(t["function"].as_str().unwrap().contains("push"), "{t:#}");
        let (start, end) = (t["started_us"].as_u64(), t["ended_us"].as_u64());
        assert!(start.is_some() && end >= start, "{t:#}");
    }
    for id in &tasks {
        let t = row(&rows, id).unwrap();
        assert_eq!(t["kind"], "task", "{t:#}");
        assert!(t["worker_pid"].as_u64().is_some(), "{t:#}");
        assert!(t["function"].as_str().unwrap().contains("square"), "{t:#}");
    }
    assert_eq!(row(&rows, &nap).unwrap()["worker_pid"], pid);
    // No lease is listed as a task of its own.
    assert!(
        rows.iter().all(|t| t["function"] != "__prism_lease__"),
        "{rows:#?}"
    );

    // SAFETY: kill(2) on the actor's worker, a process of this test's cluster.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let failed = wait_until(Duration::from_secs(30), || {
        rows = list();
        row(&rows, &nap).is_some_and(|t| t["state"] == "failed")
    });
    assert!(failed, "{rows:#?}");
    // The dead actor's socket goes with it.
    let socket = sockets.join(&actor);
    assert!(
        wait_until(Duration::from_secs(30), || !socket.exists()),
        "{} stays",
        socket.display()
    );
    let error = row(&rows, &nap).unwrap()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains(&format!("pid {pid}")), "{error}");
    let (ok, out) = job.finish(Duration::from_secs(60));
    assert!(ok && out.contains("ALL OK"), "{out}");
    // Its task workers end with the job, and their lease sockets with them.
    let left = || -> Vec<String> {
        std::fs::read_dir(&sockets)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(30), || left().is_empty()),
        "{:?}",
        left()
    );
}

#[test]
fn tasks_waiting_in_their_owner_for_a_lease_are_listed_until_it_goes() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "1"]);
    let env = [("PRISM_LEASE_IDLE_MS", "60000")];
    let (mut job, _done) = sb.held_driver_with("waiting", &head, &head, &env);
    let submitted = wait_until(Duration::from_secs(60), || {
        job.stdout().contains("SUBMITTED")
    });
    assert!(submitted, "{}\n--- head:\n{}", job.stdout(), head.log());
    let queued = || -> Vec<Value> {
        let out = sb.run(&[
            "list", "tasks", "--state", "queued", "--limit", "5000", "--json",
        ]);
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        rows.into_iter()
            .filter(|t| t["function"].as_str().is_some_and(|f| f.contains("tick")))
            .collect()
    };
    let mut rows = Vec::new();
    // Every tick rides the driver's one lease: the raylet queues none of
    // them, so those listed queued are the driver's own list.
    let listed = wait_until(Duration::from_secs(30), || {
        rows = queued();
        rows.len() >= 100
    });
    assert!(listed, "{rows:#?}\n--- driver:\n{}", job.stdout());
    for t in &rows {
        assert_eq!(t["kind"], "task", "{t:#}");
        assert!(t["worker_pid"].is_null(), "{t:#}");
        assert!(t["submitted_us"].as_u64().unwrap_or(0) > 0, "{t:#}");
    }
    job.kill9();
    let gone = wait_until(Duration::from_secs(30), || {
        rows = queued();
        rows.is_empty()
    });
    assert!(gone, "the driver's waiting tasks outlive it: {rows:#?}");
}
