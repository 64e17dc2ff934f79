//! The models the serving tests deploy, a small HTTP client and a load
//! generator (each test binary uses a part).

#![allow(dead_code)]

use prism_serve::{Deployment, Json, Model};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Sums a list and adds the config's `add`; answers with the sum, the size
/// of the batch it ran in and its process id. `sleep_ms` makes it slow.
pub struct Calc {
    add: i64,
    sleep_ms: u64,
    /// Fails its health check once it has answered this many requests.
    unhealthy_after: Option<u64>,
    /// Deliberately broken: every n-th answer is an error.
    fail_every: Option<u64>,
    /// Answer `{"sum": ..}` only (the same bytes from every replica).
    sum_only: bool,
    answered: std::cell::Cell<u64>,
}

impl Model for Calc {
    type Request = Json<Vec<i64>>;
    type Response = Json<Value>;

    fn new(config: &Value) -> Result<Self, String> {
        // A registry version's checkpoint holds the number to add.
        let from_checkpoint = match config["checkpoint"].as_str() {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("{p}: {e}"))?
                    .trim()
                    .parse::<i64>()
                    .map_err(|e| format!("{p}: {e}"))?,
            ),
            None => None,
        };
        Ok(Calc {
            add: from_checkpoint.unwrap_or(config["add"].as_i64().unwrap_or(0)),
            sleep_ms: config["sleep_ms"].as_u64().unwrap_or(0),
            unhealthy_after: config["unhealthy_after"].as_u64(),
            fail_every: config["fail_every"].as_u64().filter(|&n| n > 0),
            sum_only: config["sum_only"].as_bool().unwrap_or(false),
            answered: std::cell::Cell::new(0),
        })
    }

    async fn call(&self, req: Json<Vec<i64>>) -> Result<Json<Value>, String> {
        self.call_batch(vec![req]).await.pop().unwrap()
    }

    async fn call_batch(&self, reqs: Vec<Json<Vec<i64>>>) -> Vec<Result<Json<Value>, String>> {
        if self.sleep_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.sleep_ms)).await;
        }
        let n = reqs.len();
        reqs.into_iter()
            .map(|Json(v)| {
                self.answered.set(self.answered.get() + 1);
                if v.first() == Some(&-1) {
                    return Err("minus one is refused".to_string());
                }
                if self
                    .fail_every
                    .is_some_and(|k| self.answered.get().is_multiple_of(k))
                {
                    return Err("deliberately broken".to_string());
                }
                if self.sum_only {
                    return Ok(Json(json!({ "sum": v.iter().sum::<i64>() + self.add })));
                }
                Ok(Json(json!({
                    "sum": v.iter().sum::<i64>() + self.add,
                    "batch": n,
                    "pid": std::process::id(),
                })))
            })
            .collect()
    }

    fn check_health(&self) -> Result<(), String> {
        match self.unhealthy_after {
            Some(n) if self.answered.get() >= n => Err(format!("answered {n} requests: unwell")),
            _ => Ok(()),
        }
    }

    fn reconfigure(&mut self, config: &Value) -> Result<(), String> {
        self.add = config["add"].as_i64().unwrap_or(0);
        Ok(())
    }
}
prism_serve::model!(Calc);

/// Composition: asks the deployment named in its config (a `Calc`) for
/// the sum, through a handle from inside its own replica, and adds 1000.
pub struct Chain {
    next: prism_serve::DeploymentHandle<Calc>,
}

impl Model for Chain {
    type Request = Json<Vec<i64>>;
    type Response = Json<Value>;

    fn new(config: &Value) -> Result<Self, String> {
        let next = config["next"]
            .as_str()
            .ok_or("user_config needs \"next\"")?;
        let next = prism_serve::get_handle::<Calc>(next).map_err(|e| e.to_string())?;
        Ok(Chain { next })
    }

    async fn call(&self, req: Json<Vec<i64>>) -> Result<Json<Value>, String> {
        let Json(inner) = self.next.call_async(req).await.map_err(|e| e.to_string())?;
        let sum = inner["sum"].as_i64().unwrap_or(0) + 1000;
        Ok(Json(
            json!({ "sum": sum, "inner_pid": inner["pid"], "pid": std::process::id() }),
        ))
    }
}
prism_serve::model!(Chain);

/// POSTs `body`; returns (status, body, headers we look at).
pub fn post(url: &str, body: &str) -> (u16, String, Option<String>, Option<String>) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let r = agent
        .post(url)
        .set("content-type", "application/json")
        .send_string(body);
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return (0, e.to_string(), None, None),
    };
    let status = resp.status();
    let retry = resp.header("retry-after").map(str::to_string);
    let id = resp.header("x-request-id").map(str::to_string);
    (status, resp.into_string().unwrap_or_default(), retry, id)
}

/// The deployment's entry in `prism_serve::status()`.
pub fn deployment(name: &str) -> Value {
    let s = prism_serve::status().unwrap();
    s["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["deployment"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

/// GETs `url`: (status, body).
pub fn get(url: &str) -> (u16, String) {
    match ureq::get(url).timeout(Duration::from_secs(10)).call() {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Its replicas' pids.
pub fn pids(name: &str) -> Vec<u64> {
    deployment(name)["replicas"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x["pid"].as_u64()).collect())
        .unwrap_or_default()
}

/// A `Calc` deployment with half a CPU per replica.
pub fn calc(name: &str) -> Deployment {
    Deployment::new::<Calc>(name).num_cpus(0.5)
}

/// The body as JSON (null if it is not).
pub fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// Posts from `threads` clients until `stop`; counts answers and failures.
pub fn load(
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
