//! The job queue against a real head with 4 (simulated) GPUs: a third
//! 1-GPU job in a namespace with a 2-GPU quota waits, says why in
//! `prism queue`, and starts when one of the others is stopped; a spot-class
//! job is stopped for an urgent job that needs its GPUs, waits, and runs
//! again once the urgent job is done.

use prism_test_support::*;
use serde_json::Value;
use std::process::Output;
use std::time::Duration;

#[test]
#[ignore = "a job driver, started by `prism submit` in the tests in this file"]
fn child_role() {
    let _c = prism::init().unwrap();
    println!("started");
    hold_until_done();
}

fn submit(sb: &Sandbox, done: &str, extra: &[&str]) -> String {
    let out = submit_output(sb, done, extra);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn submit_output(sb: &Sandbox, done: &str, extra: &[&str]) -> Output {
    let exe = std::env::current_exe().unwrap();
    let env = format!("PRISM_TEST_DONE={done}");
    let mut c = std::process::Command::new(prism_bin());
    c.args(["submit", "--temp-dir"]).arg(sb.temp());
    c.args(["--no-wait", "--env", &env]).args(extra);
    c.arg("--").arg(exe);
    c.args(["--ignored", "--exact", "child_role", "--nocapture"]);
    c.env_remove("PRISM_ADDRESS").env_remove("PRISM_TOKEN");
    c.env_remove("PRISM_USER_TOKEN")
        .envs(sb.envs.iter().cloned());
    c.stdin(std::process::Stdio::null()).output().unwrap()
}

fn jobs(sb: &Sandbox) -> Vec<Value> {
    let out = sb.run(&["job", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn state(sb: &Sandbox, job: &str) -> String {
    jobs(sb)
        .iter()
        .find(|j| j["job_id"] == job)
        .map_or("absent".into(), |j| {
            j["state"].as_str().unwrap().to_string()
        })
}

fn queue(sb: &Sandbox) -> Value {
    let out = sb.run(&["queue", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_job_over_its_namespace_quota_waits_and_a_spot_job_makes_room_for_an_urgent_one() {
    let sb = Sandbox::new();
    let _head = sb.start_head(&["--num-cpus", "4", "--num-gpus", "4"]);
    let done = sb.temp().join("release").display().to_string();
    sb.run_ok(&["queue", "quota", "vision", "--gpus", "2", "--weight", "2"]);

    let one_gpu = ["--namespace", "vision", "--num-gpus", "1"];
    let (a, b, c) = (
        submit(&sb, &done, &one_gpu),
        submit(&sb, &done, &one_gpu),
        submit(&sb, &done, &one_gpu),
    );
    assert!(wait_until(Duration::from_secs(60), || state(&sb, &a)
        == "running"
        && state(&sb, &b) == "running"));
    assert_eq!(state(&sb, &c), "pending");
    let q = queue(&sb);
    let waiting = q["waiting"].as_array().unwrap();
    assert_eq!(waiting.len(), 1, "{q}");
    assert_eq!(waiting[0]["job_id"], c.as_str());
    assert_eq!(waiting[0]["position"], 1);
    assert_eq!(
        waiting[0]["reason"],
        "namespace vision is at its GPU quota (2 of 2 in use, the job needs 1)"
    );
    let out = sb.run(&["queue"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("at its GPU quota"));
    // A job asking more than the quota is refused at once.
    let out = submit_output(&sb, &done, &["--namespace", "vision", "--num-gpus", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let why = "the job declares 3 GPU but namespace vision's quota is 2; it could never start";
    assert!(err.contains(why), "{err}");

    // One ends: the waiting job starts.
    sb.run_ok(&["job", "stop", &a]);
    assert!(
        wait_until(Duration::from_secs(60), || state(&sb, &c) == "running"),
        "{:?}",
        jobs(&sb)
    );
    sb.run_ok(&["job", "stop", &b]);
    sb.run_ok(&["job", "stop", &c]);
    assert!(wait_until(Duration::from_secs(60), || ["stopped"]
        == [state(&sb, &c).as_str()]));

    // A spot job holds every GPU; an urgent job preempts it.
    let spot = submit(
        &sb,
        &done,
        &["--namespace", "research", "--num-gpus", "4", "--spot"],
    );
    assert!(wait_until(Duration::from_secs(60), || state(&sb, &spot) == "running"));
    let urgent = submit(
        &sb,
        &done,
        &["--namespace", "prod", "--num-gpus", "2", "--priority", "10"],
    );
    assert!(
        wait_until(Duration::from_secs(60), || state(&sb, &urgent) == "running"),
        "{:?}",
        jobs(&sb)
    );
    let row = jobs(&sb)
        .into_iter()
        .find(|j| j["job_id"] == spot.as_str())
        .unwrap();
    assert_eq!(row["state"], "pending", "{row}");
    assert!(
        row["message"]
            .as_str()
            .unwrap()
            .contains(&format!("preempted for job {urgent}")),
        "{row}"
    );
    // The urgent job finishes; the spot job runs again.
    sb.run_ok(&["job", "stop", &urgent]);
    assert!(
        wait_until(Duration::from_secs(60), || state(&sb, &spot) == "running"),
        "{:?}",
        jobs(&sb)
    );
    std::fs::write(&done, "").unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || state(&sb, &spot) == "succeeded"),
        "{:?}",
        jobs(&sb)
    );
    let out = sb.run(&["audit", "--action", "job.preempt", "--json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&spot));
}
