//! The controller: one named, detached actor per namespace that owns its
//! applications' desired state and makes it so. A loop on its event loop
//! reconciles each deployment (start missing replicas, roll old ones over
//! one at a time with one extra, drain and stop extras), checks replicas'
//! health and load, replaces dead or failing ones and autoscales. Routers
//! long-poll it for the route table.

use crate::alerting::{self, Alerting};
use crate::alerts::Rules;
use crate::proxy::ProxySpec;
use crate::redeploy;
use crate::registry;
use crate::rollouts::{self, HistoryEntry};
use crate::spec::{AppSpec, RolloutSpec, RouteEntry, RouteTable, CHALLENGER_MARK};
use crate::status;
use crate::upkeep::{check_proxies, check_replicas, publish, reconcile, spawn_proxy, Dep, Proxies};
use crate::window::clock_ms;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The controller's actor name, in the namespace of the job that started
/// serving there: one controller (with its proxy and replicas) per
/// namespace, so a tenant's applications are theirs alone, run as their
/// job, and are out of reach of other namespaces (the head refuses the
/// lookup of another namespace's controller).
pub const NAME: &str = prism::proto::serving::CONTROLLER_NAME;

/// The serve controller.
#[prism::actor]
pub struct Controller {
    deps: Rc<RefCell<Vec<Dep>>>,
    version: Rc<Cell<u64>>,
    changed: Rc<Notify>,
    looping: Cell<bool>,
    proxies: Proxies,
    proxy_restarts: Rc<Cell<u64>>,
    history: Rc<RefCell<Vec<HistoryEntry>>>,
    alerting: Rc<RefCell<Alerting>>,
    /// Its reports to the head (the dashboard's Serve page).
    reporter: Rc<status::Reporter>,
}

#[prism::actor]
impl Controller {
    fn new() -> Self {
        Controller {
            deps: Rc::default(),
            version: Rc::new(Cell::new(1)),
            changed: Rc::new(Notify::new()),
            looping: Cell::new(false),
            proxies: Rc::default(),
            proxy_restarts: Rc::default(),
            history: Rc::default(),
            alerting: Rc::default(),
            reporter: status::Reporter::new(),
        }
    }

    /// Deploys (or updates) an application; returns once every deployment
    /// runs its replicas of the new version, or with the reason it cannot.
    async fn deploy(&self, mut app: AppSpec, wait_ms: u64) -> Result<(), String> {
        for d in &mut app.deployments {
            d.validate()?;
            if let Some(r) = d.registry.clone() {
                let pinned = d.registry_pinned.take();
                d.user_config = registry::pin(&r, pinned.as_ref(), &d.user_config, &mut d.version)?;
            }
        }
        self.start_loop();
        let applied = redeploy::apply(&mut self.deps.borrow_mut(), &app)?;
        let (rollouts_now, reconfigure) = (applied.rollouts, applied.reconfigure);
        for r in rollouts_now {
            rollouts::start(
                &mut self.deps.borrow_mut(),
                &mut self.history.borrow_mut(),
                r,
            )?;
        }
        for (h, config) in reconfigure {
            let r = h.reconfigure(config).map_err(|e| e.to_string())?;
            r.await.map_err(|e| e.to_string())??;
        }
        self.publish();
        // Wait until every deployment of the app is at its new version.
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        loop {
            let changed = self.changed.notified();
            {
                let deps = self.deps.borrow();
                let mine: Vec<&Dep> = deps
                    .iter()
                    .filter(|o| o.app == app.name && !o.spec.name.contains(CHALLENGER_MARK))
                    .collect();
                if let Some(e) = mine.iter().find_map(|o| o.last_error.clone()) {
                    return Err(e);
                }
                // Old replicas drained and stopped, so no caller still
                // reaches the old version.
                let done = mine.iter().all(|o| o.settled());
                if done {
                    return Ok(());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "application {} is not running after {wait_ms} ms: {}",
                    app.name,
                    self.summary(&app.name)
                ));
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), changed).await;
        }
    }

    /// The route table once it is newer than `known` (or after 10 s).
    async fn routes(&self, known: u64) -> RouteTable {
        if self.version.get() <= known {
            let _ = tokio::time::timeout(Duration::from_secs(10), self.changed.notified()).await;
        }
        self.table()
    }

    /// A caller has a request and no replica (scale from zero).
    async fn demand(&self, deployment: String) {
        if let Some(d) = self
            .deps
            .borrow_mut()
            .iter_mut()
            .find(|d| d.spec.name == deployment)
        {
            d.demand = true;
        }
    }

    /// Starts rolling a new version out over a running deployment; returns
    /// once it started (the rollout runs on; `history` tells how it ends).
    async fn rollout(&self, mut spec: RolloutSpec) -> Result<(), String> {
        self.start_loop();
        if let Some(r) = spec.registry.clone() {
            let live = self
                .deps
                .borrow()
                .iter()
                .find(|d| d.spec.name == spec.deployment)
                .map(|d| d.spec.user_config.clone())
                .unwrap_or_else(|| "null".into());
            let base = spec.user_config.clone().unwrap_or(live);
            let pinned = spec.registry_pinned.take();
            spec.user_config = Some(registry::pin(
                &r,
                pinned.as_ref(),
                &base,
                &mut spec.version,
            )?);
        }
        rollouts::start(
            &mut self.deps.borrow_mut(),
            &mut self.history.borrow_mut(),
            spec,
        )?;
        self.publish();
        Ok(())
    }

    /// Rolls a deployment's rollout back now.
    async fn rollback(&self, deployment: String, who: String) -> Result<(), String> {
        rollouts::rollback(
            &mut self.deps.borrow_mut(),
            &mut self.history.borrow_mut(),
            &deployment,
            &who,
        )?;
        self.publish();
        Ok(())
    }

    /// Every rollout step of `deployment` ("": of all), oldest first, JSON.
    async fn history(&self, deployment: String) -> String {
        let all = self.history.borrow();
        let h: Vec<&HistoryEntry> = all
            .iter()
            .filter(|e| deployment.is_empty() || e.deployment == deployment)
            .collect();
        serde_json::to_string(&h).unwrap_or_default()
    }

    /// A caller compared shadowed answers of `deployment`'s challenger
    /// with the live version's, and saw `failed` of the challenger's
    /// answers fail in ways its replicas cannot count (died, timed out).
    async fn shadow_report(&self, deployment: String, compared: u64, agreed: u64, failed: u64) {
        let mut deps = self.deps.borrow_mut();
        let Some(to) = deps
            .iter_mut()
            .find(|d| d.spec.name == deployment)
            .and_then(|d| d.rollout.as_mut())
            .map(|a| {
                a.compared += compared;
                a.agreed += agreed;
                a.challenger.clone()
            })
        else {
            return;
        };
        if let Some(c) = deps.iter_mut().find(|d| d.spec.name == to) {
            c.window.add_shadow(clock_ms(), compared, agreed);
            c.window.add(clock_ms(), failed, failed, &Vec::new());
        }
    }

    /// Replaces the alert rules (firing alerts of removed rules are
    /// forgotten without a resolution).
    async fn set_alert_rules(&self, rules: Rules) -> Result<(), String> {
        rules.validate()?;
        self.alerting.borrow_mut().set_rules(rules);
        self.start_loop();
        Ok(())
    }

    /// The rules, what fires now, the notices sent, and delivery counts (JSON).
    async fn alerts(&self) -> String {
        let a = self.alerting.borrow();
        let rules: Vec<serde_json::Value> = a
            .engine
            .rules()
            .rules
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name, "metric": r.metric, "threshold": r.threshold,
                    "for_s": r.for_s, "severity": r.severity, "deployment": r.deployment,
                    "webhooks": r.webhooks,
                })
            })
            .collect();
        serde_json::json!({
            "rules": rules,
            "firing": a.engine.firing(),
            "notices": a.notices,
            "delivered": a.delivered,
            "delivery_failures": a.failed,
            "passes": a.passes,
            "cluster_polls": a.cluster_polls,
        })
        .to_string()
    }

    /// Applications, deployments and replicas with their counters, as JSON.
    async fn status(&self) -> String {
        status::json(&self.deps, &self.proxies, &self.proxy_restarts, clock_ms())
    }

    /// Starts the HTTP ingress on `host:port` (0: any free port); returns
    /// its address. One per controller in this version.
    async fn start_proxy(&self, host: String, port: u16) -> Result<String, String> {
        if let Some(p) = self.proxies.borrow().first() {
            return Ok(p.1.clone());
        }
        self.start_loop();
        let spec = ProxySpec { host, port };
        let (h, addr, pid) = spawn_proxy(spec.clone()).await?;
        // Started again on the same address if it dies.
        let port = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(spec.port);
        let again = ProxySpec { port, ..spec };
        self.proxies
            .borrow_mut()
            .push((h, addr.clone(), again, pid));
        Ok(addr)
    }

    /// Removes an application: its replicas are drained, then stopped.
    async fn delete(&self, app: String) -> Result<(), String> {
        rollouts::end_with(
            &mut self.deps.borrow_mut(),
            &mut self.history.borrow_mut(),
            |d| d.app == app,
            "the application was deleted",
        );
        for d in self.deps.borrow_mut().iter_mut().filter(|d| d.app == app) {
            d.target = 0;
            d.scaler = None;
        }
        self.wait_gone(Some(&app)).await
    }

    /// Removes every application and the proxies.
    async fn shutdown(&self) -> Result<(), String> {
        rollouts::end_with(
            &mut self.deps.borrow_mut(),
            &mut self.history.borrow_mut(),
            |_| true,
            "serving was shut down",
        );
        for d in self.deps.borrow_mut().iter_mut() {
            d.target = 0;
            d.scaler = None;
        }
        let r = self.wait_gone(None).await;
        let proxies: Vec<_> = self.proxies.borrow_mut().drain(..).collect();
        for (p, _, _, _) in proxies {
            // In-flight requests are answered first.
            if let Ok(d) = p.drain() {
                let _ = tokio::time::timeout(Duration::from_secs(35), d).await;
            }
            let _ = tokio::task::spawn_blocking(move || prism::kill(&p, true)).await;
        }
        // The head's row goes, and no report follows until serving does.
        self.reporter.ended.set(true);
        self.reporter.send(String::new(), true).await;
        r
    }
}

impl Controller {
    fn summary(&self, app: &str) -> String {
        let deps = self.deps.borrow();
        let parts: Vec<String> = deps
            .iter()
            .filter(|d| d.app == app)
            .map(|d| {
                let new = d
                    .members
                    .iter()
                    .filter(|m| m.generation == d.generation)
                    .count();
                format!(
                    "{}: {new} of {} replicas up ({} starting)",
                    d.spec.name, d.target, d.starting
                )
            })
            .collect();
        parts.join("; ")
    }

    async fn wait_gone(&self, app: Option<&str>) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left: usize = {
                let mut deps = self.deps.borrow_mut();
                deps.retain(|d| {
                    app.is_some_and(|a| d.app != a)
                        || !(d.members.is_empty() && d.starting == 0 && d.draining == 0)
                });
                deps.iter()
                    .filter(|d| app.is_none_or(|a| d.app == a))
                    .count()
            };
            self.publish();
            if left == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{left} deployments still have replicas after 60 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn table(&self) -> RouteTable {
        let deps = self.deps.borrow();
        RouteTable {
            version: self.version.get(),
            entries: deps
                .iter()
                .map(|d| RouteEntry {
                    app: d.app.clone(),
                    spec: d.spec.clone(),
                    replicas: d.members.iter().map(|m| m.handle.clone()).collect(),
                    split: d.rollout.as_ref().and_then(|a| a.split()),
                })
                .collect(),
        }
    }

    fn publish(&self) {
        publish(&self.version, &self.changed);
    }

    fn start_loop(&self) {
        // The dashboard's Serve page, again after a shutdown.
        self.reporter
            .resume(&self.deps, &self.proxies, &self.proxy_restarts);
        if self.looping.replace(true) {
            return;
        }
        let (deps, version, changed, history, alerting) = (
            self.deps.clone(),
            self.version.clone(),
            self.changed.clone(),
            self.history.clone(),
            self.alerting.clone(),
        );
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                check_replicas(&deps, &version, &changed).await;
                reconcile(&deps, &version, &changed);
                let moved = rollouts::drive(
                    &mut deps.borrow_mut(),
                    &mut history.borrow_mut(),
                    clock_ms(),
                );
                if moved {
                    publish(&version, &changed);
                }
                let notices = alerting
                    .borrow_mut()
                    .tick(&mut deps.borrow_mut(), clock_ms());
                alerting::send_all(&alerting, notices);
            }
        });
        // Dead nodes and failed runs, from the head every 2 s (a list of
        // 10,000 runs costs the head ~80 ms).
        let alerting = self.alerting.clone();
        tokio::task::spawn_local(async move {
            loop {
                let seen = tokio::task::spawn_blocking(|| {
                    Ok::<_, prism::Error>((prism::cluster::nodes()?, prism::cluster::runs()?))
                })
                .await;
                match seen {
                    Ok(Ok((nodes, runs))) => {
                        let notices = alerting.borrow_mut().cluster(&nodes, &runs);
                        alerting::send_all(&alerting, notices);
                    }
                    Ok(Err(e)) => tracing::debug!("cluster state for alerts: {e}"),
                    Err(e) => tracing::debug!("cluster state for alerts: {e}"),
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
        let (proxies, restarts) = (self.proxies.clone(), self.proxy_restarts.clone());
        tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                check_proxies(&proxies, &restarts).await;
            }
        });
    }
}
