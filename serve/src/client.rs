//! The caller's side, one per process: the serve runtime (a small tokio
//! runtime of its own, so handles work from plain threads, tasks and
//! actors alike), and the route watcher that long-polls the controller
//! and keeps one [`Router`] per deployment up to date.

use crate::controller::{Controller, NAME};
use crate::router::Router;
use crate::spec::{RouteTable, Split};
use crate::ServeError;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// The runtime routers, the proxy and blocking handle calls run on.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("prism-serve")
            .enable_all()
            .build()
            .expect("the serve runtime")
    })
}

struct Route {
    prefix: Option<String>,
    deployment: String,
    content_type: String,
}

/// A deployment's version label and its rollout's split, if one runs.
type Meta = (String, Option<Split>);

/// This process's view of every deployment's routes.
pub(crate) struct Routes {
    version: AtomicU64,
    routers: RwLock<HashMap<String, Arc<Router>>>,
    table: RwLock<Vec<Route>>,
    /// Each deployment's version label and rollout split.
    meta: RwLock<HashMap<String, Arc<Meta>>>,
    /// Per live deployment, not yet reported to the controller: shadowed
    /// answers compared, agreeing, and the challenger's failures its
    /// replicas cannot count (died, timed out, none up).
    shadow: Mutex<HashMap<String, (u64, u64, u64)>>,
    reporting: AtomicBool,
    /// Woken by every new table.
    updated: tokio::sync::Notify,
}

/// The process's routes; the watcher starts on first use.
pub(crate) fn routes() -> Arc<Routes> {
    static ROUTES: OnceLock<Arc<Routes>> = OnceLock::new();
    ROUTES
        .get_or_init(|| {
            let r = Arc::new(Routes {
                version: AtomicU64::new(0),
                routers: RwLock::new(HashMap::new()),
                table: RwLock::new(Vec::new()),
                meta: RwLock::new(HashMap::new()),
                shadow: Mutex::new(HashMap::new()),
                reporting: AtomicBool::new(false),
                updated: tokio::sync::Notify::new(),
            });
            runtime().spawn(watch(r.clone()));
            r
        })
        .clone()
}

impl Routes {
    /// (prefix, deployment, content type) of every routed deployment.
    pub(crate) fn prefixes(&self) -> Vec<(String, String, String)> {
        self.table
            .read()
            .unwrap()
            .iter()
            .filter_map(|r| {
                Some((
                    r.prefix.clone()?,
                    r.deployment.clone(),
                    r.content_type.clone(),
                ))
            })
            .collect()
    }

    /// The deployment whose prefix is the longest match of `path`.
    pub(crate) fn match_path(&self, path: &str) -> Option<(String, String)> {
        self.prefixes()
            .into_iter()
            .filter(|(p, _, _)| prefix_matches(p, path))
            .max_by_key(|(p, _, _)| p.len())
            .map(|(_, d, c)| (d, c))
    }

    /// The router of `deployment`, if the controller has it.
    pub(crate) fn router(&self, deployment: &str) -> Option<Arc<Router>> {
        self.routers.read().unwrap().get(deployment).cloned()
    }

    /// The router of `deployment`, waiting (up to `timeout`) for a route
    /// table that has it: a deployment just made may not be in this
    /// process's table yet.
    pub(crate) async fn router_waiting(
        &self,
        deployment: &str,
        timeout: Duration,
    ) -> Option<Arc<Router>> {
        let deadline = Instant::now() + timeout;
        loop {
            let next = self.updated.notified();
            if let Some(r) = self.router(deployment) {
                return Some(r);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            // Tables come on every change; wake at least every 100 ms.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), next).await;
        }
    }

    /// Deployments the controller has.
    pub(crate) fn known(&self) -> Vec<String> {
        let mut k: Vec<String> = self.routers.read().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    /// The header whose value keeps a caller on one version during a
    /// rollout of `deployment`, if it asked for one.
    pub(crate) fn sticky_header(&self, deployment: &str) -> Option<String> {
        let meta = self.meta.read().unwrap();
        meta.get(deployment)?.1.as_ref()?.sticky_header.clone()
    }

    /// Calls `deployment` (whose router is `live`) through its rollout's
    /// split, if one runs: the challenger answers its share (a failure is
    /// retried on the live version when the rollout says so); a mirrored
    /// request is answered by the live version and compared in the
    /// background. Returns the answer and the version that gave it.
    pub(crate) async fn call(
        self: &Arc<Self>,
        deployment: &str,
        live: Arc<Router>,
        body: Vec<u8>,
        key: Option<&str>,
    ) -> (Result<Vec<u8>, ServeError>, String) {
        // Shared, not copied: a request holds the table entry it started with.
        let meta = self.meta.read().unwrap().get(deployment).cloned();
        let Some((version, Some(split))) = meta.as_deref() else {
            let version = meta.map(|m| m.0.clone()).unwrap_or_default();
            return (live.call(body).await, version);
        };
        let challenger = self.router(&split.to).filter(|c| c.replicas() > 0);
        if let Some(c) = challenger.as_ref().filter(|_| pick(key, split.weight)) {
            match c.call(body.clone()).await {
                Ok(b) => return (Ok(b), split.version.clone()),
                Err(e) if split.retry_on_live => {
                    self.report(deployment, 0, false, !matches!(e, ServeError::Model(_)));
                    tracing::debug!(
                        deployment,
                        "version {} failed, answered by the live one: {e}",
                        split.version
                    );
                }
                Err(e) => {
                    self.report(deployment, 0, false, !matches!(e, ServeError::Model(_)));
                    return (Err(e), split.version.clone());
                }
            }
        }
        let shadow = challenger
            .filter(|_| split.mirror > 0 && rand::random::<u32>() % 100 < split.mirror)
            .map(|c| {
                let b = body.clone();
                runtime().spawn(async move { c.call(b).await })
            });
        let out = live.call(body).await;
        if let (Some(shadow), Ok(answer)) = (shadow, &out) {
            let (me, answer, d) = (self.clone(), answer.clone(), deployment.to_string());
            runtime().spawn(async move {
                let got = shadow.await;
                let failed = matches!(&got, Ok(Err(e)) if !matches!(e, ServeError::Model(_)));
                let agreed = matches!(got, Ok(Ok(b)) if b == answer);
                me.report(&d, 1, agreed, failed);
            });
        }
        (out, version.clone())
    }

    /// Counts `compared` shadow answers (agreeing or not) and a failure
    /// of the challenger; a reporter sends the counts to the controller
    /// every 500 ms.
    fn report(self: &Arc<Self>, deployment: &str, compared: u64, agreed: bool, failed: bool) {
        if compared == 0 && !failed {
            return;
        }
        {
            let mut s = self.shadow.lock().unwrap();
            let e = s.entry(deployment.to_string()).or_default();
            e.0 += compared;
            e.1 += agreed as u64;
            e.2 += failed as u64;
        }
        if self.reporting.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        runtime().spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let counts: Vec<(String, (u64, u64, u64))> =
                    me.shadow.lock().unwrap().drain().collect();
                for (d, (compared, agreed, failed)) in counts {
                    let _ = tokio::task::spawn_blocking(move || {
                        controller().and_then(|c| c.shadow_report(d, compared, agreed, failed))
                    })
                    .await;
                }
            }
        });
    }

    fn apply(&self, table: RouteTable) {
        let mut routers = self.routers.write().unwrap();
        routers.retain(|name, _| table.entries.iter().any(|e| &e.spec.name == name));
        let mut routes = Vec::new();
        let mut meta = HashMap::new();
        for e in table.entries {
            let name = e.spec.name.clone();
            let router = routers
                .entry(name.clone())
                .or_insert_with(|| {
                    Arc::new(Router::new(
                        &name,
                        e.spec.limits(),
                        Some(demand_hook(name.clone())),
                    ))
                })
                .clone();
            router.update(e.replicas, e.spec.limits());
            meta.insert(name.clone(), Arc::new((e.spec.version.clone(), e.split)));
            routes.push(Route {
                prefix: e.spec.route_prefix.clone(),
                deployment: name,
                content_type: match e.spec.content_type.as_str() {
                    "" => "application/octet-stream".to_string(),
                    c => c.to_string(),
                },
            });
        }
        *self.table.write().unwrap() = routes;
        *self.meta.write().unwrap() = meta;
        self.version.store(table.version, Ordering::Release);
        self.updated.notify_waiters();
    }
}

/// Whether a request goes to a challenger holding `weight` percent: by
/// the hash of its key when it has one (the same key, the same answer),
/// else at random.
fn pick(key: Option<&str>, weight: u32) -> bool {
    let n = match key {
        Some(k) => {
            // SipHash with fixed keys: the same in every process.
            let mut h = std::hash::DefaultHasher::new();
            k.hash(&mut h);
            h.finish()
        }
        None => rand::random::<u64>(),
    };
    (n % 100) < weight as u64
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    p.is_empty() || path == p || path.starts_with(&format!("{p}/"))
}

/// Tells the controller (at most every 100 ms) that a request waits for a
/// replica of `deployment`: scale from zero.
fn demand_hook(deployment: String) -> Box<dyn Fn() + Send + Sync> {
    let last = std::sync::Mutex::new(None::<Instant>);
    Box::new(move || {
        let mut l = last.lock().unwrap();
        if l.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return;
        }
        *l = Some(Instant::now());
        let d = deployment.clone();
        runtime().spawn_blocking(move || {
            if let Ok(c) = controller() {
                let _ = c.demand(d);
            }
        });
    })
}

/// This job's namespace's serve controller, if one runs.
pub(crate) fn controller() -> prism::Result<prism::ActorHandle<Controller>> {
    prism::get_actor::<Controller>(NAME)
}

/// Long-polls the controller for newer route tables, for ever.
async fn watch(routes: Arc<Routes>) {
    let mut handle = None;
    let mut warned = false;
    loop {
        let c = match handle.clone() {
            Some(c) => c,
            None => match tokio::task::spawn_blocking(controller).await {
                Ok(Ok(c)) => {
                    handle = Some(c.clone());
                    c
                }
                other => {
                    // Not started yet is expected; anything else (refused
                    // by the head, say) is said once.
                    if let Ok(Err(e)) = other {
                        let absent =
                            matches!(&e, prism::Error::Task(prism::TaskError::NoSuchActor { .. }));
                        if !absent && !std::mem::replace(&mut warned, true) {
                            tracing::warn!("cannot find the serve controller: {e}");
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let known = routes.version.load(Ordering::Acquire);
        let polled = match c.routes(known) {
            Ok(r) => tokio::time::timeout(Duration::from_secs(20), r).await,
            Err(e) => Ok(Err(e)),
        };
        match polled {
            Ok(Ok(table)) => {
                if table.version != known {
                    routes.apply(table);
                }
            }
            Ok(Err(e)) => {
                tracing::debug!("route poll failed: {e}");
                handle = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => handle = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{pick, prefix_matches};

    #[test]
    fn sticky_keys_keep_their_version_and_shares_follow_the_weight() {
        for k in ["alice", "bob", "carol"] {
            let first = pick(Some(k), 30);
            assert!((0..20).all(|_| pick(Some(k), 30) == first));
        }
        let keys: Vec<String> = (0..4000).map(|i| format!("user-{i}")).collect();
        let share = keys.iter().filter(|k| pick(Some(k), 25)).count() as f64 / 4000.0;
        assert!((0.21..0.29).contains(&share), "{share}");
        assert!(!pick(None, 0) && pick(None, 100));
        // Raising the weight only moves keys to the challenger.
        assert!(keys.iter().all(|k| !pick(Some(k), 25) || pick(Some(k), 50)));
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/digits", "/digits"));
        assert!(prefix_matches("/digits", "/digits/v1"));
        assert!(!prefix_matches("/digits", "/digitsx"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/a/", "/a/b"));
    }
}
