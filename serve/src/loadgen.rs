//! `prism serve bench`: an open-loop HTTP load generator. Requests leave
//! on a fixed schedule (`rate` per second) whether or not earlier ones
//! were answered, and each latency is measured from the time its request
//! was *due*, so a slow server cannot slow the load down and hide its
//! tail (the coordinated-omission error of closed-loop tools). Latencies
//! go into an HDR histogram; the report gives p50/p95/p99/p99.9, errors by
//! kind and answers by `x-prism-version`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// `http://host:port/path`.
    pub url: String,
    /// Requests per second.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// The body (POST when given, else GET).
    pub body: Option<Vec<u8>>,
    /// Connections at most (requests beyond wait for one, and the wait
    /// counts in their latency).
    pub connections: usize,
    /// A request's time limit.
    pub timeout: Duration,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
}

impl LoadSpec {
    /// `rate` requests per second to `url` for `duration`.
    pub fn new(url: &str, rate: f64, duration: Duration) -> LoadSpec {
        LoadSpec {
            url: url.to_string(),
            rate,
            duration,
            body: None,
            connections: 64,
            timeout: Duration::from_secs(10),
            headers: Vec::new(),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Requests sent.
    pub sent: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Everything else: status codes, timeouts, connection errors.
    pub failed: BTreeMap<String, u64>,
    /// 2xx answers by their `x-prism-version` header.
    pub by_version: BTreeMap<String, u64>,
    /// Latency quantiles from the due time, µs: p50, p95, p99, p99.9, max.
    pub p50_us: u64,
    /// See `p50_us`.
    pub p95_us: u64,
    /// See `p50_us`.
    pub p99_us: u64,
    /// See `p50_us`.
    pub p999_us: u64,
    /// See `p50_us`.
    pub max_us: u64,
    /// Seconds from the first request to the last answer.
    pub elapsed_s: f64,
}

impl LoadReport {
    /// Requests not answered 2xx.
    pub fn failures(&self) -> u64 {
        self.failed.values().sum()
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        writeln!(
            f,
            "{} requests in {:.1} s ({:.0}/s): {} ok, {} failed",
            self.sent,
            self.elapsed_s,
            self.sent as f64 / self.elapsed_s.max(1e-9),
            self.ok,
            self.failures()
        )?;
        writeln!(
            f,
            "latency from due time: p50 {:.3} ms  p95 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
            ms(self.p50_us),
            ms(self.p95_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us)
        )?;
        for (k, n) in &self.failed {
            writeln!(f, "  failed: {n} × {k}")?;
        }
        for (v, n) in &self.by_version {
            writeln!(f, "  answered by version {v}: {n}")?;
        }
        Ok(())
    }
}

/// Why no load could be sent.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The URL is not `http://host[:port]/path`.
    #[error("bad URL {url:?}: {why}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// The rate, duration or connections make no sense.
    #[error("{0}")]
    Spec(String),
}

struct Tally {
    ok: u64,
    failed: BTreeMap<String, u64>,
    by_version: BTreeMap<String, u64>,
    latency: hdrhistogram::Histogram<u64>,
}

/// Sends the load on a runtime of its own (2 threads) and reports; stops
/// early when `stop` is set.
pub fn run(spec: &LoadSpec, stop: Option<Arc<AtomicBool>>) -> Result<LoadReport, LoadError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("prism-loadgen")
        .enable_all()
        .build()
        .map_err(|e| LoadError::Spec(format!("no runtime for the load: {e}")))?;
    rt.block_on(run_async(spec, stop))
}

/// [`run`] on the caller's runtime.
pub async fn run_async(
    spec: &LoadSpec,
    stop: Option<Arc<AtomicBool>>,
) -> Result<LoadReport, LoadError> {
    let uri: hyper::Uri = spec.url.parse().map_err(|e| LoadError::Url {
        url: spec.url.clone(),
        why: format!("{e}"),
    })?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(LoadError::Url {
            url: spec.url.clone(),
            why: "only http://host[:port]/path is supported".into(),
        });
    }
    if !(spec.rate > 0.0 && spec.rate.is_finite()) || spec.connections == 0 {
        return Err(LoadError::Spec(format!(
            "the rate ({}) and connections ({}) must be > 0",
            spec.rate, spec.connections
        )));
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(spec.connections)
        .build_http();
    let permits = Arc::new(tokio::sync::Semaphore::new(spec.connections));
    let tally = Arc::new(Mutex::new(Tally {
        ok: 0,
        failed: BTreeMap::new(),
        by_version: BTreeMap::new(),
        latency: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .expect("valid histogram bounds"),
    }));
    let body = Bytes::from(spec.body.clone().unwrap_or_default());
    let method = match spec.body {
        Some(_) => hyper::Method::POST,
        None => hyper::Method::GET,
    };
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / spec.rate);
    let total = (spec.rate * spec.duration.as_secs_f64()).round() as u64;
    let mut sent = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        if stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
            break;
        }
        let due = start + interval.mul_f64(i as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        sent += 1;
        let mut req = hyper::Request::builder()
            .method(method.clone())
            .uri(uri.clone());
        for (k, v) in &spec.headers {
            req = req.header(k, v);
        }
        let req = match req.body(Full::new(body.clone())) {
            Ok(r) => r,
            Err(e) => return Err(LoadError::Spec(format!("a header is not valid: {e}"))),
        };
        let (client, permits, tally, limit) =
            (client.clone(), permits.clone(), tally.clone(), spec.timeout);
        tasks.spawn(async move {
            // The time limit counts from the due time, like the latency.
            let outcome = tokio::time::timeout_at((due + limit).into(), async {
                let _permit = permits.acquire_owned().await;
                let resp = client.request(req).await?;
                let status = resp.status();
                let version = resp
                    .headers()
                    .get("x-prism-version")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                // The whole answer is read before the clock stops.
                resp.into_body().collect().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, version))
            })
            .await;
            let took = due.elapsed().as_micros() as u64;
            let mut t = tally.lock().unwrap();
            t.latency.saturating_record(took.max(1));
            let failed = match outcome {
                Ok(Ok((s, v))) if s.is_success() => {
                    t.ok += 1;
                    *t.by_version
                        .entry(v.unwrap_or_else(|| "-".into()))
                        .or_default() += 1;
                    None
                }
                Ok(Ok((s, _))) => Some(format!("HTTP {}", s.as_u16())),
                Ok(Err(e)) => Some(format!("connection error: {e}")),
                Err(_) => Some(format!("no answer in {limit:?}")),
            };
            if let Some(k) = failed {
                *t.failed.entry(k).or_default() += 1;
            }
        });
        // Reap finished requests as we go, so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let t = tally.lock().unwrap();
    let q = |p: f64| t.latency.value_at_quantile(p);
    Ok(LoadReport {
        sent,
        ok: t.ok,
        failed: t.failed.clone(),
        by_version: t.by_version.clone(),
        p50_us: q(0.5),
        p95_us: q(0.95),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: t.latency.max(),
        elapsed_s: start.elapsed().as_secs_f64(),
    })
}
