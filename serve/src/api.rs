//! The driver's API: describe deployments and applications, run them, and
//! call them through typed handles.

use crate::autoscale::AutoscalingConfig;
use crate::client::{self, controller};
use crate::config::ServeConfig;
use crate::controller::{Controller, NAME};
use crate::model::{Codec, Named};
use crate::spec::{AppSpec, DeploymentSpec};
use crate::ServeError;
use std::marker::PhantomData;
use std::time::Duration;

/// A deployment of a registered [`Named`] model (builder).
#[derive(Debug, Clone)]
pub struct Deployment(DeploymentSpec);

impl Deployment {
    /// Model `M` deployed as `name`: 1 replica, 1 CPU each, 8 requests in
    /// flight per replica, 64 queued, a 30 s timeout, 2 retries, no
    /// batching, no autoscaling, no HTTP route.
    pub fn new<M: Named>(name: &str) -> Deployment {
        Deployment(DeploymentSpec {
            name: name.to_string(),
            model: M::NAME.to_string(),
            user_config: "null".into(),
            replicas: 1,
            num_cpus: 1.0,
            num_gpus: 0.0,
            max_ongoing_requests: 8,
            max_queued_requests: 64,
            request_timeout_ms: 30_000,
            retries: 2,
            max_batch_size: 1,
            batch_wait_us: 0,
            autoscaling: None,
            route_prefix: None,
            content_type: <M::Response as Codec>::CONTENT_TYPE.to_string(),
            health_period_ms: 2_000,
            version: String::new(),
            drift: None,
            registry: None,
            registry_pinned: None,
            rollout: None,
        })
    }

    /// Replicas to run (the starting count when autoscaling).
    pub fn replicas(mut self, n: u32) -> Self {
        self.0.replicas = n;
        self
    }
    /// CPUs each replica holds.
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.0.num_cpus = n;
        self
    }
    /// GPUs each replica holds (0.5: two replicas share one).
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.0.num_gpus = n;
        self
    }
    /// Requests in flight per replica from one caller.
    pub fn max_ongoing_requests(mut self, n: u32) -> Self {
        self.0.max_ongoing_requests = n;
        self
    }
    /// Requests a caller queues before answering `Overloaded` (HTTP 503).
    pub fn max_queued_requests(mut self, n: u32) -> Self {
        self.0.max_queued_requests = n;
        self
    }
    /// A request's time limit, queueing included (HTTP 504 past it).
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.0.request_timeout_ms = t.as_millis() as u64;
        self
    }
    /// Retries on another replica when one dies mid-request (0 for
    /// requests that must not run twice).
    pub fn retries(mut self, n: u32) -> Self {
        self.0.retries = n;
        self
    }
    /// Dynamic batching: up to `max` requests per `call_batch`, waiting at
    /// most `wait` for a batch to fill.
    pub fn batching(mut self, max: u32, wait: Duration) -> Self {
        self.0.max_batch_size = max.max(1);
        self.0.batch_wait_us = wait.as_micros() as u64;
        self
    }
    /// Autoscale on requests in flight.
    pub fn autoscaling(mut self, cfg: AutoscalingConfig) -> Self {
        self.0.autoscaling = Some(cfg);
        self
    }
    /// Serve it over HTTP under this path prefix.
    pub fn route_prefix(mut self, prefix: &str) -> Self {
        self.0.route_prefix = Some(prefix.to_string());
        self
    }
    /// The model's user config (JSON), passed to `Model::new` and
    /// `Model::reconfigure`.
    pub fn user_config(mut self, config: serde_json::Value) -> Self {
        self.0.user_config = config.to_string();
        self
    }
    /// The version label its answers carry (`x-prism-version`).
    pub fn version(mut self, v: &str) -> Self {
        self.0.version = v.to_string();
        self
    }
    /// Watch live inputs and predictions for drift against `reference` (a
    /// file or `NAME@alias`; see [`crate::DriftSpec`]) in windows of
    /// `window` requests per replica.
    pub fn drift(mut self, reference: &str, window: u32) -> Self {
        self.0.drift = Some(crate::DriftSpec {
            reference: reference.to_string(),
            window,
            resolved: None,
            unresolved: None,
        });
        self
    }
    /// Serve a version from the model registry (`NAME@alias` or `NAME@3`),
    /// pinned when deployed: its checkpoint reaches the model as
    /// `checkpoint` in the user config (an object or null), and the version
    /// label becomes `NAME@N` unless [`Deployment::version`] set one.
    pub fn registry(mut self, spec: &str) -> Self {
        self.0.registry = Some(spec.to_string());
        self
    }
    /// Redeploys that bring a new version label (with a new model or
    /// config) roll it out by `policy` instead of a rolling update.
    pub fn rollout_policy(mut self, policy: crate::RolloutPolicy) -> Self {
        self.0.rollout = Some(policy);
        self
    }
    /// How often each replica's health check runs.
    pub fn health_period(mut self, t: Duration) -> Self {
        self.0.health_period_ms = t.as_millis() as u64;
        self
    }
    /// The spec it stands for.
    pub fn spec(&self) -> &DeploymentSpec {
        &self.0
    }
}

/// Deployments deployed and updated together (builder).
#[derive(Debug, Clone)]
pub struct Application(AppSpec);

impl Application {
    /// An empty application.
    pub fn new(name: &str) -> Application {
        Application(AppSpec {
            name: name.to_string(),
            deployments: Vec::new(),
        })
    }
    /// Adds a deployment.
    pub fn deployment(mut self, d: Deployment) -> Self {
        self.0.deployments.push(d.0);
        self
    }
    /// The spec it stands for.
    pub fn spec(&self) -> &AppSpec {
        &self.0
    }
}

fn get_or_start_controller() -> Result<prism::ActorHandle<Controller>, ServeError> {
    if let Ok(c) = controller() {
        return Ok(c);
    }
    let spawned = Controller::options()
        .name(NAME)
        .detached()
        .num_cpus(0.0)
        .max_concurrency(10_000)
        .spawn();
    match spawned {
        Ok(c) => {
            c.ready()?;
            Ok(c)
        }
        // Someone else started it first.
        Err(_) => Ok(controller()?),
    }
}

/// Starts serving on this cluster (the controller, and the HTTP proxy on
/// `host:port`, 0 for any free port); returns the proxy's `http://` URL.
pub fn start(host: &str, port: u16) -> Result<String, ServeError> {
    let c = get_or_start_controller()?;
    let addr = c
        .start_proxy(host.to_string(), port)?
        .get_timeout(Duration::from_secs(90))?
        .map_err(ServeError::Controller)?;
    Ok(format!("http://{addr}"))
}

/// Deploys (or updates) `app` and waits (up to 5 minutes) until it runs.
/// An update rolls replicas over one at a time; a change of user config
/// alone reconfigures them in place.
pub fn run(app: Application) -> Result<(), ServeError> {
    deploy(app.0)
}

/// Deploys an application spec (from [`run`] or a config file).
pub fn deploy(mut app: AppSpec) -> Result<(), ServeError> {
    for d in &mut app.deployments {
        if let Some(r) = &d.registry {
            let pinned = crate::registry::resolve(r).map_err(ServeError::Registry)?;
            d.registry_pinned = Some(pinned);
        }
        // A reference that cannot be resolved now may still be kept by the
        // controller (the running deployment's file, `redeploy.rs`).
        if let Some(drift) = &mut d.drift {
            match crate::drift::resolve(&drift.reference) {
                Ok(file) => drift.resolved = file,
                Err(why) => drift.unresolved = Some(why),
            }
        }
    }
    let c = get_or_start_controller()?;
    let wait = Duration::from_secs(300);
    c.deploy(app, wait.as_millis() as u64)?
        .get_timeout(wait + Duration::from_secs(10))?
        .map_err(ServeError::Controller)
}

/// Starts the ingress and deploys every application of a serve config
/// file (`serve.yaml`); returns the ingress's URL. The models it names must
/// be registered in this binary (the replicas run it).
pub fn run_config(path: &std::path::Path) -> Result<String, ServeError> {
    let cfg = ServeConfig::load(path)?;
    let url = start(&cfg.http.host, cfg.http.port)?;
    for app in cfg.apps() {
        deploy(app)?;
    }
    Ok(url)
}

/// Every deployment and replica, with counters (JSON).
pub fn status() -> Result<serde_json::Value, ServeError> {
    let c = controller()?;
    let text = c.status()?.get_timeout(Duration::from_secs(30))?;
    serde_json::from_str(&text).map_err(|e| ServeError::Controller(e.to_string()))
}

/// Removes an application (its replicas drain first).
pub fn delete(app: &str) -> Result<(), ServeError> {
    let c = controller()?;
    c.delete(app.to_string())?
        .get_timeout(Duration::from_secs(90))?
        .map_err(ServeError::Controller)
}

/// Removes every application, the proxy and the controller.
pub fn shutdown() -> Result<(), ServeError> {
    let Ok(c) = controller() else { return Ok(()) };
    let r = c
        .shutdown()?
        .get_timeout(Duration::from_secs(90))?
        .map_err(ServeError::Controller);
    // The controller has shut everything down; a kill the head refuses
    // (the namespace not granted) or cannot judge leaves the detached
    // controller itself running, and says so.
    let killed = prism::kill(&c, true);
    r?;
    killed.map_err(|e| {
        ServeError::Prism(prism::Error::ClusterState(format!(
            "applications and proxy are gone, but the serve controller still runs: {e}"
        )))
    })
}

/// A typed handle to a deployment: calls go through this process's router
/// (load-aware, retried when a replica dies), from drivers, tasks, actors
/// and other deployments alike.
pub struct DeploymentHandle<M: Named> {
    name: String,
    _m: PhantomData<fn() -> M>,
}

impl<M: Named> Clone for DeploymentHandle<M> {
    fn clone(&self) -> Self {
        DeploymentHandle {
            name: self.name.clone(),
            _m: PhantomData,
        }
    }
}

/// The handle of deployment `name` (serving model `M`).
pub fn get_handle<M: Named>(name: &str) -> Result<DeploymentHandle<M>, ServeError> {
    controller()?;
    Ok(DeploymentHandle {
        name: name.to_string(),
        _m: PhantomData,
    })
}

impl<M: Named> DeploymentHandle<M> {
    /// Calls the deployment (from async code).
    pub async fn call_async(&self, req: M::Request) -> Result<M::Response, ServeError> {
        self.call_keyed_async(None, req).await
    }

    /// Calls the deployment with a routing key: during a rollout with
    /// sticky routing, the same key reaches the same version (as the
    /// sticky header does over HTTP).
    pub fn call_keyed(&self, key: &str, req: M::Request) -> Result<M::Response, ServeError> {
        let (this, key) = (self.clone(), key.to_string());
        client::runtime().block_on(async move { this.call_keyed_async(Some(&key), req).await })
    }

    /// [`DeploymentHandle::call_keyed`] from async code.
    pub async fn call_keyed_async(
        &self,
        key: Option<&str>,
        req: M::Request,
    ) -> Result<M::Response, ServeError> {
        let routes = client::routes();
        let router = routes
            .router_waiting(&self.name, Duration::from_secs(10))
            .await
            .ok_or_else(|| ServeError::NoDeployment {
                name: self.name.clone(),
                known: routes.known(),
            })?;
        let (answer, _version) = routes.call(&self.name, router, req.encode(), key).await;
        let bytes = answer?;
        M::Response::decode(&bytes).map_err(ServeError::Decode)
    }

    /// Calls the deployment and blocks until it answers (not from inside
    /// an async runtime: use [`DeploymentHandle::call_async`] there).
    pub fn call(&self, req: M::Request) -> Result<M::Response, ServeError> {
        let this = self.clone();
        client::runtime().block_on(async move { this.call_async(req).await })
    }
}
