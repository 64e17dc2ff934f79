//! `prism serve status`: each deployment with its version, window
//! (requests/s, p50/p95/p99, errors, shadow agreement), rollout, drift and
//! replicas, as the controller sees them. The controller also reports it
//! to the head for the dashboard's Serve page ([`Reporter`]): checked
//! every 500 ms, sent when it changed and at least every 5 s.

use crate::alerting;
use crate::rollouts;
use crate::upkeep::{Dep, Proxies};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

/// The controller's status as JSON text: deployments, proxies, restarts.
pub(crate) fn json(
    deps: &RefCell<Vec<Dep>>,
    proxies: &Proxies,
    restarts: &Cell<u64>,
    now: u64,
) -> String {
    let proxies: Vec<serde_json::Value> = proxies
        .borrow()
        .iter()
        .map(|p| serde_json::json!({ "address": p.1, "pid": p.3 }))
        .collect();
    let deps = deployments(&mut deps.borrow_mut(), now);
    serde_json::json!({
        "deployments": deps,
        "proxies": proxies,
        "proxy_restarts": restarts.get(),
    })
    .to_string()
}

/// How often the status goes to the head when nothing changed.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// The controller's reports to the head: when it started, the next
/// report's number (so the head keeps the newest, SV-1), whether serving
/// ended, and whether the reporting loop runs.
#[derive(Debug)]
pub(crate) struct Reporter {
    started_ms: u64,
    next: Cell<u64>,
    pub(crate) ended: Cell<bool>,
    running: Cell<bool>,
}

impl Reporter {
    pub(crate) fn new() -> Rc<Reporter> {
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Rc::new(Reporter {
            started_ms,
            next: Cell::new(0),
            ended: Cell::new(false),
            running: Cell::new(false),
        })
    }

    /// Sends one report, off the event loop (a socket write).
    pub(crate) async fn send(&self, status: String, ended: bool) {
        let order = (self.started_ms, self.next.get());
        self.next.set(order.1 + 1);
        let sent = tokio::task::spawn_blocking(move || {
            prism::cluster::report_serving(status, ended, order)
        })
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("cannot report serving to the head: {e}"),
            Err(e) => tracing::debug!("cannot report serving to the head: {e}"),
        }
    }

    /// Serving goes on (again): reports resume, from a new loop if the
    /// last one ended.
    pub(crate) fn resume(
        self: &Rc<Self>,
        deps: &Rc<RefCell<Vec<Dep>>>,
        proxies: &Proxies,
        restarts: &Rc<Cell<u64>>,
    ) {
        self.ended.set(false);
        if !self.running.replace(true) {
            tokio::task::spawn_local(report(
                deps.clone(),
                proxies.clone(),
                restarts.clone(),
                self.clone(),
            ));
        }
    }
}

/// Reports the status to the head (the dashboard's Serve page): checked
/// every 500 ms, sent when it changed or every [`REPORT_EVERY`], until
/// serving ended (the shutdown sends the last report).
async fn report(
    deps: Rc<RefCell<Vec<Dep>>>,
    proxies: Proxies,
    restarts: Rc<Cell<u64>>,
    reporter: Rc<Reporter>,
) {
    let mut last = (String::new(), std::time::Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if reporter.ended.get() {
            reporter.running.set(false);
            return;
        }
        let status = json(&deps, &proxies, &restarts, crate::window::clock_ms());
        if status == last.0 && last.1.elapsed() < REPORT_EVERY {
            continue;
        }
        reporter.send(status.clone(), false).await;
        last = (status, std::time::Instant::now());
    }
}

/// Every deployment as JSON (windows end at `now`, ms).
pub(crate) fn deployments(deps: &mut [Dep], now: u64) -> Vec<serde_json::Value> {
    let rollouts: Vec<Option<serde_json::Value>> = deps
        .iter()
        .map(|d| {
            d.rollout.as_ref().map(|a| {
                serde_json::json!({
                    "to": a.to, "from": a.from, "phase": format!("{:?}", a.rollout.phase()),
                    "weight": a.weight, "mirror": a.mirror,
                })
            })
        })
        .collect();
    let windows: Vec<serde_json::Value> = deps
        .iter_mut()
        .map(|d| {
            let s = d.window.summary(now);
            let w = &s.window;
            serde_json::json!({
                "seconds": d.window.span_s(),
                "requests": w.requests,
                "errors": w.errors,
                "rate": s.rate,
                "p50_ms": s.p50_us as f64 / 1e3,
                "p95_ms": s.p95_us as f64 / 1e3,
                "p99_ms": w.p99_us as f64 / 1e3,
                "shadow_compared": w.compared,
                "shadow_agreed": w.agreed,
            })
        })
        .collect();
    let apps: Vec<serde_json::Value> = deps
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let replicas: Vec<serde_json::Value> = d
                .members
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "actor_id": m.handle.id().to_string(),
                        "version": m.generation,
                        "pid": m.stats.pid,
                        "ongoing": m.stats.ongoing,
                        "requests": m.stats.requests,
                        "errors": m.stats.errors,
                        "batches": m.stats.batches,
                        "max_batch": m.stats.max_batch,
                        "drift_score": m.stats.drift.as_ref().map(|d| d.score),
                        "drift_psi": m.stats.drift.as_ref().map(|d| d.psi),
                        "drift_feature": m.stats.drift.as_ref().map(|d| d.feature.clone()),
                        "drift_windows": m.stats.drift.as_ref().map(|d| d.windows),
                        "mean_latency_us": m.stats.latency_us_sum.checked_div(m.stats.requests).unwrap_or(0),
                    })
                })
                .collect();
            serde_json::json!({
                "application": d.app,
                "deployment": d.spec.name,
                "model": d.spec.model,
                "route_prefix": d.spec.route_prefix,
                "version": d.generation,
                "version_label": rollouts::label(d),
                "window": windows[i],
                "rollout": rollouts[i],
                "drift_score": alerting::drift_score(d),
                "target_replicas": d.target,
                "starting": d.starting,
                "draining": d.draining,
                "replaced": d.replaced,
                "scaled_up": d.scaled_up,
                "scaled_down": d.scaled_down,
                "autoscaling": d.scaler.is_some(),
                "last_error": d.last_error,
                "replicas": replicas,
            })
        })
        .collect();
    apps
}
