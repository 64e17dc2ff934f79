//! Prism Serve: models served by replica actors behind a load-aware router
//! and an HTTP ingress, with dynamic batching and autoscaling.
//!
//! # Layout
//!
//! - [`Model`] (in `model`): what a user serves, registered with
//!   [`model!`] so every replica process builds it by name.
//! - `replica`: the actor holding one model instance, with the dynamic
//!   batcher in front of it.
//! - `router`: power of two choices by requests in flight, a bounded
//!   queue, retries when a replica dies; one per deployment in every caller.
//! - `controller`: the named actor that owns the desired state; `upkeep`:
//!   its checks and reconcile pass around the pure decisions (`reconcile`,
//!   `autoscale`).
//! - `proxy`: the HTTP ingress actor (axum), with Prometheus metrics
//!   (`metrics`) at `/-/metrics`.
//! - `client`: a process's runtime, route watcher and rollout traffic
//!   split (weights, sticky keys, shadow mirroring).
//! - [`mod@rollout`]: canary, blue-green and shadow rollouts as a pure state
//!   machine; `rollouts`: the controller applying it (promotion, automatic
//!   rollback, history); `window`: per-deployment HDR latency windows.
//! - [`loadgen`]: the open-loop load generator behind `prism serve bench`.
//!
//! # Serving a model
//!
//! ```no_run
//! use prism_serve::{Application, Deployment, Json, Model};
//!
//! struct Echo;
//! impl Model for Echo {
//!     type Request = Json<String>;
//!     type Response = Json<String>;
//!     fn new(_config: &serde_json::Value) -> Result<Self, String> { Ok(Echo) }
//!     async fn call(&self, Json(s): Json<String>) -> Result<Json<String>, String> { Ok(Json(s)) }
//! }
//! prism_serve::model!(Echo);
//!
//! # fn main() -> Result<(), prism_serve::ServeError> {
//! let _cluster = prism::init()?;
//! let url = prism_serve::start("127.0.0.1", 8000)?;
//! prism_serve::run(Application::new("echo").deployment(
//!     Deployment::new::<Echo>("echo").replicas(2).route_prefix("/echo"),
//! ))?;
//! // curl -d '"hi"' http://127.0.0.1:8000/echo  →  "hi"
//! let echo = prism_serve::get_handle::<Echo>("echo")?;
//! assert_eq!(echo.call(Json("hi".to_string()))?, Json("hi".to_string()));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

// rkyv's derive makes undocumented helper types; the types are documented.
mod alerting;
#[allow(missing_docs)]
pub mod alerts;
mod api;
pub mod autoscale;
mod client;
pub mod config;
mod controller;
pub mod drift;
pub mod loadgen;
mod metrics;
mod model;
mod proxy;
mod reconcile;
mod redeploy;
mod registry;
mod replica;
// rkyv's derive makes undocumented helper types for `Strategy`'s
// variants; the types themselves are documented.
#[allow(missing_docs)]
pub mod rollout;
mod rollout_api;
mod rollouts;
mod router;
mod spec;
mod status;
mod upkeep;
mod window;

pub use api::{
    delete, deploy, get_handle, run, run_config, shutdown, start, status, Application, Deployment,
    DeploymentHandle,
};
pub use autoscale::AutoscalingConfig;
pub use config::{ConfigError, ServeConfig};
pub use controller::Controller;
pub use model::{Codec, Json, Model, Named};
pub use proxy::{Proxy, ProxySpec, MAX_BODY};
pub use reconcile::{plan, Step, View};
pub use replica::{Replica, ReplicaSpec, ReplicaStats};
pub use rollout::{Strategy, Thresholds};
pub use rollout_api::{alerts, history, rollback, rollout, set_alert_rules, wait_rollout};
pub use rollouts::HistoryEntry;
pub use router::{choose, Limits, Router};
pub use spec::{
    AppSpec, DeploymentSpec, DriftSpec, RolloutPolicy, RolloutSpec, RouteEntry, RouteTable, Split,
};

#[doc(hidden)]
pub mod __private {
    pub use crate::model::{build_erased, ModelRegistration};
    pub use inventory;
}

/// A serving failure, with the HTTP status the ingress answers it with.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Every replica is at `max_ongoing_requests` and the queue is full.
    #[error("deployment {deployment} is overloaded: every replica is busy and {queued} requests already wait; retry later")]
    Overloaded {
        /// The deployment.
        deployment: String,
        /// Its queue limit.
        queued: u32,
    },
    /// The request did not finish in time.
    #[error("deployment {deployment}: no answer within {after:?}")]
    Timeout {
        /// The deployment.
        deployment: String,
        /// Its request timeout.
        after: std::time::Duration,
    },
    /// No replica came up in time (scaled to zero and not started, or all dead).
    #[error("deployment {deployment} has no running replica (waited {waited:?})")]
    NoReplicas {
        /// The deployment.
        deployment: String,
        /// How long the request waited.
        waited: std::time::Duration,
    },
    /// The replica died and the retries ran out.
    #[error(
        "deployment {deployment}: the replica died before answering and no retry is left: {detail}"
    )]
    ReplicaDied {
        /// The deployment.
        deployment: String,
        /// Why.
        detail: String,
    },
    /// No such deployment.
    #[error("no deployment named {name:?} (deployed: {known:?})")]
    NoDeployment {
        /// The name asked for.
        name: String,
        /// Those that exist.
        known: Vec<String>,
    },
    /// The model answered with an error (or could not decode the request).
    #[error("{0}")]
    Model(String),
    /// The answer could not be decoded as the handle's response type.
    #[error("the answer is not this handle's response type: {0}")]
    Decode(String),
    /// The controller refused a deploy, or could not be reached.
    #[error("serve controller: {0}")]
    Controller(String),
    /// A registry version could not be resolved as the deploying
    /// process's job (unknown, or in a namespace not granted).
    #[error("{0}")]
    Registry(String),
    /// The serve config file is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The runtime failed (cluster, actor calls).
    #[error(transparent)]
    Prism(#[from] prism::Error),
}

impl ServeError {
    /// The HTTP status the ingress answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            ServeError::Overloaded { .. } | ServeError::NoReplicas { .. } => 503,
            ServeError::Timeout { .. } => 504,
            ServeError::NoDeployment { .. } => 404,
            ServeError::Model(m) if m.starts_with("bad request:") => 400,
            ServeError::ReplicaDied { .. } => 502,
            _ => 500,
        }
    }
}
