//! Serving's lifecycle on an embedded cluster: autoscaling up and down,
//! config and version updates, scale from zero, unhealthy replicas and
//! dead proxies replaced, shutdown draining. Each test runs a driver (this
//! binary re-executed with PRISM_TEST_ROLE).

mod common;

use common::{calc, deployment, get, json_of, load, pids, post, Calc};
use prism_serve::{Application, AutoscalingConfig, Deployment};
use prism_test_support::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let (ok, failed, hs) = load(format!("{url}/auto"), 8, stop.clone());
    let t0 = Instant::now();
    let up = wait_until(Duration::from_secs(60), || count() == 4);
    println!("1 -> 4 replicas in {:.1} s", t0.elapsed().as_secs_f64());
    // Steady load: no thrashing while it lasts (no scale-down decision
    // while 200 more requests are answered).
    let at = ok.load(Ordering::Relaxed);
    wait_until(Duration::from_secs(30), || {
        ok.load(Ordering::Relaxed) > at + 200
    });
    let steady = (count(), deployment("auto")["scaled_down"].as_u64());
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
        steady == (4, Some(0)),
        &format!("it stays at 4 under steady load ({steady:?}: replicas, scale-downs)"),
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
        code == 200
            && text
                .contains(r#"prism_serve_requests_total{deployment="h",version="",code="200"} 6"#),
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
        "autoscale" => role_autoscale(),
        "update" => role_update(),
        "zero" => role_zero(),
        "lifecycle" => role_lifecycle(),
        other => panic!("unknown role {other}"),
    }
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
