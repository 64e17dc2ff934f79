//! A safe rollout, end to end: an embedded cluster serves a model (v1),
//! the open-loop load generator sends 200 requests/s, a deliberately
//! broken v2 (every 10th answer an error) goes out as a canary, the
//! controller rolls it back on its own and says why, and the load
//! generator counts the requests that failed: none (a canary's failed
//! answer is retried on the live version).
//!
//!     cargo run --release -p prism-serve --example serve_canary

use prism_serve::loadgen::LoadSpec;
use prism_serve::{Application, Deployment, Json, Model, RolloutSpec, Strategy, Thresholds};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Scores a feature vector (their sum); `fail_every: n` breaks it.
struct Scorer {
    fail_every: u64,
    answered: AtomicU64,
}

impl Model for Scorer {
    type Request = Json<Vec<f64>>;
    type Response = Json<f64>;
    fn new(config: &serde_json::Value) -> Result<Self, String> {
        Ok(Scorer {
            fail_every: config["fail_every"].as_u64().unwrap_or(0),
            answered: AtomicU64::new(0),
        })
    }
    async fn call(&self, Json(x): Json<Vec<f64>>) -> Result<Json<f64>, String> {
        let n = self.answered.fetch_add(1, Ordering::Relaxed) + 1;
        if self.fail_every > 0 && n.is_multiple_of(self.fail_every) {
            return Err("v2 is broken".into());
        }
        Ok(Json(x.iter().sum()))
    }
}
prism_serve::model!(Scorer);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _cluster = prism::InitOptions::new().num_cpus(4.0).init()?;
    let url = prism_serve::start("127.0.0.1", 0)?;
    prism_serve::run(
        Application::new("scores").deployment(
            Deployment::new::<Scorer>("scores")
                .num_cpus(0.5)
                .replicas(2)
                .version("v1")
                .route_prefix("/scores"),
        ),
    )?;
    println!("serving v1 at {url}/scores");
    let mut load = LoadSpec::new(&format!("{url}/scores"), 200.0, Duration::from_secs(60));
    load.body = Some(b"[0.5, 1.5]".to_vec());
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = stop.clone();
    let loader = std::thread::spawn(move || prism_serve::loadgen::run(&load, Some(stopper)));
    std::thread::sleep(Duration::from_secs(1));
    let canary = RolloutSpec::new(
        "scores",
        "v2",
        Strategy::Canary {
            steps: vec![10, 50, 100],
            step_s: 5,
        },
    )
    .user_config(serde_json::json!({ "fail_every": 10 }))
    .thresholds(Thresholds {
        window_s: 3,
        ..Thresholds::default()
    });
    prism_serve::rollout(canary)?;
    println!("rolling out v2 as a canary (10% → 50% → 100%, 5 s a step)");
    let end = prism_serve::wait_rollout("scores", Duration::from_secs(120))?;
    stop.store(true, Ordering::Relaxed);
    let report = loader.join().map_err(|_| "the load generator panicked")??;
    for e in prism_serve::history("scores")? {
        println!("  {:<12} {} → {}: {}", e.event, e.from, e.to, e.detail);
    }
    println!(
        "{} scores {} → {}: {}",
        end.event, end.to, end.from, end.detail
    );
    print!("load generator: {report}");
    println!("failed requests: {}", report.failures());
    prism_serve::shutdown()?;
    if end.event != "rolled back" || report.failures() != 0 {
        return Err("expected an automatic rollback and no failed request".into());
    }
    Ok(())
}
