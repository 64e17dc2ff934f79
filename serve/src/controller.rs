//! The controller: one named, detached actor per cluster that owns every
//! application's desired state and makes it so. A loop on its event loop
//! reconciles each deployment (start missing replicas, roll old ones over
//! one at a time with one extra, drain and stop extras), checks replicas'
//! health and load, replaces dead or failing ones and autoscales. Routers
//! long-poll it for the route table.

use crate::autoscale::Autoscaler;
use crate::proxy::{Proxy, ProxySpec};
use crate::reconcile::{plan, Step, View};
use crate::replica::{Replica, ReplicaSpec, ReplicaStats};
use crate::spec::{AppSpec, DeploymentSpec, RouteEntry, RouteTable};
use prism::ActorHandle;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The controller's namespace and name.
pub const NAMESPACE: &str = "prism-serve";
/// The controller's actor name.
pub const NAME: &str = "controller";

struct Member {
    handle: ActorHandle<Replica>,
    generation: u64,
    stats: ReplicaStats,
    last_health: Instant,
}

struct Dep {
    app: String,
    spec: DeploymentSpec,
    generation: u64,
    target: u32,
    members: Vec<Member>,
    starting: u32,
    draining: u32,
    scaler: Option<Autoscaler>,
    demand: bool,
    last_error: Option<String>,
    failed_at: Option<Instant>,
    replaced: u64,
}

/// The serve controller.
#[prism::actor]
pub struct Controller {
    deps: Rc<RefCell<Vec<Dep>>>,
    version: Rc<Cell<u64>>,
    changed: Rc<Notify>,
    looping: Cell<bool>,
    proxies: Proxies,
    proxy_restarts: Rc<Cell<u64>>,
}

/// The HTTP proxies: handle, address, and how to start it again.
type Proxies = Rc<RefCell<Vec<(ActorHandle<Proxy>, String, ProxySpec, u32)>>>;

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
        }
    }

    /// Deploys (or updates) an application; returns once every deployment
    /// runs its replicas of the new version, or with the reason it cannot.
    async fn deploy(&self, app: AppSpec, wait_ms: u64) -> Result<(), String> {
        for d in &app.deployments {
            d.validate()?;
        }
        self.start_loop();
        let mut reconfigure = Vec::new();
        {
            let mut deps = self.deps.borrow_mut();
            for d in &app.deployments {
                if let Some(o) = deps
                    .iter()
                    .find(|o| o.spec.name == d.name && o.app != app.name)
                {
                    return Err(format!(
                        "deployment {} already belongs to application {}",
                        d.name, o.app
                    ));
                }
            }
            // Deployments the app no longer has: scale to zero, then forget.
            for o in deps.iter_mut().filter(|o| o.app == app.name) {
                if !app.deployments.iter().any(|d| d.name == o.spec.name) {
                    o.target = 0;
                    o.scaler = None;
                }
            }
            for d in &app.deployments {
                let mut d = d.clone();
                // A spec from a config file learns its content type from
                // its first replica; keep it, or every redeploy would roll.
                if d.content_type.is_empty() {
                    if let Some(o) = deps.iter().find(|o| o.spec.name == d.name) {
                        d.content_type = o.spec.content_type.clone();
                    }
                }
                let d = &d;
                match deps.iter_mut().find(|o| o.spec.name == d.name) {
                    Some(o) if o.spec.same_but_config(d) => {
                        if o.spec.user_config != d.user_config {
                            let c = d.user_config.clone();
                            reconfigure
                                .extend(o.members.iter().map(|m| (m.handle.clone(), c.clone())));
                        }
                        o.spec = d.clone();
                        set_target(o);
                    }
                    Some(o) => {
                        o.spec = d.clone();
                        o.generation += 1;
                        o.last_error = None;
                        set_target(o);
                    }
                    None => {
                        let mut o = Dep {
                            app: app.name.clone(),
                            spec: d.clone(),
                            generation: 1,
                            target: 0,
                            members: Vec::new(),
                            starting: 0,
                            draining: 0,
                            scaler: None,
                            demand: false,
                            last_error: None,
                            failed_at: None,
                            replaced: 0,
                        };
                        set_target(&mut o);
                        deps.push(o);
                    }
                }
            }
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
                let mine: Vec<&Dep> = deps.iter().filter(|o| o.app == app.name).collect();
                if let Some(e) = mine.iter().find_map(|o| o.last_error.clone()) {
                    return Err(e);
                }
                let done = mine.iter().all(|o| {
                    o.members.iter().all(|m| m.generation == o.generation)
                        && o.members.len() as u32 == o.target
                        && o.starting == 0
                        // Old replicas drained and stopped, so no caller
                        // still reaches the old version.
                        && o.draining == 0
                });
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

    /// Applications, deployments and replicas with their counters, as JSON.
    async fn status(&self) -> String {
        let deps = self.deps.borrow();
        let apps: Vec<serde_json::Value> = deps
            .iter()
            .map(|d| {
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
                    "target_replicas": d.target,
                    "starting": d.starting,
                    "draining": d.draining,
                    "replaced": d.replaced,
                    "autoscaling": d.scaler.is_some(),
                    "last_error": d.last_error,
                    "replicas": replicas,
                })
            })
            .collect();
        let proxies: Vec<serde_json::Value> = self
            .proxies
            .borrow()
            .iter()
            .map(|p| serde_json::json!({ "address": p.1, "pid": p.3 }))
            .collect();
        let proxy_restarts = self.proxy_restarts.get();
        serde_json::json!({ "deployments": apps, "proxies": proxies, "proxy_restarts": proxy_restarts }).to_string()
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
        for d in self.deps.borrow_mut().iter_mut().filter(|d| d.app == app) {
            d.target = 0;
            d.scaler = None;
        }
        self.wait_gone(Some(&app)).await
    }

    /// Removes every application and the proxies.
    async fn shutdown(&self) -> Result<(), String> {
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
        r
    }
}

fn set_target(d: &mut Dep) {
    match &d.spec.autoscaling {
        Some(a) => {
            if d.scaler.as_ref().map(|s| s.config()) != Some(a) {
                d.scaler = Some(Autoscaler::new(a.clone()));
            }
            d.target = d.spec.replicas.clamp(a.min_replicas, a.max_replicas);
        }
        None => {
            d.scaler = None;
            d.target = d.spec.replicas;
        }
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
                })
                .collect(),
        }
    }

    fn publish(&self) {
        publish(&self.version, &self.changed);
    }

    fn start_loop(&self) {
        if self.looping.replace(true) {
            return;
        }
        let (deps, version, changed) = (
            self.deps.clone(),
            self.version.clone(),
            self.changed.clone(),
        );
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                check_replicas(&deps, &version, &changed).await;
                reconcile(&deps, &version, &changed);
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

/// Starts a proxy and waits (at most 60 s) for its address.
async fn spawn_proxy(spec: ProxySpec) -> Result<(ActorHandle<Proxy>, String, u32), String> {
    tokio::task::spawn_blocking(move || -> Result<_, String> {
        // Detached, like everything serving: it outlives the job that
        // started serving, until `shutdown`.
        let h = Proxy::options()
            .detached()
            .num_cpus(0.0)
            .max_concurrency(4)
            .spawn(spec)
            .map_err(|e| e.to_string())?;
        let started = h
            .address()
            .and_then(|r| r.get_timeout(Duration::from_secs(60)));
        match started {
            Ok(Ok(addr)) => {
                let pid = h
                    .pid()
                    .and_then(|r| r.get_timeout(Duration::from_secs(30)))
                    .unwrap_or(0);
                Ok((h, addr, pid))
            }
            Ok(Err(e)) => Err(e),
            Err(e) => {
                let _ = prism::kill(&h, true);
                Err(format!("the HTTP proxy did not start: {e}"))
            }
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A proxy that no longer answers is started again on its address.
async fn check_proxies(proxies: &Proxies, restarts: &Cell<u64>) {
    let list: Vec<(ActorHandle<Proxy>, ProxySpec)> = proxies
        .borrow()
        .iter()
        .map(|p| (p.0.clone(), p.2.clone()))
        .collect();
    for (h, spec) in list {
        let alive = match h.address() {
            Ok(r) => !matches!(
                tokio::time::timeout(Duration::from_secs(5), r).await,
                Ok(Err(prism::Error::Task(_)))
            ),
            Err(_) => false,
        };
        if alive {
            continue;
        }
        tracing::warn!("the HTTP proxy {} is gone; starting another", h.id());
        match spawn_proxy(spec.clone()).await {
            Ok((n, addr, pid)) => {
                if let Some(p) = proxies.borrow_mut().iter_mut().find(|p| p.0.id() == h.id()) {
                    *p = (n, addr, spec, pid);
                }
                restarts.set(restarts.get() + 1);
            }
            Err(e) => tracing::warn!("the HTTP proxy could not start again: {e}"),
        }
    }
}

fn publish(version: &Cell<u64>, changed: &Notify) {
    version.set(version.get() + 1);
    changed.notify_waiters();
}

type Deps = Rc<RefCell<Vec<Dep>>>;

/// Reads each replica's counters (its liveness check) and, every health
/// period, its model's health check; takes dead or failing replicas out.
async fn check_replicas(deps: &Deps, version: &Rc<Cell<u64>>, changed: &Rc<Notify>) {
    let now = Instant::now();
    let probes: Vec<(String, ActorHandle<Replica>, bool)> = deps
        .borrow()
        .iter()
        .flat_map(|d| {
            let period = Duration::from_millis(d.spec.health_period_ms.max(100));
            d.members.iter().map(move |m| {
                (
                    d.spec.name.clone(),
                    m.handle.clone(),
                    now.duration_since(m.last_health) >= period,
                )
            })
        })
        .collect();
    let checks = probes.into_iter().map(|(dep, h, health)| async move {
        let limit = Duration::from_secs(5);
        let stats = match h.stats() {
            Ok(r) => tokio::time::timeout(limit, r)
                .await
                .map_err(|_| "no answer in 5 s".to_string()),
            Err(e) => Ok(Err(e)),
        };
        let outcome: Result<ReplicaStats, String> = match stats {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e),
        };
        let healthy = match (&outcome, health) {
            (Ok(_), true) => match h.health() {
                Ok(r) => match tokio::time::timeout(limit, r).await {
                    Ok(Ok(Ok(()))) => Ok(()),
                    Ok(Ok(Err(e))) => Err(format!("health check failed: {e}")),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("health check: no answer in 5 s".into()),
                },
                Err(e) => Err(e.to_string()),
            },
            _ => Ok(()),
        };
        (dep, h, outcome, healthy, health)
    });
    let results = futures_join(checks.collect()).await;
    let mut removed = Vec::new();
    {
        let mut deps = deps.borrow_mut();
        for (dep, h, outcome, healthy, checked) in results {
            let Some(d) = deps.iter_mut().find(|d| d.spec.name == dep) else {
                continue;
            };
            let Some(i) = d.members.iter().position(|m| m.handle.id() == h.id()) else {
                continue;
            };
            match (outcome, healthy) {
                (Ok(s), Ok(())) => {
                    let m = &mut d.members[i];
                    m.stats = s;
                    if checked {
                        m.last_health = now;
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(deployment = %dep, "replacing replica {}: {e}", h.id());
                    d.members.remove(i);
                    d.replaced += 1;
                    removed.push(h);
                }
            }
        }
    }
    if !removed.is_empty() {
        publish(version, changed);
        for h in removed {
            // Dead already, or failing its checks: make sure it is gone.
            tokio::task::spawn_blocking(move || prism::kill(&h, true));
        }
    }
}

/// Runs the futures together on this thread (they are not `Send`) and
/// returns their outputs in order.
async fn futures_join<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = fs.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(done.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

/// One reconcile pass: autoscaling targets, then the plan's steps.
fn reconcile(deps: &Deps, version: &Rc<Cell<u64>>, changed: &Rc<Notify>) {
    let now = Instant::now();
    let mut steps = Vec::new();
    {
        let mut all = deps.borrow_mut();
        for d in all.iter_mut() {
            if let Some(s) = d.scaler.as_mut() {
                let load: f64 = d
                    .members
                    .iter()
                    .map(|m| m.stats.ongoing as f64)
                    .sum::<f64>()
                    + if d.demand { 1.0 } else { 0.0 };
                if let Some(n) = s.decide(now, d.target, load) {
                    tracing::info!(deployment = %d.spec.name, "autoscaling {} -> {n} replicas", d.target);
                    d.target = n;
                }
                d.demand = false;
            }
            // After a failed start, wait a little before trying again.
            if d.failed_at
                .is_some_and(|t| now.duration_since(t) < Duration::from_secs(2))
            {
                continue;
            }
            let view = View {
                target: d.target,
                current: d
                    .members
                    .iter()
                    .filter(|m| m.generation == d.generation)
                    .count() as u32,
                old: d
                    .members
                    .iter()
                    .filter(|m| m.generation != d.generation)
                    .count() as u32,
                starting: d.starting,
            };
            for step in plan(&view) {
                match step {
                    Step::Start(n) => {
                        d.starting += n;
                        for _ in 0..n {
                            steps.push((d.spec.name.clone(), None, d.spec.clone(), d.generation));
                        }
                    }
                    Step::StopOld(n) | Step::StopCurrent(n) => {
                        let old = matches!(step, Step::StopOld(_));
                        for _ in 0..n {
                            // The newest of its kind goes first.
                            let i = d
                                .members
                                .iter()
                                .rposition(|m| (m.generation != d.generation) == old);
                            if let Some(i) = i {
                                let m = d.members.remove(i);
                                d.draining += 1;
                                steps.push((
                                    d.spec.name.clone(),
                                    Some(m.handle),
                                    d.spec.clone(),
                                    d.generation,
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    if steps.is_empty() {
        return;
    }
    publish(version, changed);
    for (name, stop, spec, generation) in steps {
        let (deps, version, changed) = (deps.clone(), version.clone(), changed.clone());
        tokio::task::spawn_local(async move {
            match stop {
                Some(h) => {
                    drain(&h).await;
                    if let Some(d) = deps.borrow_mut().iter_mut().find(|d| d.spec.name == name) {
                        d.draining -= 1;
                    }
                }
                None => {
                    let started = start_replica(&spec).await;
                    let mut all = deps.borrow_mut();
                    let Some(d) = all.iter_mut().find(|d| d.spec.name == name) else {
                        return;
                    };
                    d.starting -= 1;
                    match started {
                        Ok((h, stats)) => {
                            if d.spec.content_type.is_empty() {
                                d.spec.content_type = stats.content_type.clone();
                            }
                            d.members.push(Member {
                                handle: h,
                                generation,
                                stats,
                                last_health: Instant::now(),
                            });
                            d.failed_at = None;
                        }
                        Err(e) => {
                            tracing::warn!(deployment = %name, "a replica did not start: {e}");
                            d.last_error =
                                Some(format!("deployment {name}: a replica did not start: {e}"));
                            d.failed_at = Some(Instant::now());
                        }
                    }
                }
            }
            publish(&version, &changed);
        });
    }
}

/// Starts one replica and waits (at most 120 s) until it answers.
async fn start_replica(
    spec: &DeploymentSpec,
) -> Result<(ActorHandle<Replica>, ReplicaStats), String> {
    let s = spec.clone();
    tokio::task::spawn_blocking(move || -> Result<_, String> {
        let h = Replica::options()
            .detached()
            .num_cpus(s.num_cpus)
            .num_gpus(s.num_gpus)
            .max_concurrency(s.max_ongoing_requests.max(1) + 8)
            .spread()
            .spawn(ReplicaSpec {
                deployment: s.name.clone(),
                model: s.model.clone(),
                user_config: s.user_config.clone(),
                max_batch_size: s.max_batch_size,
                batch_wait_us: s.batch_wait_us,
            })
            .map_err(|e| e.to_string())?;
        let stats = h
            .stats()
            .and_then(|r| r.get_timeout(Duration::from_secs(120)))
            .map_err(|e| e.to_string());
        match stats {
            Ok(st) => Ok((h, st)),
            Err(e) => {
                let _ = prism::kill(&h, true);
                Err(e)
            }
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Waits (at most 30 s) until a replica out of the routes has no request
/// in flight, then stops it.
async fn drain(h: &ActorHandle<Replica>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    // Callers may still hold the old table for a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    while Instant::now() < deadline {
        let ongoing = match h.stats() {
            Ok(r) => match tokio::time::timeout(Duration::from_secs(5), r).await {
                Ok(Ok(s)) => s.ongoing,
                _ => 0,
            },
            Err(_) => 0,
        };
        if ongoing == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let h = h.clone();
    let _ = tokio::task::spawn_blocking(move || prism::kill(&h, true)).await;
}
