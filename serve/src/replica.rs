//! A replica: one actor holding one instance of a deployment's model, with
//! the dynamic batcher in front of it (as Ray's `@serve.batch` and Triton's
//! dynamic batcher): concurrent requests wait up to `batch_wait` for the
//! batch to fill to `max_batch_size`, then run as one `call_batch`.

use crate::drift::{self, DriftReport};
use crate::model::{self, DynModel};
use crate::spec::DriftSpec;
use crate::window;
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};

/// What a replica is built from (sent by the controller).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct ReplicaSpec {
    /// Its deployment.
    pub deployment: String,
    /// The registered model name.
    pub model: String,
    /// The user config, as JSON text.
    pub user_config: String,
    /// Requests per batch (1: no batching).
    pub max_batch_size: u32,
    /// How long the first request of a batch waits for more, in µs.
    pub batch_wait_us: u64,
    /// Drift detection (None: off).
    pub drift: Option<DriftSpec>,
}

/// A replica's counters (for the router's view, `status` and metrics).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Default, PartialEq)]
pub struct ReplicaStats {
    /// Its process.
    pub pid: u32,
    /// Requests running or waiting in the batcher now.
    pub ongoing: u32,
    /// Requests answered (ok or not).
    pub requests: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Batches run.
    pub batches: u64,
    /// The largest batch run.
    pub max_batch: u32,
    /// Summed latency inside the replica, µs.
    pub latency_us_sum: u64,
    /// Every latency inside the replica: an HDR histogram's non-empty
    /// buckets (µs, count), cumulative.
    pub latency: Vec<(u64, u64)>,
    /// The `Content-Type` of its answers.
    pub content_type: String,
    /// The last finished drift window (None: not watched, or none yet).
    pub drift: Option<DriftReport>,
}

type Answer = oneshot::Sender<Result<Vec<u8>, String>>;

/// One replica of a deployment, in its own worker process.
#[prism::actor]
pub struct Replica {
    model: Box<dyn DynModel>,
    max_batch: usize,
    wait: Duration,
    queue: RefCell<Vec<(Vec<u8>, Answer)>>,
    full: Notify,
    stats: RefCell<ReplicaStats>,
    latency: RefCell<hdrhistogram::Histogram<u64>>,
    ongoing: Cell<u32>,
}

#[prism::actor]
impl Replica {
    /// Builds the model; a model that fails to build fails the replica's
    /// creation with its message.
    fn new(spec: ReplicaSpec) -> Self {
        let config: serde_json::Value =
            serde_json::from_str(&spec.user_config).unwrap_or_else(|e| {
                panic!(
                    "deployment {}: user config is not JSON: {e}",
                    spec.deployment
                )
            });
        let model = model::build(&spec.model, &config)
            .unwrap_or_else(|e| panic!("deployment {}: {e}", spec.deployment));
        if let Some(d) = &spec.drift {
            let reference = drift::load_reference(&d.reference, d.resolved.as_deref())
                .unwrap_or_else(|e| panic!("deployment {}: {e}", spec.deployment));
            model.watch_drift(drift::Monitor::new(reference, d.window as u64));
        }
        let content_type = model.content_type().to_string();
        Replica {
            model,
            max_batch: spec.max_batch_size.max(1) as usize,
            wait: Duration::from_micros(spec.batch_wait_us),
            queue: RefCell::new(Vec::new()),
            full: Notify::new(),
            stats: RefCell::new(ReplicaStats {
                pid: std::process::id(),
                content_type,
                ..ReplicaStats::default()
            }),
            latency: RefCell::new(window::histogram()),
            ongoing: Cell::new(0),
        }
    }

    /// Answers one encoded request (through the batcher when batching).
    async fn handle(&self, body: Vec<u8>) -> Result<Vec<u8>, String> {
        let start = Instant::now();
        self.ongoing.set(self.ongoing.get() + 1);
        let out = if self.max_batch <= 1 {
            self.run_batch(vec![body])
                .await
                .pop()
                .unwrap_or_else(|| Err("no answer".into()))
        } else {
            self.batched(body).await
        };
        self.ongoing.set(self.ongoing.get() - 1);
        let mut s = self.stats.borrow_mut();
        s.requests += 1;
        s.errors += out.is_err() as u64;
        let us = start.elapsed().as_micros() as u64;
        s.latency_us_sum += us;
        self.latency.borrow_mut().saturating_record(us.max(1));
        out
    }

    /// The model's health check.
    async fn health(&self) -> Result<(), String> {
        self.model.check_health()
    }

    /// Its counters.
    async fn stats(&self) -> ReplicaStats {
        let mut s = self.stats.borrow().clone();
        s.ongoing = self.ongoing.get();
        s.latency = window::buckets(&self.latency.borrow());
        s.drift = self.model.drift();
        s
    }

    /// A new user config, once no request is running (calls wait for it).
    fn reconfigure(&mut self, user_config: String) -> Result<(), String> {
        let config: serde_json::Value = serde_json::from_str(&user_config)
            .map_err(|e| format!("user config is not JSON: {e}"))?;
        self.model.reconfigure(&config)
    }
}

impl Replica {
    async fn batched(&self, body: Vec<u8>) -> Result<Vec<u8>, String> {
        let (tx, rx) = oneshot::channel();
        let (leader, full) = {
            let mut q = self.queue.borrow_mut();
            q.push((body, tx));
            (q.len() == 1, q.len() >= self.max_batch)
        };
        if full {
            self.full.notify_waiters();
        }
        if leader && !full {
            // The first request of a batch waits for it to fill (or for
            // its time to run out), then runs what is queued.
            let filled = self.full.notified();
            let _ = tokio::time::timeout(self.wait, filled).await;
        }
        if leader {
            loop {
                let batch: Vec<_> = {
                    let mut q = self.queue.borrow_mut();
                    let n = q.len().min(self.max_batch);
                    q.drain(..n).collect()
                };
                if batch.is_empty() {
                    break;
                }
                let (bodies, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let results = self.run_batch(bodies).await;
                for (a, r) in answers.into_iter().zip(results) {
                    let _ = a.send(r);
                }
            }
        }
        rx.await
            .unwrap_or_else(|_| Err("the batch was dropped".into()))
    }

    async fn run_batch(&self, bodies: Vec<Vec<u8>>) -> Vec<Result<Vec<u8>, String>> {
        let n = bodies.len();
        {
            let mut s = self.stats.borrow_mut();
            s.batches += 1;
            s.max_batch = s.max_batch.max(n as u32);
        }
        let mut out = self.model.call_batch(bodies).await;
        out.resize_with(n, || Err("the model gave no answer".into()));
        out
    }
}
