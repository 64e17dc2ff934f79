//! What the controller is told to run ([`AppSpec`], [`DeploymentSpec`]) and
//! what it tells every router ([`RouteTable`]).

use crate::autoscale::AutoscalingConfig;
use crate::replica::Replica;
use crate::rollout::{Strategy, Thresholds};
use crate::router::Limits;
use prism::ActorHandle;
use std::time::Duration;

/// One deployment: a model, its replicas and how they are called.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct DeploymentSpec {
    /// Its name (unique in the cluster; handles find it by this).
    pub name: String,
    /// The registered model.
    pub model: String,
    /// The model's user config, JSON text.
    pub user_config: String,
    /// Replicas to run (the starting count when autoscaling).
    pub replicas: u32,
    /// CPUs per replica.
    pub num_cpus: f64,
    /// GPUs per replica (fractions allowed).
    pub num_gpus: f64,
    /// Requests in flight per replica from one caller.
    pub max_ongoing_requests: u32,
    /// Requests a caller queues before answering `Overloaded`.
    pub max_queued_requests: u32,
    /// A request's time limit, ms.
    pub request_timeout_ms: u64,
    /// Retries on another replica when one dies mid-request (0: none).
    pub retries: u32,
    /// Dynamic batching: requests per batch (1: off).
    pub max_batch_size: u32,
    /// Dynamic batching: how long a batch waits to fill, µs.
    pub batch_wait_us: u64,
    /// Autoscaling (None: a fixed count).
    pub autoscaling: Option<AutoscalingConfig>,
    /// Where the HTTP ingress routes to it (None: handles only).
    pub route_prefix: Option<String>,
    /// The `Content-Type` of its answers.
    pub content_type: String,
    /// How often the controller checks each replica's health, ms.
    pub health_period_ms: u64,
    /// The version label answers carry in `x-prism-version` (rollouts
    /// replace one version by another).
    pub version: String,
    /// Drift detection on live inputs and predictions (None: off).
    pub drift: Option<DriftSpec>,
    /// A registry version (`NAME@alias`, `NAME@3`) pinned at deploy time:
    /// its checkpoint reaches the model as `checkpoint` in its user config.
    pub registry: Option<String>,
    /// `registry` as the deploying process resolved it (`NAME@3` and its
    /// checkpoint): read as that process's job, so the registry's
    /// namespaces hold, not as the controller's. Taken by the controller
    /// once applied (it is then in `user_config` and `version`), so the
    /// specs it keeps compare as before.
    pub registry_pinned: Option<(String, String)>,
    /// How a new version (a new `version` label with a new model or config)
    /// replaces the running one on a redeploy; None: a rolling update.
    pub rollout: Option<RolloutPolicy>,
}

/// A deployment's declared rollout (`rollout:` in serve.yaml).
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, serde::Deserialize, Debug, Clone, PartialEq,
)]
#[serde(deny_unknown_fields)]
pub struct RolloutPolicy {
    /// `{type: canary, steps, step_s}`, `{type: blue_green, keep_warm_s}`
    /// or `{type: shadow, percent, duration_s, promote}`.
    pub strategy: Strategy,
    /// When it rolls back (default: error rate 1%, p99 500 ms).
    #[serde(default)]
    pub thresholds: Thresholds,
    /// See [`Split::sticky_header`].
    #[serde(default)]
    pub sticky_header: Option<String>,
    /// See [`Split::retry_on_live`] (default true).
    #[serde(default = "yes")]
    pub retry_on_live: bool,
}

fn yes() -> bool {
    true
}

impl RolloutPolicy {
    /// `strategy` with the default thresholds.
    pub fn new(strategy: Strategy) -> RolloutPolicy {
        RolloutPolicy {
            strategy,
            thresholds: Thresholds::default(),
            sticky_header: None,
            retry_on_live: true,
        }
    }
}

/// Where a deployment's drift reference is and how often it is judged.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, serde::Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct DriftSpec {
    /// A reference file ([`crate::drift::Reference::save`]), or a registry
    /// version `NAME@alias` / `NAME@3` (an `@` and no `/`) whose checkpoint
    /// has one next to it (`CHECKPOINT/drift_reference.json` for a
    /// directory, `CHECKPOINT.drift.json` for a file).
    pub reference: String,
    /// Requests per window, in each replica.
    #[serde(default = "default_window")]
    pub window: u32,
    /// A registry `reference`'s file, as the deploying process resolved
    /// it, as its own job (as for `registry`): replicas, which act as the
    /// controller's job, read it and resolve nothing. Not part of what
    /// the deployment is (equality ignores it): a redeploy after the alias
    /// moved is no new version, and a declared rollout stays one.
    #[serde(skip)]
    pub resolved: Option<String>,
    /// Why the deploying process could not resolve a registry `reference`
    /// (the head unreachable, or the model out of this caller's reach
    /// now): a deployment that runs with the same drift
    /// settings keeps the file its replicas watch; otherwise the deploy
    /// fails with this. Not part of what the deployment is.
    #[serde(skip)]
    pub unresolved: Option<String>,
}

impl PartialEq for DriftSpec {
    fn eq(&self, other: &Self) -> bool {
        (&self.reference, self.window) == (&other.reference, other.window)
    }
}

fn default_window() -> u32 {
    500
}

impl DeploymentSpec {
    /// What a caller's router needs.
    pub fn limits(&self) -> Limits {
        Limits {
            max_ongoing: self.max_ongoing_requests.max(1),
            max_queued: self.max_queued_requests,
            timeout: Duration::from_millis(self.request_timeout_ms.max(1)),
            retries: self.retries,
        }
    }

    /// Only the version label, model and user config differ (and the
    /// label does): what a declared rollout replaces.
    pub fn only_version_differs(&self, other: &DeploymentSpec) -> bool {
        let mut a = self.clone();
        a.version = other.version.clone();
        a.model = other.model.clone();
        a.user_config = other.user_config.clone();
        a.rollout = other.rollout.clone();
        a.registry = other.registry.clone();
        a.registry_pinned = other.registry_pinned.clone();
        a.replicas = other.replicas;
        self.version != other.version && a == *other
    }

    /// Only the user config differs: a reconfigure, not a restart.
    pub fn same_but_config(&self, other: &DeploymentSpec) -> bool {
        let mut a = self.clone();
        a.user_config = other.user_config.clone();
        a.replicas = other.replicas;
        a.autoscaling = other.autoscaling.clone();
        a.rollout = other.rollout.clone();
        a == *other
    }

    /// A clear error for a spec that cannot run.
    pub fn validate(&self) -> Result<(), String> {
        let n = &self.name;
        if n.is_empty() {
            return Err("a deployment needs a name".into());
        }
        if n.contains(CHALLENGER_MARK) {
            return Err(format!(
                "deployment {n}: names cannot contain {CHALLENGER_MARK:?} (it marks a rollout's new version)"
            ));
        }
        if serde_json::from_str::<serde_json::Value>(&self.user_config).is_err() {
            return Err(format!("deployment {n}: user_config is not JSON"));
        }
        if let Some(p) = &self.route_prefix {
            if !p.starts_with('/') {
                return Err(format!(
                    "deployment {n}: route_prefix {p:?} must start with '/'"
                ));
            }
        }
        if let Some(a) = &self.autoscaling {
            if a.max_replicas < a.min_replicas || a.max_replicas == 0 {
                return Err(format!(
                    "deployment {n}: autoscaling max_replicas {} must be ≥ min_replicas {} and > 0",
                    a.max_replicas, a.min_replicas
                ));
            }
            if a.target_ongoing_requests <= 0.0 {
                return Err(format!(
                    "deployment {n}: target_ongoing_requests must be > 0"
                ));
            }
        }
        if let Some(r) = &self.rollout {
            r.strategy
                .validate()
                .map_err(|e| format!("deployment {n}: rollout: {e}"))?;
        }
        if self.num_cpus < 0.0 || self.num_gpus < 0.0 {
            return Err(format!("deployment {n}: resources cannot be negative"));
        }
        Ok(())
    }
}

/// An application: deployments deployed (and updated) together.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct AppSpec {
    /// Its name.
    pub name: String,
    /// Its deployments.
    pub deployments: Vec<DeploymentSpec>,
}

/// Where one deployment's requests go.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct RouteEntry {
    /// Its application.
    pub app: String,
    /// The deployment.
    pub spec: DeploymentSpec,
    /// Its replicas that take requests (running and healthy).
    pub replicas: Vec<ActorHandle<Replica>>,
    /// A rollout's traffic split, when one runs.
    pub split: Option<Split>,
}

/// Marks a rollout's challenger deployment: `NAME~VERSION`.
pub const CHALLENGER_MARK: char = '~';

/// How a deployment's requests are shared with a rollout's new version.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct Split {
    /// The challenger deployment (`NAME~VERSION`).
    pub to: String,
    /// Its version label.
    pub version: String,
    /// Percent of requests it answers.
    pub weight: u32,
    /// Percent of requests mirrored to it (answered by the live version).
    pub mirror: u32,
    /// A header whose value picks the version (the same key, the same
    /// version); absent: chosen at random per request.
    pub sticky_header: Option<String>,
    /// A failed answer from the challenger is retried on the live version.
    pub retry_on_live: bool,
}

/// A new version to roll out over a running deployment.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct RolloutSpec {
    /// The running deployment.
    pub deployment: String,
    /// The new version's label.
    pub version: String,
    /// Its registered model (None: the live one's).
    pub model: Option<String>,
    /// Its user config, JSON (None: the live one's).
    pub user_config: Option<String>,
    /// How it takes over, and when it is rolled back.
    pub policy: RolloutPolicy,
    /// A registry version to serve (`NAME@alias`, `NAME@3`), pinned now;
    /// an empty `version` becomes `NAME@N`.
    pub registry: Option<String>,
    /// `registry` as the calling process resolved it (see
    /// [`DeploymentSpec::registry_pinned`]).
    pub registry_pinned: Option<(String, String)>,
}

/// Every deployment's routes, versioned (routers long-poll for a newer one).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Default)]
pub struct RouteTable {
    /// Bumped on every change.
    pub version: u64,
    /// The deployments.
    pub entries: Vec<RouteEntry>,
}
