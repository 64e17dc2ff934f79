//! The controller's side of alerts: once a second it reads each live
//! deployment's window (error rate and p99 once it holds 20 requests) and
//! its replicas' last drift windows, runs the pure [`Engine`], keeps the
//! notices for `prism alerts`, and posts each to its rule's webhooks
//! (Slack- and Teams-compatible `{"text": …}` JSON, 5 tries with doubling
//! backoff).

use crate::alerts::{Engine, Metric, Notice, Rules};
use crate::spec::CHALLENGER_MARK;
use crate::upkeep::Dep;
use bytes::Bytes;
use http_body_util::Full;
use std::time::Duration;

/// Notices kept for `prism alerts`.
const KEPT: usize = 500;

/// Rules, states, notices and delivery counts.
pub(crate) struct Alerting {
    pub(crate) engine: Engine,
    pub(crate) notices: Vec<Notice>,
    pub(crate) delivered: u64,
    pub(crate) failed: u64,
    /// Passes run (tests wait on it).
    pub(crate) passes: u64,
    last_ms: u64,
}

impl Default for Alerting {
    fn default() -> Self {
        Alerting {
            engine: Engine::new(Rules::default()),
            notices: Vec::new(),
            delivered: 0,
            failed: 0,
            passes: 0,
            last_ms: 0,
        }
    }
}

impl Alerting {
    /// One pass (at most once a second); returns the notices to deliver.
    pub(crate) fn tick(&mut self, deps: &mut [Dep], now: u64) -> Vec<Notice> {
        if now < self.last_ms + 1000 {
            return Vec::new();
        }
        self.last_ms = now;
        self.passes += 1;
        let mut observed = Vec::new();
        for d in deps
            .iter_mut()
            .filter(|d| !d.spec.name.contains(CHALLENGER_MARK))
        {
            let s = d.window.summary(now);
            let w = &s.window;
            if w.requests >= 20 {
                let name = d.spec.name.clone();
                observed.push((
                    name.clone(),
                    Metric::ErrorRate,
                    w.errors as f64 / w.requests as f64,
                ));
                observed.push((name, Metric::P99LatencyMs, w.p99_us as f64 / 1e3));
            }
            if let Some(score) = drift_score(d) {
                observed.push((d.spec.name.clone(), Metric::DriftScore, score));
            }
        }
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_millis() as u64);
        let out = self.engine.evaluate(now, unix_ms, &observed);
        for n in &out {
            tracing::warn!("alert: {}", n.text());
        }
        self.notices.extend(out.iter().cloned());
        let excess = self.notices.len().saturating_sub(KEPT);
        self.notices.drain(..excess);
        out
    }
}

/// The largest last-window drift score over a deployment's replicas.
pub(crate) fn drift_score(d: &Dep) -> Option<f64> {
    d.members
        .iter()
        .filter_map(|m| m.stats.drift.as_ref().map(|r| r.score))
        .reduce(f64::max)
}

/// Posts `notice` to `url`: 5 tries, 250 ms doubling between them, 5 s
/// each; the error of the last try if none was answered 2xx.
pub(crate) async fn deliver(url: &str, notice: &Notice) -> Result<(), String> {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let body = serde_json::json!({ "text": notice.text(), "alert": notice }).to_string();
    let mut wait = Duration::from_millis(250);
    let mut last = String::new();
    for attempt in 1..=5 {
        let req = hyper::Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.clone())))
            .map_err(|e| format!("webhook {url}: {e}"))?;
        match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
            Ok(Ok(r)) if r.status().is_success() => return Ok(()),
            Ok(Ok(r)) => last = format!("answered {}", r.status()),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no answer in 5 s".into(),
        }
        tracing::debug!("webhook {url}, try {attempt}: {last}");
        if attempt < 5 {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    Err(format!("webhook {url}: {last} (5 tries)"))
}
