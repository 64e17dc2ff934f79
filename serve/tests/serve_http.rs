//! Serving on an embedded cluster: replicas in their own worker processes,
//! the HTTP proxy in another, real HTTP clients. Each test runs a driver
//! (this binary re-executed with PRISM_TEST_ROLE).

mod common;

use common::{deployment, get, pids, post, Calc, Chain};
use prism_serve::{Application, AutoscalingConfig, Deployment, Json};
use prism_test_support::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn calc(name: &str) -> Deployment {
    Deployment::new::<Calc>(name).num_cpus(0.5)
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

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

/// Posts from `threads` clients until `stop`; counts answers and failures.
fn load(
    url: String,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> (
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    Vec<std::thread::JoinHandle<()>>,
) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let hs = (0..threads)
        .map(|_| {
            let (u, stop, ok, failed) = (url.clone(), stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (st, body, _, _) = post(&u, "[2, 3]");
                    if st == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        println!("failed request: {st} {body}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    (ok, failed, hs)
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

fn role_autoscale() {
    let _c = prism::InitOptions::new().num_cpus(4.0).init().unwrap();
    let url = prism_serve::start("127.0.0.1", 0).unwrap();
    prism_serve::run(
        Application::new("auto").deployment(
            calc("auto")
                .route_prefix("/auto")
                .user_config(json!({"sleep_ms": 50}))
                .max_ongoing_requests(2)
                .max_queued_requests(100)
                .autoscaling(AutoscalingConfig {
                    min_replicas: 1,
                    max_replicas: 4,
                    target_ongoing_requests: 1.0,
                    upscale_delay_ms: 300,
                    downscale_delay_ms: 1_500,
                    smoothing: 1.0,
                }),
        ),
    )
    .unwrap();
    let count = || {
        deployment("auto")["replicas"]
            .as_array()
            .map_or(0, |r| r.len())
    };
    check(count() == 1, "starts at 1 replica");
    let stop = Arc::new(AtomicBool::new(false));
    let (_, failed, hs) = load(format!("{url}/auto"), 8, stop.clone());
    let t0 = Instant::now();
    let up = wait_until(Duration::from_secs(60), || count() == 4);
    println!("1 -> 4 replicas in {:.1} s", t0.elapsed().as_secs_f64());
    // Steady load: no thrashing while it lasts.
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(count());
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    let t1 = Instant::now();
    let down = wait_until(Duration::from_secs(60), || count() == 1);
    println!(
        "4 -> 1 replicas in {:.1} s after the load stopped",
        t1.elapsed().as_secs_f64()
    );
    check(up, "8 clients scale it to 4 replicas");
    check(
        seen.iter().all(|&n| n == 4),
        &format!("it stays at 4 under steady load ({seen:?})"),
    );
    check(down, "back to 1 when the load stops");
    check(
        failed.load(Ordering::Relaxed) == 0,
        "no request failed while scaling",
    );
    prism_serve::shutdown().unwrap();
    println!("ALL OK");
}

fn role_update() {
    let _c = prism::InitOptions::new().num_cpus(4.0).init().unwrap();
    let url = prism_serve::start("127.0.0.1", 0).unwrap();
    let app = |add: i64, cpus: f64| {
        Application::new("u").deployment(
            Deployment::new::<Calc>("u")
                .num_cpus(cpus)
                .replicas(2)
                .route_prefix("/u")
                .user_config(json!({"add": add, "sleep_ms": 5})),
        )
    };
    prism_serve::run(app(1, 0.5)).unwrap();
    let first = pids("u");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, hs) = load(format!("{url}/u"), 4, stop.clone());
    wait_until(Duration::from_secs(30), || ok.load(Ordering::Relaxed) > 50);
    // A user config change alone: reconfigured in place.
    prism_serve::run(app(2, 0.5)).unwrap();
    let (_, body, _, _) = post(&format!("{url}/u"), "[0]");
    check(json_of(&body)["sum"] == 2, "the new user config answers");
    let mut same = pids("u");
    same.sort();
    let mut was = first.clone();
    was.sort();
    check(
        same == was,
        "a config change keeps the replicas (reconfigure, no restart)",
    );
    // Resources change: the replicas roll over.
    prism_serve::run(app(3, 0.25)).unwrap();
    let (_, body, _, _) = post(&format!("{url}/u"), "[0]");
    let now = pids("u");
    let at = ok.load(Ordering::Relaxed);
    wait_until(Duration::from_secs(30), || {
        ok.load(Ordering::Relaxed) > at + 50
    });
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    println!(
        "{} answered, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    check(json_of(&body)["sum"] == 3, "the new version answers");
    check(
        now.len() == 2 && now.iter().all(|p| !first.contains(p)),
        "every replica was replaced",
    );
    check(
        failed.load(Ordering::Relaxed) == 0,
        "zero failed requests through both updates",
    );
    prism_serve::shutdown().unwrap();
    println!("ALL OK");
}

fn role_zero() {
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    let url = prism_serve::start("127.0.0.1", 0).unwrap();
    prism_serve::run(
        Application::new("z").deployment(calc("z").replicas(0).route_prefix("/z").autoscaling(
            AutoscalingConfig {
                min_replicas: 0,
                max_replicas: 1,
                target_ongoing_requests: 1.0,
                upscale_delay_ms: 0,
                downscale_delay_ms: 1_000,
                smoothing: 1.0,
            },
        )),
    )
    .unwrap();
    check(pids("z").is_empty(), "no replica before the first request");
    let t0 = Instant::now();
    let (status, body, _, _) = post(&format!("{url}/z"), "[4, 5]");
    println!(
        "cold start: first answer after {:.0} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    check(
        status == 200 && json_of(&body)["sum"] == 9,
        &format!("the first request waits for a cold replica ({status} {body})"),
    );
    check(
        wait_until(Duration::from_secs(30), || pids("z").is_empty()),
        "back to zero when idle",
    );
    prism_serve::shutdown().unwrap();
    println!("ALL OK");
}

/// A replica failing its health check and a killed proxy are replaced;
/// the proxy's metrics count answers; shutdown answers what is in flight.
fn role_lifecycle() {
    let _c = prism::InitOptions::new().num_cpus(4.0).init().unwrap();
    let port = free_port();
    let url = prism_serve::start("127.0.0.1", port).unwrap();
    prism_serve::run(
        Application::new("life")
            .deployment(
                calc("h")
                    .route_prefix("/h")
                    .health_period(Duration::from_millis(200))
                    .user_config(json!({"unhealthy_after": 5})),
            )
            .deployment(
                calc("slow")
                    .route_prefix("/slow")
                    .user_config(json!({"sleep_ms": 1500})),
            ),
    )
    .unwrap();
    let first = pids("h");
    for i in 0..5 {
        check(
            post(&format!("{url}/h"), &format!("[{i}]")).0 == 200,
            "answered while healthy",
        );
    }
    let replaced = wait_until(Duration::from_secs(30), || {
        let now = pids("h");
        now.len() == 1 && now != first
    });
    check(replaced, "a replica failing its health check is replaced");
    check(
        deployment("h")["replaced"].as_u64() >= Some(1),
        "status counts it",
    );
    check(
        post(&format!("{url}/h"), "[1]").0 == 200,
        "the new replica answers",
    );

    let (code, text) = get(&format!("{url}/-/metrics"));
    check(
        code == 200 && text.contains(r#"prism_serve_requests_total{deployment="h",code="200"} 6"#),
        &format!("/-/metrics counts the answers ({text})"),
    );
    check(
        text.contains("prism_serve_request_latency_seconds_bucket"),
        "with a latency histogram",
    );

    let proxy = prism_serve::status().unwrap()["proxies"][0]["pid"]
        .as_u64()
        .unwrap_or(0) as i32;
    check(proxy > 0, "status names the proxy's process");
    // SAFETY: kill(2) has no memory effects; the pid is the proxy's own.
    unsafe { libc::kill(proxy, libc::SIGKILL) };
    let back = wait_until(Duration::from_secs(30), || {
        post(&format!("{url}/h"), "[2]").0 == 200
    });
    check(back, "a killed proxy is started again on its address");
    check(
        prism_serve::status().unwrap()["proxy_restarts"] == 1,
        "status counts the restart",
    );

    // A request in flight when serving shuts down is still answered.
    let slow = format!("{url}/slow");
    let inflight = std::thread::spawn(move || post(&slow, "[1, 1]"));
    let running = wait_until(Duration::from_secs(30), || {
        deployment("slow")["replicas"][0]["ongoing"].as_u64() >= Some(1)
    });
    check(running, "the slow request is in its replica");
    prism_serve::shutdown().unwrap();
    let (code, body, _, _) = inflight.join().unwrap();
    check(
        code == 200 && json_of(&body)["sum"] == 2,
        &format!("shutdown answered the request in flight ({code} {body})"),
    );
    check(
        get(&format!("{url}/-/healthz")).0 == 0,
        "then the proxy is gone",
    );
    println!("ALL OK");
}

#[test]
#[ignore = "a driver role, run by the tests in this file"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "basic" => role_basic(),
        "overload" => role_overload(),
        "kill" => role_kill(),
        "autoscale" => role_autoscale(),
        "update" => role_update(),
        "zero" => role_zero(),
        "lifecycle" => role_lifecycle(),
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

#[test]
fn serve_autoscales_1_to_4_and_back_without_thrashing() {
    println!("{}", run_role("autoscale", Duration::from_secs(240)));
}

#[test]
fn serve_config_and_version_updates_fail_no_request() {
    println!("{}", run_role("update", Duration::from_secs(180)));
}

#[test]
fn serve_scales_from_zero_for_the_first_request() {
    println!("{}", run_role("zero", Duration::from_secs(120)));
}

#[test]
fn serve_replaces_unhealthy_replicas_and_dead_proxies_and_drains_on_shutdown() {
    println!("{}", run_role("lifecycle", Duration::from_secs(180)));
}
