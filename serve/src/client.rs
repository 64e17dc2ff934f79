//! The caller's side, one per process: the serve runtime (a small tokio
//! runtime of its own, so handles work from plain threads, tasks and
//! actors alike), and the route watcher that long-polls the controller
//! and keeps one [`Router`] per deployment up to date.

use crate::controller::{Controller, NAME, NAMESPACE};
use crate::router::Router;
use crate::spec::RouteTable;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
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

/// This process's view of every deployment's routes.
pub(crate) struct Routes {
    version: AtomicU64,
    routers: RwLock<HashMap<String, Arc<Router>>>,
    table: RwLock<Vec<Route>>,
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

    fn apply(&self, table: RouteTable) {
        let mut routers = self.routers.write().unwrap();
        routers.retain(|name, _| table.entries.iter().any(|e| &e.spec.name == name));
        let mut routes = Vec::new();
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
        self.version.store(table.version, Ordering::Release);
        self.updated.notify_waiters();
    }
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

/// The cluster's serve controller, if one runs.
pub(crate) fn controller() -> prism::Result<prism::ActorHandle<Controller>> {
    prism::get_actor_in::<Controller>(NAMESPACE, NAME)
}

/// Long-polls the controller for newer route tables, for ever.
async fn watch(routes: Arc<Routes>) {
    let mut handle = None;
    loop {
        let c = match handle.clone() {
            Some(c) => c,
            None => match tokio::task::spawn_blocking(controller).await {
                Ok(Ok(c)) => {
                    handle = Some(c.clone());
                    c
                }
                _ => {
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
    use super::prefix_matches;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/digits", "/digits"));
        assert!(prefix_matches("/digits", "/digits/v1"));
        assert!(!prefix_matches("/digits", "/digitsx"));
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/a/", "/a/b"));
    }
}
