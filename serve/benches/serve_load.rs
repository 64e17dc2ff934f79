//! Serving figures that wrk cannot take (`benches/vs_ray/serve.sh` has the
//! HTTP ones): typed handle calls from Rust, one at a time and 64 in
//! flight; batched calls (64 in flight into batches of up to 32); the
//! first answer of a deployment scaled to zero; how long autoscaling takes
//! to go 1 → 4 replicas under load; and the resident memory of the whole
//! serving tree (driver with the embedded head and raylet, controller,
//! proxy, one no-op replica) when idle.
//!
//! Run: `cargo bench -p prism-serve --bench serve_load`; `cargo test` runs
//! a tiny version so it keeps working.

use prism_serve::{Application, AutoscalingConfig, Deployment, Json, Model};
use std::time::{Duration, Instant};

/// Answers its input; sleeps `sleep_ms` first if configured.
struct Echo {
    sleep_ms: u64,
}

impl Model for Echo {
    type Request = Json<u64>;
    type Response = Json<u64>;
    fn new(config: &serde_json::Value) -> Result<Self, String> {
        Ok(Echo {
            sleep_ms: config["sleep_ms"].as_u64().unwrap_or(0),
        })
    }
    async fn call(&self, Json(x): Json<u64>) -> Result<Json<u64>, String> {
        if self.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.sleep_ms)).await;
        }
        Ok(Json(x))
    }
}
prism_serve::model!(Echo);

fn tree_rss_mb(root: u32) -> f64 {
    let mut total = 0.0;
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        total += s
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0;
        for t in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            todo.extend(
                kids.split_whitespace()
                    .filter_map(|k| k.parse::<u32>().ok()),
            );
        }
    }
    total
}

fn deploy(name: &str, d: Deployment) {
    prism_serve::run(Application::new(name).deployment(d)).unwrap();
}

fn replicas(name: &str) -> usize {
    let s = prism_serve::status().unwrap();
    s["deployments"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["deployment"] == name))
        .and_then(|d| d["replicas"].as_array().map(Vec::len))
        .unwrap_or(0)
}

fn main() {
    // Workers of this job re-enter here and never return.
    if std::env::var_os("PRISM_WORKER_SOCKET").is_some() {
        let _ = prism::init();
    }
    let test_mode =
        !std::env::args().any(|a| a == "--bench") || std::env::args().any(|a| a == "--test");
    let (calls, settle) = if test_mode { (50, 0) } else { (5_000, 3) };
    let _c = prism::InitOptions::new().num_cpus(6.0).init().unwrap();
    prism_serve::start("127.0.0.1", 0).unwrap();
    deploy(
        "echo",
        Deployment::new::<Echo>("echo")
            .num_cpus(0.5)
            .max_ongoing_requests(64),
    );
    std::thread::sleep(Duration::from_secs(settle));
    let rss = tree_rss_mb(std::process::id());
    let h = prism_serve::get_handle::<Echo>("echo").unwrap();

    // One at a time.
    let mut lat = Vec::with_capacity(calls);
    let t0 = Instant::now();
    for i in 0..calls as u64 {
        let t = Instant::now();
        assert_eq!(h.call(Json(i)).unwrap().0, i);
        lat.push(t.elapsed());
    }
    let seq = calls as f64 / t0.elapsed().as_secs_f64();
    lat.sort();
    let p50 = lat[lat.len() / 2];

    // 64 in flight.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let inflight = |h: &prism_serve::DeploymentHandle<Echo>| {
        let t0 = Instant::now();
        rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for w in 0..64u64 {
                let h = h.clone();
                let per = calls as u64 / 64 + 1;
                set.spawn(async move {
                    for i in 0..per {
                        assert_eq!(
                            h.call_async(Json(w * 1000 + i)).await.unwrap().0,
                            w * 1000 + i
                        );
                    }
                    per
                });
            }
            let mut n = 0;
            while let Some(r) = set.join_next().await {
                n += r.unwrap();
            }
            n as f64 / t0.elapsed().as_secs_f64()
        })
    };
    let conc = inflight(&h);

    // Batched: the same load into batches of up to 32.
    deploy(
        "batched",
        Deployment::new::<Echo>("batched")
            .num_cpus(0.5)
            .max_ongoing_requests(64)
            .batching(32, Duration::from_millis(2)),
    );
    let b = prism_serve::get_handle::<Echo>("batched").unwrap();
    let batched = inflight(&b);
    // The controller reads replicas' counters every 100 ms.
    std::thread::sleep(Duration::from_millis(500));
    let s = prism_serve::status().unwrap();
    let max_batch = s["deployments"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["deployment"] == "batched"))
        .map(|d| d["replicas"][0]["max_batch"].clone())
        .unwrap_or_default();

    // From zero: the first call waits for a replica.
    let scaling = |min: u32| AutoscalingConfig {
        min_replicas: min,
        max_replicas: 4,
        target_ongoing_requests: 2.0,
        upscale_delay_ms: 500,
        downscale_delay_ms: 5_000,
        smoothing: 1.0,
    };
    deploy(
        "zero",
        Deployment::new::<Echo>("zero")
            .num_cpus(0.5)
            .replicas(0)
            .autoscaling(scaling(0)),
    );
    let z = prism_serve::get_handle::<Echo>("zero").unwrap();
    let t = Instant::now();
    z.call(Json(1)).unwrap();
    let cold = t.elapsed();

    // Autoscaling: 16 callers of a 20 ms model, 1 → 4 replicas.
    deploy(
        "auto",
        Deployment::new::<Echo>("auto")
            .num_cpus(0.5)
            .max_ongoing_requests(4)
            .max_queued_requests(1_000)
            .user_config(serde_json::json!({"sleep_ms": 20}))
            .autoscaling(scaling(1)),
    );
    let a = prism_serve::get_handle::<Echo>("auto").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..16)
        .map(|_| {
            let (a, stop) = (a.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = a.call(Json(0));
                }
            })
        })
        .collect();
    let t = Instant::now();
    while replicas("auto") < 4 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let react = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        l.join().unwrap();
    }

    println!("| serving (prism-serve, embedded cluster) | value |");
    println!("|---|---|");
    println!(
        "| handle calls/s, one at a time | {seq:.0} (p50 {:.0} µs) |",
        p50.as_secs_f64() * 1e6
    );
    println!("| handle calls/s, 64 in flight | {conc:.0} |");
    println!("| batched handle calls/s, 64 in flight (batches up to {max_batch}) | {batched:.0} |");
    println!(
        "| first call of a deployment scaled to zero | {:.0} ms |",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "| autoscaling 1 → 4 replicas under load (upscale delay 0.5 s) | {:.2} s |",
        react.as_secs_f64()
    );
    println!("| idle RSS: driver (head, raylet) + controller + proxy + 1 replica | {rss:.0} MB |");
    prism_serve::shutdown().unwrap();
}
