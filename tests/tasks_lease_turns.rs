//! Owners take turns on a busy raylet's leases (L-7 and LO-3): two drivers
//! burst quick tasks at once on a one-CPU node. Each one's lease request
//! waits its turn in the raylet's queue instead of being declined, and a
//! revoked lease is kept for its tenure, so both bursts run mostly on
//! leases: before, the second driver's declined request sent its burst
//! through the raylet, whose queue then revoked the first driver's lease
//! and sent both bursts the slow way.

use prism_test_support::*;
use std::path::Path;
use std::time::Duration;

#[prism::remote]
fn square(x: u64) -> u64 {
    x * x
}

/// Long enough on one CPU (a quarter of a second or more) that the two
/// bursts overlap.
const BURST: u64 = 5_000;

fn turns_role() {
    let marks = std::env::var("PRISM_TEST_MARKS").unwrap();
    let me = std::env::var("PRISM_TEST_ME").unwrap();
    let other = if me == "a" { "b" } else { "a" };
    // The first task starts a worker through the raylet.
    check(
        square::remote(2u64).unwrap().get().unwrap() == 4,
        "a task's answer",
    );
    std::fs::write(format!("{marks}.{me}"), "").unwrap();
    let other_ready = format!("{marks}.{other}");
    check(
        wait_until(Duration::from_secs(60), || Path::new(&other_ready).exists()),
        "the other driver is ready",
    );
    let before = prism::__private::tasks_on_leases();
    let refs: Vec<_> = (0..BURST).map(|i| square::remote(i).unwrap()).collect();
    for (i, r) in refs.into_iter().enumerate() {
        let i = i as u64;
        check(
            r.get_timeout(Duration::from_secs(120)).unwrap() == i * i,
            "a task's answer",
        );
    }
    let leased = prism::__private::tasks_on_leases() - before;
    println!("ON LEASES {leased} of {BURST}");
    check(leased >= BURST / 2, "most of the burst ran on leases");
    println!("ALL OK");
}

#[test]
#[ignore = "a job driver, started by the test in this file with PRISM_TEST_ROLE"]
fn child_role() {
    let _c = prism::init().unwrap();
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "turns" => turns_role(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn two_drivers_take_turns_on_one_cpu_s_leases() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "1"]);
    let marks = sb.temp().join("marks").display().to_string();
    let spawn = |me: &str| {
        let mut envs = sb.driver_envs(&head, &head);
        envs.push(("PRISM_TEST_MARKS".into(), marks.clone()));
        envs.push(("PRISM_TEST_ME".into(), me.into()));
        Job::spawn("turns", &envs)
    };
    let (mut a, mut b) = (spawn("a"), spawn("b"));
    let ends: Vec<(&str, bool, String)> = [("a", &mut a), ("b", &mut b)]
        .into_iter()
        .map(|(name, job)| {
            let (ok, out) = job.finish(Duration::from_secs(180));
            (name, ok, out)
        })
        .collect();
    for (name, _, out) in &ends {
        let line = out.lines().find(|l| l.starts_with("ON LEASES"));
        eprintln!("driver {name}: {}", line.unwrap_or("-"));
    }
    for (name, ok, out) in &ends {
        assert!(
            *ok && out.contains("ALL OK"),
            "driver {name}: {out}\n--- head:\n{}",
            head.log()
        );
    }
}
