//! The controller's upkeep, run on its event loop: replicas' liveness and
//! health checks, the reconcile pass (autoscaling, then the plan's steps:
//! start, drain and stop), and the HTTP proxies kept alive.

use crate::autoscale::Autoscaler;
use crate::proxy::{Proxy, ProxySpec};
use crate::reconcile::{plan, Step, View};
use crate::replica::{Replica, ReplicaSpec, ReplicaStats};
use crate::rollouts::Active;
use crate::spec::DeploymentSpec;
use crate::window::{clock_ms, delta, Slices};
use prism::ActorHandle;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// One replica as the controller tracks it.
pub(crate) struct Member {
    pub(crate) handle: ActorHandle<Replica>,
    pub(crate) generation: u64,
    pub(crate) stats: ReplicaStats,
    pub(crate) last_health: Instant,
}

/// One deployment: its spec, replicas and what is being done to them.
pub(crate) struct Dep {
    pub(crate) app: String,
    pub(crate) spec: DeploymentSpec,
    pub(crate) generation: u64,
    pub(crate) target: u32,
    pub(crate) members: Vec<Member>,
    pub(crate) starting: u32,
    pub(crate) draining: u32,
    pub(crate) scaler: Option<Autoscaler>,
    pub(crate) demand: bool,
    pub(crate) last_error: Option<String>,
    pub(crate) failed_at: Option<Instant>,
    pub(crate) replaced: u64,
    /// Autoscaling decisions made, up and down (thrash shows here).
    pub(crate) scaled_up: u64,
    /// See `scaled_up`.
    pub(crate) scaled_down: u64,
    /// Its recent requests, errors and latencies.
    pub(crate) window: Slices,
    /// The rollout replacing its version, when one runs.
    pub(crate) rollout: Option<Active>,
}

impl Dep {
    /// A deployment with no replicas yet.
    pub(crate) fn new(app: &str, spec: DeploymentSpec) -> Dep {
        Dep {
            app: app.to_string(),
            spec,
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
            scaled_up: 0,
            scaled_down: 0,
            window: Slices::new(10),
            rollout: None,
        }
    }

    /// Every replica runs the current version and none starts or drains.
    pub(crate) fn settled(&self) -> bool {
        self.members.iter().all(|m| m.generation == self.generation)
            && self.members.len() as u32 == self.target
            && self.starting == 0
            && self.draining == 0
    }
}

/// The HTTP proxies: handle, address, and how to start it again.
pub(crate) type Proxies = Rc<RefCell<Vec<(ActorHandle<Proxy>, String, ProxySpec, u32)>>>;

/// Starts a proxy and waits (at most 60 s) for its address.
pub(crate) async fn spawn_proxy(
    spec: ProxySpec,
) -> Result<(ActorHandle<Proxy>, String, u32), String> {
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
pub(crate) async fn check_proxies(proxies: &Proxies, restarts: &Cell<u64>) {
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

pub(crate) fn publish(version: &Cell<u64>, changed: &Notify) {
    version.set(version.get() + 1);
    changed.notify_waiters();
}

pub(crate) type Deps = Rc<RefCell<Vec<Dep>>>;

/// Reads each replica's counters (its liveness check) and, every health
/// period, its model's health check; takes dead or failing replicas out.
pub(crate) async fn check_replicas(deps: &Deps, version: &Rc<Cell<u64>>, changed: &Rc<Notify>) {
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
    // Every replica is checked at once, on this thread.
    let checks: Vec<_> = checks.map(tokio::task::spawn_local).collect();
    let mut results = Vec::with_capacity(checks.len());
    for c in checks {
        if let Ok(r) = c.await {
            results.push(r);
        }
    }
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
                    // A replica that restarted counts from zero: take it whole.
                    let before = match s.requests < m.stats.requests {
                        true => ReplicaStats::default(),
                        false => m.stats.clone(),
                    };
                    let latency = delta(&s.latency, &before.latency);
                    let (req, err) = (
                        s.requests - before.requests,
                        s.errors.saturating_sub(before.errors),
                    );
                    m.stats = s;
                    if checked {
                        m.last_health = now;
                    }
                    d.window.add(clock_ms(), req, err, &latency);
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

/// One reconcile pass: autoscaling targets, then the plan's steps.
pub(crate) fn reconcile(deps: &Deps, version: &Rc<Cell<u64>>, changed: &Rc<Notify>) {
    let now = Instant::now();
    let mut steps = Vec::new();
    {
        let mut all = deps.borrow_mut();
        for d in all.iter_mut() {
            // A rollout freezes the live set's size: its traffic moves to the
            // new version, and a rollback must find the old set warm.
            if let Some(s) = d.scaler.as_mut().filter(|_| d.rollout.is_none()) {
                let load: f64 = d
                    .members
                    .iter()
                    .map(|m| m.stats.ongoing as f64)
                    .sum::<f64>()
                    + if d.demand { 1.0 } else { 0.0 };
                if let Some(n) = s.decide(now, d.target, load) {
                    tracing::info!(deployment = %d.spec.name, "autoscaling {} -> {n} replicas", d.target);
                    if n > d.target {
                        d.scaled_up += 1;
                    } else {
                        d.scaled_down += 1;
                    }
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
pub(crate) async fn start_replica(
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
                drift: s.drift.clone(),
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
pub(crate) async fn drain(h: &ActorHandle<Replica>) {
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
