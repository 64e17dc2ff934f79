//! Rolling a new version out from a driver: [`rollout`] starts it,
//! [`wait_rollout`] waits for its end, [`rollback`] stops it, [`history`]
//! lists every step; [`set_alert_rules`] and [`alerts`] manage alerting.

use crate::client::controller;
use crate::rollout::{Strategy, Thresholds};
use crate::rollouts::HistoryEntry;
use crate::spec::{RolloutPolicy, RolloutSpec};
use crate::ServeError;
use std::time::{Duration, Instant};

impl RolloutSpec {
    /// Version `version` of `deployment`'s model (same model and config
    /// until [`RolloutSpec::model`] / [`RolloutSpec::user_config`] say
    /// otherwise), by `strategy`, with the default thresholds (error rate
    /// 1%, p99 500 ms, over 10 s windows); a challenger's failed answer is
    /// retried on the live version.
    pub fn new(deployment: &str, version: &str, strategy: Strategy) -> RolloutSpec {
        RolloutSpec {
            deployment: deployment.to_string(),
            version: version.to_string(),
            model: None,
            user_config: None,
            policy: RolloutPolicy::new(strategy),
            registry: None,
            registry_pinned: None,
        }
    }
    /// Serve a registry version (`NAME@alias` or `NAME@3`): pinned when
    /// the rollout starts; its checkpoint reaches the model as `checkpoint`
    /// in the user config; an empty version label becomes `NAME@N`.
    pub fn registry(mut self, spec: &str) -> Self {
        self.registry = Some(spec.to_string());
        self
    }
    /// Another registered model.
    pub fn model(mut self, name: &str) -> Self {
        self.model = Some(name.to_string());
        self
    }
    /// Another user config.
    pub fn user_config(mut self, config: serde_json::Value) -> Self {
        self.user_config = Some(config.to_string());
        self
    }
    /// When to roll back.
    pub fn thresholds(mut self, t: Thresholds) -> Self {
        self.policy.thresholds = t;
        self
    }
    /// Keep callers on one version by this header's value.
    pub fn sticky_header(mut self, header: &str) -> Self {
        self.policy.sticky_header = Some(header.to_string());
        self
    }
    /// Whether a challenger's failure is retried on the live version
    /// (default yes: clients do not pay for a broken canary).
    pub fn retry_on_live(mut self, yes: bool) -> Self {
        self.policy.retry_on_live = yes;
        self
    }
}

/// Starts a rollout; returns once its challenger is starting.
pub fn rollout(mut spec: RolloutSpec) -> Result<(), ServeError> {
    if let Some(r) = &spec.registry {
        let pinned = crate::registry::resolve(r).map_err(ServeError::Registry)?;
        spec.registry_pinned = Some(pinned);
    }
    controller()?
        .rollout(spec)?
        .get_timeout(Duration::from_secs(30))?
        .map_err(ServeError::Controller)
}

/// Rolls `deployment`'s rollout back now.
pub fn rollback(deployment: &str) -> Result<(), ServeError> {
    controller()?
        .rollback(deployment.to_string(), prism::models::who())?
        .get_timeout(Duration::from_secs(30))?
        .map_err(ServeError::Controller)
}

/// Replaces the serve controller's alert rules (see [`mod@crate::alerts`]).
pub fn set_alert_rules(rules: crate::alerts::Rules) -> Result<(), ServeError> {
    controller()?
        .set_alert_rules(rules)?
        .get_timeout(Duration::from_secs(30))?
        .map_err(ServeError::Controller)
}

/// The alert rules, what fires now and every notice sent (JSON).
pub fn alerts() -> Result<serde_json::Value, ServeError> {
    let text = controller()?
        .alerts()?
        .get_timeout(Duration::from_secs(30))?;
    serde_json::from_str(&text).map_err(|e| ServeError::Controller(e.to_string()))
}

/// Every rollout step of `deployment` (`""`: of every deployment).
pub fn history(deployment: &str) -> Result<Vec<HistoryEntry>, ServeError> {
    let text = controller()?
        .history(deployment.to_string())?
        .get_timeout(Duration::from_secs(30))?;
    serde_json::from_str(&text).map_err(|e| ServeError::Controller(e.to_string()))
}

/// Waits (at most `timeout`) for the rollout of `deployment` started last
/// to end; returns its last entry (promoted, rolled back or ended).
pub fn wait_rollout(deployment: &str, timeout: Duration) -> Result<HistoryEntry, ServeError> {
    let deadline = Instant::now() + timeout;
    loop {
        let h = history(deployment)?;
        let last_start = h.iter().rposition(|e| e.event == "started");
        if let Some(end) = last_start.and_then(|i| {
            h[i..]
                .iter()
                .find(|e| matches!(e.event.as_str(), "promoted" | "rolled back" | "ended"))
        }) {
            return Ok(end.clone());
        }
        if Instant::now() >= deadline {
            return Err(ServeError::Controller(format!(
                "the rollout of {deployment} did not end within {timeout:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
