//! What safe rollouts and drift watching cost, measured with the open-loop
//! load generator at a fixed rate over HTTP, all in one run: the same
//! deployment with no split, during a 50% canary, while shadowing 100%
//! of requests, and with drift watched in windows of 500; then how long a
//! broken canary (every 10th answer an error) serves before it is rolled
//! back.
//!
//! Run: `cargo bench -p prism-serve --bench rollout_overhead [-- RATE SECONDS]`
//! (default 2000 requests/s for 10 s each); `cargo test` runs a tiny
//! version so it keeps working.

use prism_serve::drift::Reference;
use prism_serve::loadgen::{LoadReport, LoadSpec};
use prism_serve::{Application, Deployment, Json, Model, RolloutSpec, Strategy, Thresholds};
use std::time::Duration;

/// Sums 4 features; watched on them; `fail_every: n` breaks it.
struct Sum {
    fail_every: u64,
    n: std::cell::Cell<u64>,
}

impl Model for Sum {
    type Request = Json<Vec<f64>>;
    type Response = Json<f64>;
    fn new(config: &serde_json::Value) -> Result<Self, String> {
        Ok(Sum {
            fail_every: config["fail_every"].as_u64().unwrap_or(0),
            n: std::cell::Cell::new(0),
        })
    }
    async fn call(&self, Json(x): Json<Vec<f64>>) -> Result<Json<f64>, String> {
        self.n.set(self.n.get() + 1);
        if self.fail_every > 0 && self.n.get().is_multiple_of(self.fail_every) {
            return Err("broken".into());
        }
        Ok(Json(x.iter().sum()))
    }
    fn drift_features(&self, Json(x): &Json<Vec<f64>>) -> Option<Vec<f64>> {
        Some(x.clone())
    }
}
prism_serve::model!(Sum);

fn deploy(name: &str, drift: Option<&str>) {
    let mut d = Deployment::new::<Sum>(name)
        .num_cpus(0.5)
        .replicas(2)
        .version("v1")
        .max_ongoing_requests(64)
        .max_queued_requests(4096)
        .route_prefix(&format!("/{name}"));
    if let Some(r) = drift {
        d = d.drift(r, 500);
    }
    prism_serve::run(Application::new(name).deployment(d)).unwrap();
}

fn load(url: &str, rate: f64, secs: f64) -> LoadReport {
    let mut spec = LoadSpec::new(url, rate, Duration::from_secs_f64(secs));
    spec.body = Some(b"[0.1, 0.2, 0.3, 0.4]".to_vec());
    prism_serve::loadgen::run(&spec, None).unwrap()
}

fn row(what: &str, r: &LoadReport) {
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "| {what} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
        r.sent as f64 / r.elapsed_s,
        ms(r.p50_us),
        ms(r.p95_us),
        ms(r.p99_us),
        ms(r.p999_us),
        r.failures()
    );
}

fn wait_weight(name: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let s = prism_serve::status().unwrap();
        let live = s["deployments"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["deployment"] == name).cloned());
        let r = live.map(|d| d["rollout"].clone()).unwrap_or_default();
        if r["weight"].as_u64() > Some(0) || r["mirror"].as_u64() > Some(0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the rollout of {name} did not start in 60 s");
}

fn main() {
    // Workers of this job re-enter here and never return.
    if std::env::var_os("PRISM_WORKER_SOCKET").is_some() {
        let _ = prism::init();
    }
    let args: Vec<String> = std::env::args().collect();
    let test_mode = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test");
    let nums: Vec<f64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let (rate, secs) = match test_mode {
        true => (200.0, 0.5),
        false => (
            nums.first().copied().unwrap_or(2000.0),
            nums.get(1).copied().unwrap_or(10.0),
        ),
    };
    let _c = prism::InitOptions::new().num_cpus(6.0).init().unwrap();
    let base = prism_serve::start("127.0.0.1", 0).unwrap();
    let dir = std::env::temp_dir().join(format!("prism-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let reference = dir.join("ref.json");
    let rows: Vec<Vec<f64>> = (0..2000).map(|i| vec![(i % 10) as f64 / 10.0; 4]).collect();
    Reference::from_rows(&["a", "b", "c", "d"], &rows, 10)
        .unwrap()
        .save(&reference)
        .unwrap();
    deploy("plain", None);
    deploy("watched", Some(reference.to_str().unwrap()));
    let url = |n: &str| format!("{base}/{n}");
    let _ = load(&url("plain"), rate, secs.min(2.0)); // warm-up
    println!("open loop, {rate} requests/s for {secs} s each, 2 replicas, HTTP");
    println!("| | req/s | p50 ms | p95 ms | p99 ms | p99.9 ms | failed |");
    println!("|---|---|---|---|---|---|---|");
    row("no split", &load(&url("plain"), rate, secs));
    let hold = |v: &str, s: Strategy| {
        RolloutSpec::new("plain", v, s).thresholds(Thresholds {
            max_p99_ms: 60_000.0,
            ..Thresholds::default()
        })
    };
    let canary = Strategy::Canary {
        steps: vec![50, 100],
        step_s: 3600,
    };
    prism_serve::rollout(hold("v2", canary)).unwrap();
    wait_weight("plain");
    row("canary at 50%", &load(&url("plain"), rate, secs));
    prism_serve::rollback("plain").unwrap();
    let shadow = Strategy::Shadow {
        percent: 100,
        duration_s: 3600,
        promote: false,
    };
    // A rolled-back version drains before its label can be used again.
    prism_serve::rollout(hold("v3", shadow)).unwrap();
    wait_weight("plain");
    row("shadow 100%", &load(&url("plain"), rate, secs));
    prism_serve::rollback("plain").unwrap();
    row(
        "drift watched (windows of 500)",
        &load(&url("watched"), rate, secs),
    );
    // A broken canary: how long it serves before the rollback.
    let broken = RolloutSpec::new(
        "watched",
        "broken",
        Strategy::Canary {
            steps: vec![10, 100],
            step_s: 3600,
        },
    )
    .user_config(serde_json::json!({ "fail_every": 10 }))
    .thresholds(Thresholds {
        window_s: 5,
        max_p99_ms: 60_000.0,
        ..Thresholds::default()
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (u, st) = (url("watched"), stop.clone());
    let loader = std::thread::spawn(move || {
        let mut spec = LoadSpec::new(&u, rate.min(1000.0), Duration::from_secs(120));
        spec.body = Some(b"[0.1, 0.2, 0.3, 0.4]".to_vec());
        prism_serve::loadgen::run(&spec, Some(st)).unwrap()
    });
    prism_serve::rollout(broken).unwrap();
    let end = prism_serve::wait_rollout("watched", Duration::from_secs(120)).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let r = loader.join().unwrap();
    let h = prism_serve::history("watched").unwrap();
    let took = h
        .iter()
        .find(|e| e.event == "step")
        .map(|s| end.at_unix_ms.saturating_sub(s.at_unix_ms));
    println!(
        "broken canary (10% of traffic, every 10th answer an error): {} after {took:?} ms of traffic ({}); clients saw {} failures of {}",
        end.event,
        end.detail,
        r.failures(),
        r.sent
    );
    assert_eq!(end.event, "rolled back");
    let _ = std::fs::remove_dir_all(&dir);
    prism_serve::shutdown().unwrap();
}
