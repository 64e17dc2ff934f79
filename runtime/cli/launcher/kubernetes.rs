//! `prism k8s manifests cluster.yaml`: the same cluster on Kubernetes (pure:
//! the file in, YAML out). The head is a one-replica Deployment (Recreate)
//! with a Service (QUIC on UDP, the dashboard on TCP) and a volume for its
//! `head.db`, so that a head pod that dies is recovered by the next one;
//! each worker group is a Deployment of `min` replicas. The cluster's CA
//! and join token are a Secret made ahead by `prism k8s secret` (never in
//! these manifests): the head mounts it (`--identity`), workers read the
//! token from the environment. Nodes are named after their pods; readiness
//! is `prism status --node <pod>`; a worker pod that is stopped drains its
//! node first (`prism drain` in `preStop`).

use super::config::{Bytes, ClusterConfig, NodeResources};
use super::plan;
use serde_json::{json, Value};

/// Where the Secret is mounted in the head's container.
const IDENTITY_DIR: &str = "/etc/prism/identity";
/// The session directories (the head's on its volume).
const STATE_DIR: &str = "/var/lib/prism";
/// The head's port when the file says 0 (a Service needs a fixed one).
const DEFAULT_PORT: u16 = 6379;
/// Seconds a stopping worker pod has: `prism drain`'s deadline plus its
/// node's leaving.
const WORKER_GRACE_S: u64 = 45;
const DRAIN_DEADLINE: &str = "30s";

/// `name` as a Kubernetes object name: lowercase, `_` as `-`.
fn dns(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// The objects' names, from the cluster's.
pub struct Names {
    /// The cluster, as Kubernetes spells it.
    pub cluster: String,
    /// The head's Deployment and Service.
    pub head: String,
    /// The Secret with the CA and token.
    pub secret: String,
}

impl Names {
    /// The names for `c`.
    pub fn of(c: &ClusterConfig) -> Names {
        let cluster = dns(&c.cluster_name);
        Names {
            head: format!("{cluster}-head"),
            secret: format!("{cluster}-identity"),
            cluster,
        }
    }
}

fn labels(n: &Names, component: &str, group: Option<&str>) -> Value {
    let mut l = json!({
        "app.kubernetes.io/name": "prism",
        "app.kubernetes.io/instance": n.cluster,
        "app.kubernetes.io/component": component,
    });
    if let Some(g) = group {
        l["prism.io/group"] = json!(dns(g));
    }
    l
}

fn metadata(
    c: &ClusterConfig,
    n: &Names,
    name: &str,
    component: &str,
    group: Option<&str>,
) -> Value {
    json!({
        "name": name,
        "namespace": c.kubernetes.namespace,
        "labels": labels(n, component, group),
    })
}

/// `2G` (Prism's binary units) as a Kubernetes quantity (`2Gi`).
fn quantity(bytes: u64) -> String {
    for (shift, unit) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

fn bytes(b: &Option<Bytes>) -> u64 {
    b.as_ref()
        .and_then(|b| crate::start::parse_bytes(&b.arg()).ok())
        .unwrap_or(0)
}

/// Requests equal to limits (the Guaranteed class: a node's resources are
/// what Prism offers its tasks): CPUs, memory plus the object store (its
/// shared memory is charged to the pod), GPUs as `nvidia.com/gpu`.
fn container_resources(r: &NodeResources) -> Value {
    let mut set = serde_json::Map::new();
    if let Some(cpus) = r.num_cpus {
        set.insert(
            "cpu".into(),
            json!(format!("{}m", (cpus * 1000.0).round() as u64)),
        );
    }
    let memory = bytes(&r.memory) + bytes(&r.object_store_memory);
    if r.memory.is_some() {
        set.insert("memory".into(), json!(quantity(memory)));
    }
    let mut limits = set.clone();
    if let Some(g) = r.num_gpus.filter(|g| *g > 0) {
        limits.insert("nvidia.com/gpu".into(), json!(g.to_string()));
    }
    if limits.is_empty() {
        return json!({});
    }
    json!({ "requests": set, "limits": limits })
}

fn env_var(name: &str, value: &str) -> Value {
    json!({ "name": name, "value": value })
}

fn field_env(name: &str, path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } })
}

/// The environment every node's container has: its pod's IP and name, the
/// join token from the Secret, and the file's `env`.
fn env(c: &ClusterConfig, n: &Names, extra: Vec<Value>) -> Value {
    let mut out = vec![
        field_env("POD_IP", "status.podIP"),
        field_env("POD_NAME", "metadata.name"),
        json!({ "name": "PRISM_TOKEN", "valueFrom": { "secretKeyRef": { "name": n.secret, "key": "token" } } }),
        env_var("PRISM_TEMP_DIR", STATE_DIR),
    ];
    out.extend(extra);
    out.extend(c.env.iter().map(|(k, v)| env_var(k, v)));
    Value::Array(out)
}

fn probe(command: &str, failures: u32) -> Value {
    json!({
        "exec": { "command": ["sh", "-c", command] },
        "periodSeconds": 5,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    })
}

/// The head's port and the dashboard's.
pub fn ports(c: &ClusterConfig) -> (u16, u16) {
    let port = if c.head.port == 0 {
        DEFAULT_PORT
    } else {
        c.head.port
    };
    (
        port,
        c.head
            .dashboard_port
            .unwrap_or(crate::dashboard::DEFAULT_PORT),
    )
}

/// The head's container arguments (`prism start …`).
pub fn head_args(c: &ClusterConfig) -> Vec<String> {
    let (port, dashboard) = ports(c);
    let mut args: Vec<String> = ["start", "--head", "--block"].map(String::from).to_vec();
    plan::resource_args(&c.head.resources, &mut args);
    plan::label_args(&c.head.labels, &mut args);
    args.extend([
        "--port".to_string(),
        port.to_string(),
        "--dashboard-port".into(),
        dashboard.to_string(),
        "--dashboard-host".into(),
        "0.0.0.0".into(),
        "--identity".into(),
        IDENTITY_DIR.into(),
        // A head pod stopped (evicted, rolled) is replaced by one that
        // recovers the cluster, as is one that died.
        "--recover-after-stop".into(),
    ]);
    args.extend(pod_args());
    args
}

fn pod_args() -> Vec<String> {
    [
        "--node-ip-address",
        "$(POD_IP)",
        "--node-name",
        "$(POD_NAME)",
    ]
    .map(String::from)
    .to_vec()
}

/// A worker group's container arguments.
pub fn worker_args(c: &ClusterConfig, group: &str) -> Vec<String> {
    let mut args: Vec<String> = ["start", "--block"].map(String::from).to_vec();
    args.extend(
        plan::group_spec(c, group)
            .map(|s| s.args)
            .unwrap_or_default(),
    );
    args.extend(pod_args());
    args
}

/// The head's address inside the cluster (the Service's DNS name).
pub fn head_address(c: &ClusterConfig) -> String {
    let n = Names::of(c);
    format!(
        "{}.{}.svc.cluster.local:{}",
        n.head,
        c.kubernetes.namespace,
        ports(c).0
    )
}

fn head_objects(c: &ClusterConfig, n: &Names) -> Vec<Value> {
    let (port, dashboard) = ports(c);
    let k = &c.kubernetes;
    let select = labels(n, "head", None);
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(c, n, &n.head, "head", None),
        "spec": {
            "selector": select,
            "ports": [
                { "name": "prism", "port": port, "targetPort": port, "protocol": "UDP" },
                { "name": "dashboard", "port": dashboard, "targetPort": dashboard, "protocol": "TCP" },
            ],
        },
    });
    let claim = format!("{}-state", n.head);
    let mut claim_spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": { "requests": { "storage": k.head_storage } },
    });
    if let Some(class) = &k.storage_class {
        claim_spec["storageClassName"] = json!(class);
    }
    let pvc = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(c, n, &claim, "head", None),
        "spec": claim_spec,
    });
    let ready = format!("prism status --address \"$POD_IP:{port}\" --node \"$POD_NAME\"");
    let container = json!({
        "name": "head",
        "image": k.image,
        "imagePullPolicy": k.image_pull_policy,
        "command": ["prism"],
        "args": head_args(c),
        "env": env(c, n, vec![]),
        "ports": [
            { "name": "prism", "containerPort": port, "protocol": "UDP" },
            { "name": "dashboard", "containerPort": dashboard, "protocol": "TCP" },
        ],
        "readinessProbe": probe(&ready, 3),
        "livenessProbe": probe(&ready, 12),
        "resources": container_resources(&c.head.resources),
        "volumeMounts": [
            { "name": "identity", "mountPath": IDENTITY_DIR, "readOnly": true },
            { "name": "state", "mountPath": STATE_DIR },
        ],
    });
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(c, n, &n.head, "head", None),
        "spec": {
            "replicas": 1,
            // Never two heads on one head.db.
            "strategy": { "type": "Recreate" },
            "selector": { "matchLabels": select },
            "template": {
                "metadata": { "labels": select },
                "spec": {
                    "containers": [container],
                    "volumes": [
                        { "name": "identity", "secret": { "secretName": n.secret, "defaultMode": 0o400 } },
                        { "name": "state", "persistentVolumeClaim": { "claimName": claim } },
                    ],
                },
            },
        },
    });
    vec![service, pvc, deployment]
}

fn worker_deployment(c: &ClusterConfig, n: &Names, group: &super::config::WorkerGroup) -> Value {
    let name = format!("{}-worker-{}", n.cluster, dns(&group.name));
    let select = labels(n, "worker", Some(&group.name));
    let drain = format!(
        "prism drain \"$POD_NAME\" --reason \"pod $POD_NAME is stopping\" --deadline {DRAIN_DEADLINE}"
    );
    let container = json!({
        "name": "raylet",
        "image": c.kubernetes.image,
        "imagePullPolicy": c.kubernetes.image_pull_policy,
        "command": ["prism"],
        "args": worker_args(c, &group.name),
        "env": env(c, n, vec![env_var("PRISM_ADDRESS", &head_address(c))]),
        "readinessProbe": probe("prism status --node \"$POD_NAME\"", 3),
        "lifecycle": { "preStop": { "exec": { "command": ["sh", "-c", drain] } } },
        "resources": container_resources(&group.resources),
        "volumeMounts": [{ "name": "state", "mountPath": STATE_DIR }],
    });
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(c, n, &name, "worker", Some(&group.name)),
        "spec": {
            "replicas": group.min,
            "selector": { "matchLabels": select },
            "template": {
                "metadata": { "labels": select },
                "spec": {
                    "terminationGracePeriodSeconds": WORKER_GRACE_S,
                    "containers": [container],
                    "volumes": [{ "name": "state", "emptyDir": {} }],
                },
            },
        },
    })
}

/// Every object, in the order `kubectl apply` should see them.
pub fn objects(c: &ClusterConfig) -> Vec<Value> {
    let n = Names::of(c);
    let namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": c.kubernetes.namespace },
    });
    let mut out = vec![namespace];
    out.extend(head_objects(c, &n));
    out.extend(c.worker_groups.iter().map(|g| worker_deployment(c, &n, g)));
    out
}

/// Objects as one multi-document YAML file.
pub fn to_yaml(header: &str, objects: &[Value]) -> anyhow::Result<String> {
    let mut out = String::from(header);
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(o)?);
    }
    Ok(out)
}

/// The manifests for `c`, read from `file`.
pub fn manifests(c: &ClusterConfig, file: &str) -> anyhow::Result<String> {
    let n = Names::of(c);
    let header = format!(
        "# Written by `prism k8s manifests {file}`: change that file and run it again.\n\
         # First the cluster's CA and join token, made once and kept out of this file:\n\
         #   prism k8s secret {file} | kubectl apply -f -\n\
         # then:  kubectl apply -f <this file>\n\
         # The head: Deployment + Service {head} (QUIC on UDP {port}, dashboard on TCP {dash}),\n\
         # its head.db on the volume {head}-state; workers reach it at {addr}.\n",
        head = n.head,
        port = ports(c).0,
        dash = ports(c).1,
        addr = head_address(c),
    );
    to_yaml(&header, &objects(c))
}

/// The Secret with a new cluster identity: `ca.pem`, `ca.key`, `token`.
pub fn secret(c: &ClusterConfig, id: &prism::head::identity::ClusterIdentity) -> Value {
    use prism::head::identity::{CA_CERT_FILE, CA_KEY_FILE, TOKEN_FILE};
    let n = Names::of(c);
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata(c, &n, &n.secret, "identity", None),
        "stringData": {
            CA_CERT_FILE: id.ca_cert_pem,
            CA_KEY_FILE: id.ca_key_pem,
            TOKEN_FILE: id.token.to_string(),
        },
    })
}

#[cfg(test)]
mod tests;
