//! `prism submit` and `prism job list | logs | stop` against a running
//! head: the job binary (this test binary, in a driver role) is shipped to
//! the head by content hash and run there as the driver; its workers'
//! output is in the job's log.

use prism_test_support::*;
use std::process::Command;
use std::time::Duration;

#[prism::remote]
fn triple(x: u64) -> u64 {
    if x == 7 {
        println!("triple saw {x}");
    }
    x * 3
}

#[test]
#[ignore = "a job driver, started by `prism submit` in the tests in this file"]
fn child_role() {
    let role = std::env::var("PRISM_TEST_ROLE").expect("run by the tests in this file");
    let _c = prism::init().unwrap();
    match role.as_str() {
        "exit3" => {
            let refs: Vec<_> = (0..100u64).map(|i| triple::remote(i).unwrap()).collect();
            let sum: u64 = prism::get_all(&refs).unwrap().into_iter().sum();
            println!("RESULT {sum}");
            std::process::exit(3);
        }
        "sleep" => {
            // Runs until `prism job stop` ends it (or the test releases it).
            println!("started");
            hold_until_done();
        }
        other => panic!("unknown role {other}"),
    }
}

fn submit(sb: &Sandbox, role: &str, extra: &[&str]) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut c = Command::new(prism_bin());
    c.args(["submit", "--temp-dir"])
        .arg(sb.temp())
        .args(["--env", &format!("PRISM_TEST_ROLE={role}")])
        .args(extra)
        .arg("--")
        .arg(exe)
        .args([
            "--ignored",
            "--exact",
            "child_role",
            "--nocapture",
            "--test-threads",
            "1",
        ]);
    c.env_remove("PRISM_ADDRESS").env_remove("PRISM_TOKEN");
    for (k, v) in &sb.envs {
        c.env(k, v);
    }
    c
}

fn jobs(sb: &Sandbox) -> Vec<serde_json::Value> {
    let out = sb.run(&["job", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn submit_runs_a_job_streams_its_logs_and_returns_its_exit_code() {
    let sb = Sandbox::new();
    let _head = sb.start_head(&["--num-cpus", "2"]);
    let out = submit(&sb, "exit3", &[]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("RESULT 14850"), "{stdout}");
    // A worker's output reaches the job's log through its driver.
    let line = stdout.lines().find(|l| l.ends_with("triple saw 7"));
    assert!(line.is_some_and(|l| l.contains("(triple pid=")), "{stdout}");
    let list = jobs(&sb);
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["state"], "failed");
    assert_eq!(list[0]["exit_code"], 3);
    assert_eq!(list[0]["submitted"], true);
}

#[test]
fn job_stop_ends_a_running_job() {
    let sb = Sandbox::new();
    let _head = sb.start_head(&["--num-cpus", "1"]);
    let done = sb.temp().join("done");
    let release = format!("PRISM_TEST_DONE={}", done.display());
    let out = submit(&sb, "sleep", &["--no-wait", "--env", &release])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let logs = || String::from_utf8_lossy(&sb.run(&["job", "logs", &id]).stdout).into_owned();
    assert!(
        wait_until(Duration::from_secs(30), || logs().contains("started")),
        "{}",
        logs()
    );
    let stop = sb.run(&["job", "stop", &id]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let stopped = wait_until(Duration::from_secs(10), || {
        jobs(&sb)[0]["state"] == "stopped"
    });
    // A job the stop missed would end now rather than outlive the test.
    std::fs::write(&done, "done").unwrap();
    assert!(stopped, "{:#?}", jobs(&sb));
    let again = sb.run(&["job", "stop", &id]);
    assert!(!again.status.success(), "stopping an ended job must fail");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already ended"));
}

#[test]
fn submit_of_a_missing_binary_is_a_clear_error() {
    let sb = Sandbox::new();
    let _head = sb.start_head(&["--head-only"]);
    let out = sb.run(&["submit", "--", "/nonexistent/job"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read the job binary /nonexistent/job"));
}
