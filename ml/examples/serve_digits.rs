//! Trains the digits MLP (2 DDP workers), then serves it over HTTP with
//! dynamic batching: 2 replicas load the weights and answer
//! `{"class": k}` for 64 pixel values. Every held-out digit is then sent
//! over HTTP by 8 clients at once and scored; the answer must match the
//! in-process accuracy. Then an int8 version (`"quantize": "int8"`: int8
//! weights per output channel) is compared with fp32 (accuracy, size,
//! latency), rolled out as a canary, promoted, and scored over HTTP again
//! (at most 1 point below fp32). With `--serve`, it keeps serving until
//! Ctrl-C:
//!
//!     cargo run --release -p prism-ml --example serve_digits -- --serve
//!     curl -d @digit.json http://127.0.0.1:8000/digits     # {"class":3}

use prism_ml::data::digits;
use prism_ml::quant::{self, Int8Mlp};
use prism_ml::recipes::{self, MlpConfig};
use prism_ml::train::{DdpTrainer, ScalingConfig};
use prism_serve::{Application, Deployment, Json, Model, RolloutSpec, Strategy};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tch::nn::Module;

/// The digits classifier, one per replica: fp32, or int8 when its config
/// says `"quantize": "int8"`.
enum Digits {
    Fp32 {
        net: tch::nn::Sequential,
        /// Owns the weights `net` reads.
        _vs: tch::nn::VarStore,
    },
    Int8(Int8Mlp),
}

fn config() -> MlpConfig {
    MlpConfig {
        layers: vec![64, 128, 10],
        epochs: 10,
        batch_size: 32,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 1e-4,
        seed: 1,
        cuda: false,
    }
}

impl Model for Digits {
    type Request = Json<Vec<f32>>;
    type Response = Json<Value>;

    fn new(config_json: &Value) -> Result<Self, String> {
        let path = config_json["weights"]
            .as_str()
            .ok_or("user_config needs \"weights\"")?;
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        tch::set_num_threads(1);
        let (vs, net) = recipes::load_flat(&config(), &bytes).map_err(|e| e.to_string())?;
        match config_json["quantize"].as_str() {
            None | Some("fp32") => Ok(Digits::Fp32 { net, _vs: vs }),
            Some("int8") => Int8Mlp::from_var_store(&vs, config().layers.len() - 1)
                .map(Digits::Int8)
                .map_err(|e| e.to_string()),
            Some(q) => Err(format!("quantize: {q:?} is not one of fp32, int8")),
        }
    }

    async fn call(&self, req: Json<Vec<f32>>) -> Result<Json<Value>, String> {
        let answer = self.call_batch(vec![req]).await.pop();
        answer.unwrap_or_else(|| Err("no answer".to_string()))
    }

    /// One forward pass for the whole batch.
    async fn call_batch(&self, reqs: Vec<Json<Vec<f32>>>) -> Vec<Result<Json<Value>, String>> {
        if let Some(bad) = reqs.iter().position(|r| r.0.len() != 64) {
            let n = reqs[bad].0.len();
            return reqs
                .iter()
                .map(|r| match r.0.len() {
                    64 => Err("another request of the batch was malformed; retry".into()),
                    _ => Err(format!("bad request: a digit is 64 pixel values, not {n}")),
                })
                .collect();
        }
        let n = reqs.len() as i64;
        let flat: Vec<f32> = reqs.into_iter().flat_map(|r| r.0).collect();
        let x = tch::Tensor::from_slice(&flat).view([n, 64]);
        let logits = tch::no_grad(|| match self {
            Digits::Fp32 { net, .. } => net.forward(&x),
            Digits::Int8(q) => q.forward(&x),
        });
        let classes = logits.argmax(-1, false);
        let classes: Vec<i64> = Vec::try_from(classes).unwrap_or_default();
        classes
            .into_iter()
            .map(|c| Ok(Json(json!({ "class": c, "batch": n }))))
            .collect()
    }
}
prism_serve::model!(Digits);

/// Sends every row over HTTP from 8 clients at once: (accuracy,
/// requests/s, the largest batch a replica ran).
fn score_over_http(endpoint: &str, rows: &[(Vec<f32>, i64)]) -> anyhow::Result<(f64, f64, u64)> {
    let t0 = Instant::now();
    let answers: Vec<anyhow::Result<(bool, u64)>> = std::thread::scope(|s| {
        let chunks: Vec<_> = rows.chunks(rows.len().div_ceil(8)).collect();
        let hs: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|(x, y)| {
                            let body = serde_json::to_string(x)?;
                            let r: Value = serde_json::from_str(
                                &ureq::post(endpoint).send_string(&body)?.into_string()?,
                            )?;
                            Ok((r["class"] == *y, r["batch"].as_u64().unwrap_or(0)))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let secs = t0.elapsed().as_secs_f64();
    let answers = answers.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let right = answers.iter().filter(|a| a.0).count();
    let largest = answers.iter().map(|a| a.1).max().unwrap_or(0);
    Ok((
        right as f64 / answers.len() as f64,
        answers.len() as f64 / secs,
        largest,
    ))
}

fn main() -> anyhow::Result<()> {
    let serve_forever = std::env::args().any(|a| a == "--serve");
    let _c = prism::InitOptions::new().num_cpus(4.0).init()?;
    let (train, test) = digits(128)?.shuffle(2024)?.train_test_split(0.2, 7)?;
    let cfg = config();
    let result = DdpTrainer::new("mlp_classifier", ScalingConfig::new(2))?
        .config(cfg.to_bytes())
        .dataset(train)
        .progress(None)
        .fit()?;
    let (_, net) = recipes::load_flat(&cfg, &result.output)?;
    let local = recipes::accuracy(&net, &test)?;
    let dir = tempfile::tempdir()?;
    let weights = dir.path().join("digits.weights");
    std::fs::write(&weights, &result.output)?;

    let url = prism_serve::start("127.0.0.1", if serve_forever { 8000 } else { 0 })?;
    prism_serve::run(
        Application::new("digits").deployment(
            Deployment::new::<Digits>("digits")
                .replicas(2)
                .route_prefix("/digits")
                .max_ongoing_requests(64)
                .batching(32, Duration::from_millis(2))
                .user_config(json!({ "weights": weights.display().to_string() })),
        ),
    )?;

    // Every held-out digit over HTTP, 8 clients at once.
    let mut rows: Vec<(Vec<f32>, i64)> = Vec::new();
    for batch in test.iter_batches(256) {
        let b = batch?;
        let x: Vec<f32> = Vec::try_from(b.features.view([-1]))?;
        let y: Vec<i64> = Vec::try_from(b.labels.ok_or_else(|| anyhow::anyhow!("no labels"))?)?;
        rows.extend(x.chunks(64).map(<[f32]>::to_vec).zip(y));
    }
    let endpoint = format!("{url}/digits");
    let (over_http, rate, largest) = score_over_http(&endpoint, &rows)?;
    println!(
        "in process: {:.1}%; over HTTP: {:.1}% of {} digits, {rate:.0} requests/s, batches up to {largest}",
        local * 100.0,
        over_http * 100.0,
        rows.len(),
    );
    anyhow::ensure!(over_http > 0.9, "accuracy over HTTP {over_http}");
    anyhow::ensure!(
        (over_http - local).abs() < 0.01,
        "HTTP and in-process answers differ"
    );

    // int8: measured against fp32, then rolled out as a canary.
    let report = quant::compare(&cfg, &result.output, &test, 32)?;
    println!("int8 vs fp32: {report}");
    anyhow::ensure!(
        report.int8_accuracy >= report.fp32_accuracy - 0.01,
        "int8 loses more than 1 point: {report}"
    );
    let int8 = RolloutSpec::new(
        "digits",
        "int8",
        Strategy::Canary {
            steps: vec![50, 100],
            step_s: 1,
        },
    )
    .user_config(json!({ "weights": weights.display().to_string(), "quantize": "int8" }));
    // A canary is judged on traffic: keep scoring while it runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (stop, endpoint, rows) = (stop.clone(), endpoint.clone(), rows.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if score_over_http(&endpoint, &rows).is_err() {
                    break;
                }
            }
        })
    };
    prism_serve::rollout(int8)?;
    let end = prism_serve::wait_rollout("digits", Duration::from_secs(120));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = traffic.join();
    let end = end?;
    println!("rollout of int8: {}: {}", end.event, end.detail);
    anyhow::ensure!(end.event == "promoted", "the int8 canary was not promoted");
    let (int8_http, rate, _) = score_over_http(&endpoint, &rows)?;
    println!(
        "int8 over HTTP: {:.1}% of {} digits, {rate:.0} requests/s",
        int8_http * 100.0,
        rows.len()
    );
    anyhow::ensure!(
        int8_http >= over_http - 0.01,
        "int8 over HTTP {int8_http} vs fp32 {over_http}"
    );
    let sample = dir.path().join("digit.json");
    std::fs::write(&sample, serde_json::to_string(&rows[0].0)?)?;
    if serve_forever {
        std::fs::copy(&sample, "digit.json")?;
        println!("serving at {endpoint}; try: curl -d @digit.json {endpoint}   (Ctrl-C stops)");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(tokio::signal::ctrl_c())?;
    }
    prism_serve::shutdown()?;
    println!("SERVE DIGITS OK");
    Ok(())
}
