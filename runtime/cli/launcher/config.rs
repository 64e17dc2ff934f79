//! `cluster.yaml`: its schema (unknown fields are errors) and its checks. A
//! broken file is one error naming the file, line, column and field —
//! `cluster.yaml:6:10: worker_groups[1].max: invalid type: string "ten",
//! expected u32` — and nothing is started.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Names the cluster (and its directory of launcher state).
    pub cluster_name: String,
    /// Where its nodes run.
    pub provider: Provider,
    /// The head node.
    #[serde(default)]
    pub head: HeadConfig,
    /// Groups of worker nodes.
    #[serde(default)]
    pub worker_groups: Vec<WorkerGroup>,
    /// Shell commands run before any node starts (local provider: here).
    #[serde(default)]
    pub setup_commands: Vec<String>,
    /// Local path → path on the nodes, copied before they start.
    #[serde(default)]
    pub file_mounts: BTreeMap<String, String>,
    /// Environment for every node (and so for every worker process).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The autoscaler's settings.
    #[serde(default)]
    pub autoscaler: AutoscalerConfig,
    /// How `prism k8s manifests` runs this cluster on Kubernetes.
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
}

/// The Kubernetes side of the file (`prism k8s manifests`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The namespace every object goes in.
    #[serde(default = "k8s_namespace")]
    pub namespace: String,
    /// An image with `prism` on its PATH (`deploy/kubernetes/Dockerfile`).
    #[serde(default = "k8s_image")]
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    #[serde(default = "k8s_pull_policy")]
    pub image_pull_policy: String,
    /// The head's volume (its `head.db`, so that a restarted head pod
    /// recovers the cluster), e.g. `1Gi`.
    #[serde(default = "k8s_head_storage")]
    pub head_storage: String,
    /// The volume's storage class (default: the cluster's default).
    #[serde(default)]
    pub storage_class: Option<String>,
}

fn k8s_namespace() -> String {
    "prism".into()
}

fn k8s_image() -> String {
    format!("prism:{}", env!("CARGO_PKG_VERSION"))
}

fn k8s_pull_policy() -> String {
    "IfNotPresent".into()
}

fn k8s_head_storage() -> String {
    "1Gi".into()
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            namespace: k8s_namespace(),
            image: k8s_image(),
            image_pull_policy: k8s_pull_policy(),
            head_storage: k8s_head_storage(),
            storage_class: None,
        }
    }
}

/// Where nodes run.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Provider {
    /// Every node a daemon on this machine.
    Local,
    /// Nodes reached over SSH.
    Ssh {
        /// The head's host.
        head_ip: String,
        /// The workers' hosts.
        #[serde(default)]
        worker_ips: Vec<String>,
        /// The login.
        ssh_user: String,
        /// The private key.
        ssh_private_key: PathBuf,
        /// The SSH port (a host may also say `host:port`).
        #[serde(default = "ssh_port")]
        ssh_port: u16,
        /// Where on each machine the binary and the nodes live (default
        /// `prism-<cluster_name>` in the login's home).
        #[serde(default)]
        remote_dir: Option<String>,
    },
    /// The whole cluster as one Slurm batch job (submitted with sbatch;
    /// `PRISM_TEMP_DIR` must be on a file system the job's nodes share).
    Slurm {
        /// `--partition`.
        #[serde(default)]
        partition: Option<String>,
        /// `--time`, e.g. `2:00:00`.
        #[serde(default)]
        time_limit: Option<String>,
        /// `--account`.
        #[serde(default)]
        account: Option<String>,
        /// More `#SBATCH` lines, e.g. `--gres=gpu:8`.
        #[serde(default)]
        sbatch_args: Vec<String>,
    },
}

fn ssh_port() -> u16 {
    22
}

/// What one node offers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeResources {
    /// CPUs (default: all).
    pub num_cpus: Option<f64>,
    /// GPUs (default: detected).
    pub num_gpus: Option<u32>,
    /// Memory: bytes, or with a K/M/G/T suffix.
    pub memory: Option<Bytes>,
    /// Object store size: bytes, or with a suffix.
    pub object_store_memory: Option<Bytes>,
    /// Custom resources.
    #[serde(default)]
    pub custom: BTreeMap<String, f64>,
}

/// A size: a number of bytes, or text with a K/M/G/T suffix.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Bytes {
    /// Bytes.
    Count(u64),
    /// `"16G"`.
    Text(String),
}

impl Bytes {
    /// As `prism start` takes it.
    pub fn arg(&self) -> String {
        match self {
            Bytes::Count(n) => n.to_string(),
            Bytes::Text(t) => t.clone(),
        }
    }
}

/// The head node.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeadConfig {
    /// Its UDP port (0: any free one; Ray's default is 6379).
    #[serde(default)]
    pub port: u16,
    /// Its dashboard's port (default 8265, or any free one if taken).
    pub dashboard_port: Option<u16>,
    /// What it offers to tasks.
    #[serde(default)]
    pub resources: NodeResources,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A group of like worker nodes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerGroup {
    /// Its name (unique).
    pub name: String,
    /// Nodes `up` starts and the autoscaler keeps.
    #[serde(default)]
    pub min: u32,
    /// Most nodes the autoscaler may run.
    pub max: u32,
    /// What each node offers.
    #[serde(default)]
    pub resources: NodeResources,
    /// Each node's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The autoscaler's settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscalerConfig {
    /// Seconds a node may sit idle before it is removed (above `min`).
    #[serde(default = "idle_timeout")]
    pub idle_timeout_s: u64,
    /// How many nodes may start at once, as a fraction of those running (at least one).
    #[serde(default = "upscaling_speed")]
    pub upscaling_speed: f64,
}

fn idle_timeout() -> u64 {
    60
}

fn upscaling_speed() -> f64 {
    1.0
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        AutoscalerConfig {
            idle_timeout_s: idle_timeout(),
            upscaling_speed: upscaling_speed(),
        }
    }
}

/// `cluster.yaml` is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// It cannot be read.
    #[error("{file}: {detail}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        detail: String,
    },
    /// It does not parse, or a field has the wrong type or name.
    #[error("{file}:{line}:{column}: {detail}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The field and what is wrong with it.
        detail: String,
    },
    /// The fields parse but do not make a cluster.
    #[error("{file}: {field}: {detail}")]
    Invalid {
        /// The file.
        file: String,
        /// The field.
        field: String,
        /// What is wrong.
        detail: String,
    },
}

impl ClusterConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: file.clone(),
            detail: e.to_string(),
        })?;
        ClusterConfig::parse(&file, &text)
    }

    /// Parses and checks `text` (from `file`).
    pub fn parse(file: &str, text: &str) -> Result<ClusterConfig, ConfigError> {
        // Only a syntax error can come out of the YAML reader.
        let config: ClusterConfig =
            prism_serve::config::parse_yaml(file, text).map_err(|e| match e {
                prism_serve::ConfigError::Syntax {
                    file,
                    line,
                    column,
                    detail,
                } => ConfigError::Syntax {
                    file,
                    line,
                    column,
                    detail,
                },
                other => ConfigError::Syntax {
                    file: file.to_string(),
                    line: 1,
                    column: 1,
                    detail: other.to_string(),
                },
            })?;
        config.check(file)?;
        Ok(config)
    }

    fn check(&self, file: &str) -> Result<(), ConfigError> {
        let bad = |field: String, detail: String| ConfigError::Invalid {
            file: file.to_string(),
            field,
            detail,
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !name_ok(&self.cluster_name) {
            return Err(bad(
                "cluster_name".into(),
                format!(
                    "{:?}: use letters, digits, '-' and '_' (it names a directory)",
                    self.cluster_name
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, g) in self.worker_groups.iter().enumerate() {
            let field = |f: &str| format!("worker_groups[{i}].{f}");
            if !name_ok(&g.name) {
                return Err(bad(
                    field("name"),
                    format!("{:?}: use letters, digits, '-' and '_'", g.name),
                ));
            }
            if !seen.insert(g.name.as_str()) {
                return Err(bad(field("name"), format!("{:?} names two groups", g.name)));
            }
            if g.min > g.max {
                return Err(bad(
                    field("min"),
                    format!("{} is above max ({})", g.min, g.max),
                ));
            }
            check_resources(&g.resources, &field("resources")).map_err(|(f, d)| bad(f, d))?;
        }
        check_resources(&self.head.resources, "head.resources").map_err(|(f, d)| bad(f, d))?;
        if self.autoscaler.upscaling_speed <= 0.0 {
            return Err(bad(
                "autoscaler.upscaling_speed".into(),
                format!("{} must be above 0", self.autoscaler.upscaling_speed),
            ));
        }
        self.kubernetes.check().map_err(|(f, d)| bad(f, d))?;
        if let Provider::Ssh { worker_ips, .. } = &self.provider {
            let wanted: u32 = self.worker_groups.iter().map(|g| g.min).sum();
            if (worker_ips.len() as u32) < wanted {
                return Err(bad(
                    "provider.worker_ips".into(),
                    format!(
                        "{} hosts for {wanted} workers (the groups' min)",
                        worker_ips.len()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl KubernetesConfig {
    fn check(&self) -> Result<(), (String, String)> {
        let label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        if !label(&self.namespace) {
            return Err((
                "kubernetes.namespace".into(),
                format!(
                    "{:?}: a namespace is lowercase letters, digits and '-' (at most 63)",
                    self.namespace
                ),
            ));
        }
        if !["Always", "IfNotPresent", "Never"].contains(&self.image_pull_policy.as_str()) {
            return Err((
                "kubernetes.image_pull_policy".into(),
                format!(
                    "{:?}: use Always, IfNotPresent or Never",
                    self.image_pull_policy
                ),
            ));
        }
        if self.image.trim().is_empty() {
            return Err(("kubernetes.image".into(), "is empty".into()));
        }
        let q = &self.head_storage;
        let digits = q.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &q[digits.len()..];
        if digits.parse::<u64>().is_err()
            || !["", "Ki", "Mi", "Gi", "Ti", "K", "M", "G", "T"].contains(&unit)
        {
            return Err((
                "kubernetes.head_storage".into(),
                format!("{q:?} is not a size like 1Gi or 500Mi"),
            ));
        }
        Ok(())
    }
}

fn check_resources(r: &NodeResources, field: &str) -> Result<(), (String, String)> {
    if let Some(c) = r.num_cpus {
        if c.is_nan() || c < 0.0 {
            return Err((
                format!("{field}.num_cpus"),
                format!("{c} is not a CPU count"),
            ));
        }
    }
    for (name, b) in [
        ("memory", &r.memory),
        ("object_store_memory", &r.object_store_memory),
    ] {
        if let Some(b) = b {
            crate::start::parse_bytes(&b.arg()).map_err(|e| (format!("{field}.{name}"), e))?;
        }
    }
    for (k, v) in &r.custom {
        if v.is_nan() || *v < 0.0 {
            return Err((
                format!("{field}.custom.{k}"),
                format!("{v} is not an amount"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
