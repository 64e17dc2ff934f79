//! Serving on an embedded cluster: replicas in their own worker processes,
//! the HTTP proxy in another, real HTTP clients: answers, errors, handles,
//! batching, overload and a killed replica (`serve_lifecycle.rs` has the
//! rest). Each test runs a driver
//! (this binary re-executed with PRISM_TEST_ROLE).

mod common;

use common::{calc, deployment, json_of, load, pids, post, Calc, Chain};
use prism_serve::{Application, Deployment, Json};
use prism_test_support::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn role_basic() {
    let _c = prism::InitOptions::new().num_cpus(4.0).init().unwrap();
    let url = prism_serve::start("127.0.0.1", 0).unwrap();
    prism_serve::run(
        Application::new("math")
            .deployment(
                calc("calc")
                    .replicas(2)
                    .route_prefix("/calc")
                    .user_config(json!({"add": 100})),
            )
            .deployment(
                calc("batched")
                    .route_prefix("/batched")
                    .max_ongoing_requests(32)
                    .batching(8, Duration::from_millis(200)),
            ),
    )
    .unwrap();
    let (status, body, _, id) = post(&format!("{url}/calc"), "[1, 2, 3]");
    check(
        status == 200 && json_of(&body)["sum"] == 106,
        &format!("HTTP answers the sum ({status} {body})"),
    );
    check(id.is_some(), "every answer carries a request id");
    let (status, body, _, _) = post(&format!("{url}/calc/sub/path"), "[5]");
    check(
        status == 200 && json_of(&body)["sum"] == 105,
        "a path under the prefix routes to it",
    );
    let (status, body, _, _) = post(&format!("{url}/nothing"), "[1]");
    check(
        status == 404 && body.contains("/calc"),
        &format!("an unknown path is 404 naming the routes ({body})"),
    );
    let (status, body, _, _) = post(&format!("{url}/calc"), "{not json");
    check(
        status == 400 && body.contains("JSON"),
        &format!("a bad body is 400 saying why ({body})"),
    );
    let (status, body, _, _) = post(&format!("{url}/calc"), "[-1]");
    check(
        status == 500 && body.contains("refused"),
        &format!("a model error is 500 with its message ({body})"),
    );
    // Both replicas answer.
    let seen: std::collections::HashSet<String> = (0..40)
        .map(|_| json_of(&post(&format!("{url}/calc"), "[1]").1)["pid"].to_string())
        .collect();
    check(
        seen.len() == 2,
        &format!("requests reach both replicas ({seen:?})"),
    );

    // Composition: a deployment calling another through a handle.
    prism_serve::run(
        Application::new("chain").deployment(
            Deployment::new::<Chain>("chain")
                .num_cpus(0.5)
                .route_prefix("/chain")
                .user_config(json!({"next": "calc"})),
        ),
    )
    .unwrap();
    let (status, body, _, _) = post(&format!("{url}/chain"), "[1, 2]");
    let v = json_of(&body);
    check(
        status == 200 && v["sum"] == 1103 && v["inner_pid"] != v["pid"],
        &format!("a deployment calls another through its handle ({status} {body})"),
    );

    // A typed handle from the driver.
    let h = prism_serve::get_handle::<Calc>("calc").unwrap();
    let Json(v) = h.call(Json(vec![20, 22])).unwrap();
    check(v["sum"] == 142, "a handle call answers");
    check(
        matches!(
            prism_serve::get_handle::<Calc>("nope")
                .unwrap()
                .call(Json(vec![])),
            Err(prism_serve::ServeError::NoDeployment { .. })
        ),
        "a handle to an unknown deployment says so",
    );

    // Batching: 16 concurrent requests run in batches larger than one; a
    // lone request still gets its answer once the wait runs out.
    let batch_url = format!("{url}/batched");
    let answers: Vec<Value> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..16)
            .map(|i| {
                let u = batch_url.clone();
                s.spawn(move || json_of(&post(&u, &format!("[{i}]")).1))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let sums_ok = answers
        .iter()
        .enumerate()
        .all(|(i, a)| a["sum"] == i as i64);
    let largest = answers
        .iter()
        .filter_map(|a| a["batch"].as_u64())
        .max()
        .unwrap_or(0);
    check(sums_ok, "each batched request gets its own answer");
    check(
        largest > 1 && largest <= 8,
        &format!("concurrent requests ran in batches of up to 8 (largest {largest})"),
    );
    let (status, body, _, _) = post(&batch_url, "[7]");
    check(
        status == 200 && json_of(&body)["batch"] == 1,
        "a lone request runs when the batch wait ends",
    );
    check(
        deployment("batched")["replicas"][0]["max_batch"]
            .as_u64()
            .unwrap_or(0)
            > 1,
        "status shows the batch sizes",
    );
    prism_serve::shutdown().unwrap();
    println!("ALL OK");
}

fn role_overload() {
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    let url = prism_serve::start("127.0.0.1", 0).unwrap();
    prism_serve::run(
        Application::new("slow").deployment(
            calc("slow")
                .route_prefix("/slow")
                // Long enough that 8 clients overlap on a loaded machine.
                .user_config(json!({"sleep_ms": 1000}))
                .max_ongoing_requests(1)
                .max_queued_requests(1),
        ),
    )
    .unwrap();
    let u = format!("{url}/slow");
    // One answer first: the proxy's router knows the replica. (Requests
    // that arrive before it does wait for a replica, outside the queue
    // limit, and would then all be answered one by one.)
    check(post(&u, "[1]").0 == 200, "a first request is answered");
    let results: Vec<(u16, Option<String>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let u = u.clone();
                s.spawn(move || {
                    let (st, _, retry, _) = post(&u, "[1]");
                    (st, retry)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let busy: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    println!(
        "statuses: {:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    check(
        ok >= 1 && !busy.is_empty() && ok + busy.len() == 8,
        "over the queue: 503s, the rest answered",
    );
    check(
        busy.iter().all(|r| r.1.as_deref() == Some("1")),
        "every 503 carries Retry-After",
    );
    prism_serve::shutdown().unwrap();
    println!("ALL OK");
}

fn role_kill() {
    let _c = prism::InitOptions::new().num_cpus(4.0).init().unwrap();
    let url = prism_serve::start("127.0.0.1", 0).unwrap();
    prism_serve::run(
        Application::new("k").deployment(
            calc("k")
                .replicas(3)
                .route_prefix("/k")
                .user_config(json!({"sleep_ms": 5})),
        ),
    )
    .unwrap();
    let before = pids("k");
    check(before.len() == 3, "3 replicas run");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, hs) = load(format!("{url}/k"), 4, stop.clone());
    wait_until(Duration::from_secs(30), || ok.load(Ordering::Relaxed) > 100);
    let victim = before[1] as i32;
    // SAFETY: kill(2) has no memory effects; the pid is a replica's own.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let at = ok.load(Ordering::Relaxed);
    let replaced = wait_until(Duration::from_secs(60), || {
        let now = pids("k");
        now.len() == 3 && !now.contains(&(victim as u64))
    });
    wait_until(Duration::from_secs(30), || {
        ok.load(Ordering::Relaxed) > at + 100
    });
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    let (n, bad) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("{n} answered, {bad} failed; replicas now {:?}", pids("k"));
    check(replaced, "the killed replica is replaced");
    check(
        bad == 0,
        "no accepted request was lost to the kill (retried on another replica)",
    );
    check(
        deployment("k")["replaced"].as_u64() == Some(1),
        "status counts one replacement",
    );
    prism_serve::shutdown().unwrap();
    println!("ALL OK");
}

#[test]
#[ignore = "a driver role, run by the tests in this file"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "basic" => role_basic(),
        "overload" => role_overload(),
        "kill" => role_kill(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn serve_http_answers_routes_errors_handles_and_batches() {
    println!("{}", run_role("basic", Duration::from_secs(180)));
}

#[test]
fn serve_overload_answers_503_with_retry_after_never_a_hang() {
    println!("{}", run_role("overload", Duration::from_secs(120)));
}

#[test]
fn serve_kill_9_of_a_replica_under_load_loses_no_request() {
    println!("{}", run_role("kill", Duration::from_secs(180)));
}
