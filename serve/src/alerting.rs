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
use prism::proto::common::{NodeState, NodeStatus};
use prism::proto::runs::RunInfo;
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
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
    /// Failed runs and dead nodes that were there when alerting started
    /// (None until the first look): not news.
    baseline: Option<HashSet<String>>,
    /// Looks at the cluster's nodes and runs (tests wait on it).
    pub(crate) cluster_polls: u64,
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
            baseline: None,
            cluster_polls: 0,
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
        let mut out = self.engine.evaluate(now, unix_ms(), &observed);
        out.extend(
            self.engine
                .forget_gone(unix_ms(), |name| deps.iter().any(|d| d.spec.name == name)),
        );
        self.record(&out);
        out
    }
}

impl Alerting {
    /// New rules; events already notified stay notified.
    pub(crate) fn set_rules(&mut self, rules: Rules) {
        let old = std::mem::replace(&mut self.engine, Engine::new(rules));
        self.engine.carry_over(old);
    }

    /// One look at the cluster: dead nodes, failed runs and failed data
    /// validations that are new since alerting started.
    pub(crate) fn cluster(&mut self, nodes: &[NodeStatus], runs: &[RunInfo]) -> Vec<Notice> {
        self.cluster_polls += 1;
        let mut events = Vec::new();
        for n in nodes.iter().filter(|n| n.state == NodeState::Dead) {
            events.push((
                Metric::NodeDead,
                format!("{} #{}", n.name, n.incarnation),
                n.death_reason
                    .clone()
                    .unwrap_or_else(|| "declared dead".into()),
            ));
        }
        for r in runs.iter().filter(|r| r.status.starts_with("failed")) {
            let detail = format!("{} ({}): {}", r.name, r.job_id, r.status);
            if r.status.contains("data validation") {
                events.push((Metric::ValidationFailed, r.run_id.clone(), detail.clone()));
            }
            events.push((Metric::RunFailed, r.run_id.clone(), detail));
        }
        let Some(baseline) = &self.baseline else {
            self.baseline = Some(events.into_iter().map(|e| e.1).collect());
            return Vec::new();
        };
        events.retain(|e| !baseline.contains(&e.1));
        let out = self.engine.events(unix_ms(), &events);
        self.record(&out);
        out
    }

    fn record(&mut self, out: &[Notice]) {
        for n in out {
            tracing::warn!("alert: {}", n.text());
        }
        self.notices.extend(out.iter().cloned());
        let excess = self.notices.len().saturating_sub(KEPT);
        self.notices.drain(..excess);
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_millis() as u64)
}

/// Posts every notice to its webhooks in the background, counting
/// deliveries and failures, and starts the command of a rule that fired.
pub(crate) fn send_all(alerting: &Rc<RefCell<Alerting>>, notices: Vec<Notice>) {
    for n in notices {
        if n.kind != crate::alerts::Kind::Resolved && !n.run.is_empty() {
            act(&n);
        }
        for url in n.webhooks.clone() {
            let (n, alerting) = (n.clone(), alerting.clone());
            tokio::task::spawn_local(async move {
                let r = deliver(&url, &n).await;
                let mut a = alerting.borrow_mut();
                match r {
                    Ok(()) => a.delivered += 1,
                    Err(e) => {
                        tracing::warn!("alert not delivered: {e}");
                        a.failed += 1;
                    }
                }
            });
        }
    }
}

/// Starts a fired rule's command (not waited for; its failure to start is
/// logged).
fn act(n: &Notice) {
    let mut cmd = std::process::Command::new(&n.run[0]);
    cmd.args(&n.run[1..])
        .env("PRISM_ALERT_RULE", &n.rule)
        .env("PRISM_ALERT_DEPLOYMENT", &n.deployment)
        .env("PRISM_ALERT_METRIC", &n.metric)
        .env("PRISM_ALERT_VALUE", n.value.to_string())
        .env("PRISM_ALERT_TEXT", n.text())
        .stdin(std::process::Stdio::null());
    match cmd.spawn() {
        Ok(mut child) => {
            // Reaped in the background, never waited on here.
            std::thread::spawn(move || child.wait());
            tracing::info!("alert {}: started {:?}", n.rule, n.run);
        }
        Err(e) => tracing::warn!("alert {}: cannot run {:?}: {e}", n.rule, n.run),
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
