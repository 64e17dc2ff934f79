//! The serve config file (`serve.yaml`): the HTTP ingress and every
//! application's deployments, as Ray Serve's config file holds them. A
//! mistake names its file, line, column and field.
//!
//! ```yaml
//! http: { host: 127.0.0.1, port: 8000 }
//! applications:
//!   - name: digits
//!     deployments:
//!       - name: digits
//!         model: Digits            # the name given to prism_serve::model!
//!         route_prefix: /digits
//!         replicas: 2
//!         num_cpus: 1
//!         max_ongoing_requests: 8
//!         batching: { max_batch_size: 16, batch_wait_ms: 5 }
//!         autoscaling: { min_replicas: 1, max_replicas: 4, target_ongoing_requests: 2 }
//!         user_config: { threshold: 0.5 }
//! ```

use crate::autoscale::AutoscalingConfig;
use crate::spec::{AppSpec, DeploymentSpec};
use serde::Deserialize;

/// A serve config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: {detail}")]
    Read {
        /// The file.
        file: String,
        /// The OS error.
        detail: String,
    },
    /// It is not valid YAML of this shape.
    #[error("{file}:{line}:{column}: {detail}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, with the field's path.
        detail: String,
    },
    /// Well-formed, but it cannot run.
    #[error("{file}: {detail}")]
    Invalid {
        /// The file.
        file: String,
        /// Why.
        detail: String,
    },
}

/// A file's name and text.
pub(crate) fn read(path: &std::path::Path) -> Result<(String, String), ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        file: file.clone(),
        detail: e.to_string(),
    })?;
    Ok((file, text))
}

/// YAML `text` (from `file`) as a `T`; a mistake is named with its line,
/// column and field path (`ConfigError::Syntax`). The workspace's one
/// YAML reader: serve.yaml, alerts.yaml and the launcher's cluster.yaml.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T, ConfigError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner();
        let (line, column) = inner.location().map_or((1, 1), |l| (l.line(), l.column()));
        let mut detail = inner.to_string();
        if let Some(i) = detail.rfind(" at line ") {
            detail.truncate(i);
        }
        // The inner message may name the field (or its parent) already.
        let path = e.path().to_string();
        let parent = path.rsplit_once('.').map_or("", |(p, _)| p);
        let named = detail.starts_with(&path) || (!parent.is_empty() && detail.starts_with(parent));
        if path != "." && !named {
            detail = format!("{path}: {detail}");
        }
        ConfigError::Syntax {
            file: file.to_string(),
            line,
            column,
            detail,
        }
    })
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// The HTTP ingress.
    #[serde(default)]
    pub http: HttpConfig,
    /// The applications.
    pub applications: Vec<AppConfig>,
}

/// Where the ingress listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Interface (default 127.0.0.1).
    #[serde(default = "default_host")]
    pub host: String,
    /// Port (default 8000; 0: any free one).
    #[serde(default = "default_port")]
    pub port: u16,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            host: default_host(),
            port: default_port(),
        }
    }
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    8000
}

/// One application.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Its name.
    pub name: String,
    /// Its deployments.
    pub deployments: Vec<DeploymentConfig>,
}

/// One deployment (every field but `name` and `model` has a default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// Its name.
    pub name: String,
    /// The registered model.
    pub model: String,
    /// HTTP route.
    pub route_prefix: Option<String>,
    /// Replicas (default 1).
    pub replicas: Option<u32>,
    /// CPUs per replica (default 1).
    pub num_cpus: Option<f64>,
    /// GPUs per replica (default 0).
    pub num_gpus: Option<f64>,
    /// Default 8.
    pub max_ongoing_requests: Option<u32>,
    /// Default 64.
    pub max_queued_requests: Option<u32>,
    /// Default 30.
    pub request_timeout_s: Option<f64>,
    /// Default 2.
    pub retries: Option<u32>,
    /// Dynamic batching.
    pub batching: Option<BatchingConfig>,
    /// Autoscaling.
    pub autoscaling: Option<AutoscalingYaml>,
    /// Passed to the model.
    pub user_config: Option<serde_json::Value>,
    /// Default 2.
    pub health_period_s: Option<f64>,
    /// The version label its answers carry (default: none).
    pub version: Option<String>,
    /// Drift detection: `{ reference: FILE or NAME@alias, window: 500 }`.
    pub drift: Option<crate::DriftSpec>,
    /// A registry version to serve: `NAME@alias` or `NAME@3`.
    pub registry: Option<String>,
    /// How a new `version` replaces the running one on a redeploy.
    pub rollout: Option<crate::RolloutPolicy>,
}

/// `batching:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// Requests per batch.
    pub max_batch_size: u32,
    /// How long a batch waits to fill (default 5 ms).
    #[serde(default = "default_wait")]
    pub batch_wait_ms: f64,
}

fn default_wait() -> f64 {
    5.0
}

/// `autoscaling:` (seconds where the spec has ms).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscalingYaml {
    /// Default 1.
    pub min_replicas: Option<u32>,
    /// Required.
    pub max_replicas: u32,
    /// Default 2.
    pub target_ongoing_requests: Option<f64>,
    /// Default 1.
    pub upscale_delay_s: Option<f64>,
    /// Default 5.
    pub downscale_delay_s: Option<f64>,
    /// Default 1.
    pub smoothing: Option<f64>,
}

impl ServeConfig {
    /// Reads and checks `path`.
    pub fn load(path: &std::path::Path) -> Result<ServeConfig, ConfigError> {
        let (file, text) = read(path)?;
        ServeConfig::parse(&file, &text)
    }

    /// Parses and checks `text` (from `file`).
    pub fn parse(file: &str, text: &str) -> Result<ServeConfig, ConfigError> {
        let config: ServeConfig = parse_yaml(file, text)?;
        let invalid = |detail: String| ConfigError::Invalid {
            file: file.to_string(),
            detail,
        };
        let mut names = std::collections::HashSet::new();
        for app in config.apps() {
            for d in &app.deployments {
                d.validate().map_err(invalid)?;
                if !names.insert(d.name.clone()) {
                    return Err(invalid(format!("deployment {} is named twice", d.name)));
                }
            }
        }
        Ok(config)
    }

    /// The applications as specs.
    pub fn apps(&self) -> Vec<AppSpec> {
        self.applications
            .iter()
            .map(|a| AppSpec {
                name: a.name.clone(),
                deployments: a.deployments.iter().map(DeploymentConfig::spec).collect(),
            })
            .collect()
    }
}

fn ms(s: f64) -> u64 {
    (s * 1e3).max(0.0) as u64
}

impl DeploymentConfig {
    /// The spec (the answer's content type comes from the replica).
    pub fn spec(&self) -> DeploymentSpec {
        DeploymentSpec {
            name: self.name.clone(),
            model: self.model.clone(),
            user_config: self
                .user_config
                .clone()
                .unwrap_or(serde_json::Value::Null)
                .to_string(),
            replicas: self.replicas.unwrap_or(1),
            num_cpus: self.num_cpus.unwrap_or(1.0),
            num_gpus: self.num_gpus.unwrap_or(0.0),
            max_ongoing_requests: self.max_ongoing_requests.unwrap_or(8),
            max_queued_requests: self.max_queued_requests.unwrap_or(64),
            request_timeout_ms: ms(self.request_timeout_s.unwrap_or(30.0)),
            retries: self.retries.unwrap_or(2),
            max_batch_size: self
                .batching
                .as_ref()
                .map_or(1, |b| b.max_batch_size.max(1)),
            batch_wait_us: self
                .batching
                .as_ref()
                .map_or(0, |b| (b.batch_wait_ms * 1e3) as u64),
            autoscaling: self.autoscaling.as_ref().map(|a| AutoscalingConfig {
                min_replicas: a.min_replicas.unwrap_or(1),
                max_replicas: a.max_replicas,
                target_ongoing_requests: a.target_ongoing_requests.unwrap_or(2.0),
                upscale_delay_ms: ms(a.upscale_delay_s.unwrap_or(1.0)),
                downscale_delay_ms: ms(a.downscale_delay_s.unwrap_or(5.0)),
                smoothing: a.smoothing.unwrap_or(1.0),
            }),
            route_prefix: self.route_prefix.clone(),
            content_type: String::new(),
            health_period_ms: ms(self.health_period_s.unwrap_or(2.0)),
            version: self.version.clone().unwrap_or_default(),
            drift: self.drift.clone(),
            registry: self.registry.clone(),
            registry_pinned: None,
            rollout: self.rollout.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
http: { port: 0 }
applications:
  - name: digits
    deployments:
      - name: digits
        model: Digits
        route_prefix: /digits
        replicas: 2
        batching: { max_batch_size: 16 }
        autoscaling: { max_replicas: 4 }
        user_config: { threshold: 0.5 }
";

    #[test]
    fn the_shipped_example_parses_and_is_the_guides() {
        let shipped = include_str!("../serve.yaml");
        let c = ServeConfig::parse("serve/serve.yaml", shipped).unwrap();
        let d = &c.apps()[0].deployments[0];
        assert_eq!(
            (d.model.as_str(), d.max_batch_size, d.batch_wait_us),
            ("Digits", 32, 2_000)
        );
        let guide = include_str!("../../docs/src/serving.md");
        let body: String = shipped
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(
            guide.contains(&body),
            "docs/src/serving.md's serve.yaml differs from serve/serve.yaml"
        );
    }

    #[test]
    fn a_full_file_becomes_specs_with_defaults() {
        let c = ServeConfig::parse("serve.yaml", GOOD).unwrap();
        assert_eq!(c.http.host, "127.0.0.1");
        let d = &c.apps()[0].deployments[0];
        assert_eq!(
            (d.replicas, d.max_batch_size, d.batch_wait_us),
            (2, 16, 5_000)
        );
        assert_eq!(d.autoscaling.as_ref().unwrap().min_replicas, 1);
        assert_eq!(d.user_config, r#"{"threshold":0.5}"#);
    }

    #[test]
    fn a_typo_names_its_line_and_field() {
        let bad = GOOD.replace("replicas: 2", "replcas: 2");
        let e = ServeConfig::parse("serve.yaml", &bad)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("serve.yaml:9:"), "{e}");
        assert!(
            e.contains("applications[0].deployments[0]") && e.contains("replcas"),
            "{e}"
        );
    }

    #[test]
    fn a_wrong_type_and_a_bad_value_are_named() {
        let bad = GOOD.replace("replicas: 2", "replicas: two");
        let e = ServeConfig::parse("serve.yaml", &bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("deployments[0].replicas") && e.starts_with("serve.yaml:9:"),
            "{e}"
        );
        let bad = GOOD.replace("route_prefix: /digits", "route_prefix: digits");
        let e = ServeConfig::parse("serve.yaml", &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("must start with '/'"), "{e}");
        let e = ServeConfig::parse("serve.yaml", "applications: [")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("serve.yaml:"), "{e}");
    }

    #[test]
    fn a_declared_rollout_parses_and_a_bad_one_is_named() {
        let with =
            |r: &str| GOOD.replace("replicas: 2", &format!("replicas: 2\n        rollout: {r}"));
        let c = ServeConfig::parse(
            "serve.yaml",
            &with("{strategy: {type: canary, steps: [5, 50, 100], step_s: 60}, thresholds: {max_error_rate: 0.02}}"),
        )
        .unwrap();
        let p = c.apps()[0].deployments[0].rollout.clone().unwrap();
        assert_eq!(
            p.strategy,
            crate::Strategy::Canary {
                steps: vec![5, 50, 100],
                step_s: 60
            }
        );
        assert_eq!(p.thresholds.max_error_rate, 0.02);
        assert_eq!(p.thresholds.max_p99_ms, 500.0, "defaults fill the rest");
        assert!(p.retry_on_live);
        let e = ServeConfig::parse(
            "serve.yaml",
            &with("{strategy: {type: canary, steps: [50, 5], step_s: 1}}"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("rollout: canary steps [50, 5] must rise"), "{e}");
        let e = ServeConfig::parse("serve.yaml", &with("{strategy: {type: linear}}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `linear`"), "{e}");
    }
}
