//! `prism start` daemonizes; `prism stop` stops exactly those daemons.

use prism_test_support::*;
use std::time::Duration;

#[test]
fn cluster_stop_leaves_no_process_of_ours_running() {
    let sb = Sandbox::new();
    let out = sb.run(&["start", "--head", "--port", "0", "--num-cpus", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let banner = String::from_utf8(out.stdout).unwrap();
    assert!(banner.contains("prism start --address"), "{banner}");
    assert!(banner.contains("Logs:"), "{banner}");
    // The banner's join command works as printed.
    let join = banner
        .lines()
        .find(|l| l.trim_start().starts_with("prism start --address"))
        .unwrap();
    let args: Vec<&str> = join.split_whitespace().skip(1).collect();
    let mut with_cpus = args.clone();
    with_cpus.extend(["--num-cpus", "1"]);
    let out = sb.run(&with_cpus);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pids = daemon_pids(sb.temp());
    assert_eq!(pids.len(), 2, "two daemons expected");
    assert!(wait_until(Duration::from_secs(10), || sb
        .nodes_in_state("alive")
        .len()
        == 2));

    // A process that is not ours, and must survive.
    let mut bystander = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();

    let out = sb.run(&["stop"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Stopped 2"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        wait_until(Duration::from_secs(5), || pids
            .iter()
            .all(|p| !process_running(*p))),
        "daemons still running after prism stop"
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "prism stop touched a process that is not ours"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();

    let out = sb.run(&["stop"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("No Prism daemons"));
}
