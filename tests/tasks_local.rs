//! Tasks on the embedded single-machine cluster (`prism::init()` with no
//! address): real worker processes started by the in-process raylet.
//! Each test runs a driver (this binary re-executed with PRISM_TEST_ROLE).

use prism::TaskError;
use prism_test_support::*;
use std::time::Duration;

#[prism::remote]
fn square(x: u64) -> u64 {
    x * x
}

#[prism::remote]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[prism::remote]
fn total(v: Vec<u64>) -> u64 {
    v.iter().sum()
}

/// Sums the values behind refs nested in a value (they stay refs).
#[prism::remote]
fn sum_refs(refs: Vec<prism::ObjectRef<u64>>) -> u64 {
    refs.iter().map(|r| r.get().unwrap()).sum()
}

#[prism::remote]
fn nested(depth: u32) -> u32 {
    if depth == 0 {
        return 0;
    }
    1 + nested::remote(depth - 1).unwrap().get().unwrap()
}

#[prism::remote]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[prism::remote]
async fn async_double(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(1)).await;
    x * 2
}

#[prism::remote]
fn big(n: u64) -> Vec<u8> {
    vec![7u8; n as usize]
}

#[prism::remote]
fn boom(x: u64) -> u64 {
    if x > 0 {
        panic!("boom with {x}");
    }
    x
}

/// SIGKILLs its own worker on the first attempt (a marker file remembers it).
#[prism::remote]
fn die_once(marker: String) -> u64 {
    if std::fs::metadata(&marker).is_err() {
        std::fs::write(&marker, b"x").unwrap();
        // SAFETY: kill(2) on our own pid.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    42
}

/// Writes its pid into `dir`, then sleeps (the driver gets killed meanwhile).
#[prism::remote]
fn park(dir: String, i: u64) -> u64 {
    std::fs::write(format!("{dir}/{}", std::process::id()), i.to_string()).unwrap();
    std::thread::sleep(Duration::from_secs(120));
    i
}

fn role_basics() {
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    // 10,000 tasks.
    let refs: Vec<_> = (0..10_000u64).map(|i| square::remote(i).unwrap()).collect();
    let sum: u64 = prism::get_all(&refs).unwrap().into_iter().sum();
    check(
        sum == (0..10_000u64).map(|i| i * i).sum::<u64>(),
        "10,000 tasks",
    );
    // Refs as arguments, put, nested refs, async functions, large results.
    let a = square::remote(3u64).unwrap();
    let p = prism::put(&4u64).unwrap();
    check(
        add::remote(&a, &p).unwrap().get().unwrap() == 13,
        "refs as arguments",
    );
    let v = prism::put(&vec![1u64, 2, 3]).unwrap();
    check(
        total::remote(v).unwrap().get().unwrap() == 6,
        "put value as argument",
    );
    let inner: Vec<_> = (1..=4u64).map(|i| square::remote(i).unwrap()).collect();
    check(
        sum_refs::remote(inner).unwrap().get().unwrap() == 30,
        "refs nested in a value stay refs",
    );
    check(
        nested::remote(4u32).unwrap().get().unwrap() == 4,
        "nested tasks",
    );
    check(
        async_double::remote(21u64).unwrap().get().unwrap() == 42,
        "async remote fn",
    );
    let b = big::remote(1u64 << 20).unwrap();
    check(
        b.get().unwrap().len() == 1 << 20,
        "1 MiB result via the object store",
    );
    check(
        total::remote(vec![5u64; 20_000]).unwrap().get().unwrap() == 100_000,
        "large inline argument via the store",
    );
    let large = prism::put(&(0..50_000u64).collect::<Vec<_>>()).unwrap();
    check(
        large.get().unwrap() == (0..50_000u64).collect::<Vec<_>>(),
        "a large put is archived in place and read back",
    );
    check(
        total::remote(&large).unwrap().get().unwrap() == (0..50_000u64).sum::<u64>(),
        "a large put as an argument",
    );
    // wait with num_returns and timeout.
    let fast = sleep_ms::remote(10u64).unwrap();
    let slow = sleep_ms::remote(3_000u64).unwrap();
    let (ready, rest) = prism::wait(
        &[slow.clone(), fast.clone()],
        1,
        Some(Duration::from_secs(2)),
    )
    .unwrap();
    check(
        ready.len() == 1 && ready[0].id() == fast.id() && rest.len() == 1,
        "wait num_returns=1",
    );
    let (ready, _) = prism::wait(
        std::slice::from_ref(&slow),
        1,
        Some(Duration::from_millis(200)),
    )
    .unwrap();
    // It returned on its timeout, not on the task: the task is still running.
    let (still, _) = prism::wait(std::slice::from_ref(&slow), 1, Some(Duration::ZERO)).unwrap();
    check(ready.is_empty() && still.is_empty(), "wait timeout");
    // get timeout.
    match slow.get_timeout(Duration::from_millis(100)) {
        Err(prism::Error::Timeout { .. }) => check(true, "get timeout"),
        other => panic!("get timeout: {other:?}"),
    }
    // cancel: a queued task (both CPUs busy) and a running one (force).
    let busy = sleep_ms::remote(3_000u64).unwrap();
    let queued = sleep_ms::remote(5u64).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    prism::cancel(&queued, false).unwrap();
    check(
        matches!(
            queued.get(),
            Err(prism::Error::Task(TaskError::Cancelled { .. }))
        ),
        "cancel queued",
    );
    prism::cancel(&busy, true).unwrap();
    check(
        matches!(
            busy.get(),
            Err(prism::Error::Task(TaskError::Cancelled { .. }))
        ),
        "force cancel running",
    );
    check(
        slow.get().unwrap() == 3_000,
        "the pool still serves after cancels",
    );
    // Infeasible: it waits for a node that has the resource (the test's
    // embedded cluster waits 1 s), then fails naming it.
    let r = square::options()
        .resource("unicorn", 1.0)
        .remote(1u64)
        .unwrap();
    check(
        matches!(
            r.get_timeout(Duration::from_millis(200)),
            Err(prism::Error::Timeout { .. })
        ),
        "infeasible work waits for a node that can run it",
    );
    match r.get() {
        Err(prism::Error::Task(TaskError::Infeasible { reason, .. })) => {
            check(reason.contains("unicorn"), "infeasible names the resource");
            check(reason.contains("waited 1 s"), "and how long it waited");
        }
        other => panic!("infeasible: {other:?}"),
    }
    // Asking to fail fast fails at once.
    let r = square::options()
        .resource("unicorn", 1.0)
        .fail_if_infeasible()
        .remote(1u64)
        .unwrap();
    match r.get_timeout(Duration::from_secs(5)) {
        Err(prism::Error::Task(TaskError::Infeasible { reason, .. })) => check(
            reason.contains("unicorn") && !reason.contains("waited"),
            "fail_if_infeasible fails at once",
        ),
        other => panic!("infeasible: {other:?}"),
    }
    println!("ALL OK");
}

fn role_panic() {
    let _c = prism::init().unwrap();
    match boom::remote(3u64).unwrap().get() {
        Err(prism::Error::Task(TaskError::Panicked {
            message, location, ..
        })) => {
            check(message == "boom with 3", "panic message");
            check(location.contains("tasks_local.rs:"), "panic location");
        }
        other => panic!("panic: {other:?}"),
    }
    let refs: Vec<_> = (0..50u64).map(|i| square::remote(i).unwrap()).collect();
    check(
        prism::get_all(&refs).unwrap().len() == 50,
        "the pool recovers after a panic",
    );
    println!("ALL OK");
}

fn role_worker_death() {
    let _c = prism::init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m1 = dir.path().join("m1").display().to_string();
    check(
        die_once::remote(m1).unwrap().get().unwrap() == 42,
        "retried after kill -9 of its worker",
    );
    let m2 = dir.path().join("m2").display().to_string();
    let opts = die_once::options().max_retries(0);
    match opts.remote(m2).unwrap().get() {
        Err(prism::Error::Task(TaskError::WorkerDied { detail, .. })) => {
            check(detail.contains("signal 9"), "WorkerDied names the signal")
        }
        other => panic!("worker death: {other:?}"),
    }
    println!("ALL OK");
}

fn role_park() {
    let _c = prism::InitOptions::new().num_cpus(3.0).init().unwrap();
    let dir = std::env::var("PRISM_TEST_DIR").unwrap();
    let refs: Vec<_> = (0..3u64)
        .map(|i| park::remote(dir.clone(), i).unwrap())
        .collect();
    println!("SUBMITTED");
    let _ = prism::get_all(&refs);
}

#[test]
#[ignore = "a job driver, started by the tests in this file with PRISM_TEST_ROLE"]
fn child_role() {
    let role = std::env::var("PRISM_TEST_ROLE").expect("run by the tests in this file");
    match role.as_str() {
        "basics" => role_basics(),
        "panic" => role_panic(),
        "worker_death" => role_worker_death(),
        "park" => role_park(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn local_tasks_refs_wait_timeout_cancel_infeasible() {
    let out = run_role_with(
        "basics",
        &[("PRISM_INFEASIBLE_TIMEOUT_MS", "1000")],
        Duration::from_secs(120),
    );
    // The driver was told at once why its task waits.
    assert!(
        out.contains("prism: warning: task \"square\" cannot be scheduled on any node now")
            && out.contains("unicorn"),
        "{out}"
    );
}

#[test]
fn local_panic_reports_message_and_location_and_pool_recovers() {
    run_role("panic", Duration::from_secs(120));
}

#[test]
fn local_killed_worker_is_retried_or_reported_with_its_signal() {
    run_role("worker_death", Duration::from_secs(120));
}

#[test]
fn local_killing_the_driver_leaves_no_worker() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::spawn("park", &[("PRISM_TEST_DIR", dir.path().to_str().unwrap())]);
    let pids = || -> Vec<u32> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(60), || pids().len() == 3),
        "workers did not start: {}",
        job.stdout()
    );
    let workers = pids();
    let driver = job.pid();
    assert!(
        workers.iter().all(|p| children_of(driver).contains(p)),
        "workers are the driver's children"
    );
    job.kill9();
    let gone = wait_until(Duration::from_secs(10), || {
        workers.iter().all(|p| !process_running(*p))
    });
    assert!(
        gone,
        "workers outlived a kill -9 of their driver: {workers:?}"
    );
}
