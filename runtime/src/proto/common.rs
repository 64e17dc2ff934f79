//! Types shared by several roles.

use crate::ids::NodeId;
use prism_scheduler::{Quantity, ResourceSet};
use rkyv::{Archive, Deserialize, Serialize};

/// One named resource amount in fixed-point units (1/10,000).
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct ResourceEntry {
    /// `CPU`, `GPU`, `memory`, or a custom name.
    pub name: String,
    /// Amount in 1/10,000 units.
    pub raw: i64,
}

/// A resource set on the wire.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Resources(pub Vec<ResourceEntry>);

impl From<&ResourceSet> for Resources {
    fn from(set: &ResourceSet) -> Self {
        Resources(
            set.iter()
                .map(|(name, q)| ResourceEntry {
                    name: name.to_string(),
                    raw: q.raw(),
                })
                .collect(),
        )
    }
}

impl Resources {
    /// Back to a resource set; negative amounts (a confused peer) become zero.
    pub fn to_set(&self) -> ResourceSet {
        self.0
            .iter()
            .map(|e| (e.name.as_str(), Quantity::from_raw(e.raw.max(0))))
            .collect()
    }
}

/// One GPU as the raylet detected it.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct GpuInfo {
    /// Device index.
    pub index: u32,
    /// Device name from the driver, or `simulated` for `--num-gpus` overrides.
    pub name: String,
    /// Device memory in bytes (0 when unknown).
    pub memory_bytes: u64,
}

/// Liveness as the head's failure detector sees it.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Heartbeats arrive on time.
    Alive,
    /// Some heartbeats were missed: slow, not yet dead.
    Suspect,
    /// Declared dead; it must register again as a new node.
    Dead,
}

/// One node in a status report.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NodeStatus {
    /// The node.
    pub node_id: NodeId,
    /// The node's stable name (host and session), shared by its incarnations.
    pub name: String,
    /// Its QUIC address.
    pub address: String,
    /// Alive, suspect or dead.
    pub state: NodeState,
    /// Why it died, when dead.
    pub death_reason: Option<String>,
    /// 1 for the first registration under this name, then 2, 3, …
    pub incarnation: u64,
    /// Whether this raylet runs beside the head.
    pub is_head: bool,
    /// Everything it has.
    pub total: Resources,
    /// What is free.
    pub available: Resources,
    /// What worker leases hold: in use, but given back for a placement
    /// group's bundles (L-3).
    pub leased: Resources,
    /// Its labels.
    pub labels: Vec<(String, String)>,
    /// Its GPUs.
    pub gpus: Vec<GpuInfo>,
    /// Milliseconds since its last heartbeat.
    pub last_heartbeat_ms_ago: u64,
    /// Raylet process id, for operators.
    pub pid: u32,
    /// Being drained: it takes no new work; calls to what runs there
    /// still work.
    pub draining: Option<DrainStatus>,
}

/// A drain under way, in a status report.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DrainStatus {
    /// Why.
    pub reason: String,
    /// Milliseconds left before it leaves anyway.
    pub ms_left: u64,
    /// Its raylet has stopped taking new work (it has heard of the drain).
    pub stopped_new_work: bool,
}

impl NodeStatus {
    /// Its resources as a scheduler sees them: the total, with what is in
    /// use taken out, and its labels.
    pub fn to_resources(&self) -> prism_scheduler::NodeResources {
        self.with_used(self.used())
    }

    /// Its resources as a placement group's planner sees them: as
    /// [`Self::to_resources`], with what leases hold counted free (a bundle
    /// that needs it has the leases revoked, L-3).
    pub fn to_bundle_resources(&self) -> prism_scheduler::NodeResources {
        let mut used = self.used();
        for (name, leased) in self.leased.to_set().iter() {
            let u = used.get(name);
            used.set(name, u - leased.min(u));
        }
        self.with_used(used)
    }

    fn used(&self) -> prism_scheduler::ResourceSet {
        let mut used = self.total.to_set();
        used.subtract(&self.available.to_set());
        used
    }

    fn with_used(&self, used: prism_scheduler::ResourceSet) -> prism_scheduler::NodeResources {
        let mut res = prism_scheduler::NodeResources::new(self.total.to_set());
        let _ = res.allocate(&used);
        res.with_labels(self.labels.iter().cloned().collect())
    }
}

/// Work a raylet cannot run yet (queued), or that no node can ever run.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Demand {
    /// The node reporting it.
    pub node_id: NodeId,
    /// The resource shape asked for.
    pub shape: Resources,
    /// How many tasks.
    pub count: u32,
    /// For infeasible work: what is missing (these tasks failed with
    /// `Infeasible`; the count is since the raylet started).
    pub infeasible: Option<String>,
}

/// The whole cluster in a status report.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ClusterStatus {
    /// The head's cluster id.
    pub cluster_id: crate::ids::ClusterId,
    /// The head's address.
    pub head_address: String,
    /// Every node the head knows, live or dead.
    pub nodes: Vec<NodeStatus>,
    /// Pending and infeasible demand reported by live nodes.
    pub demand: Vec<Demand>,
    /// Jobs that ended in the last minutes: raylets stop their workers.
    pub ended_jobs: Vec<crate::ids::JobId>,
}

/// The nodes that changed since a raylet last asked (`GetStatusSince`):
/// what a raylet needs of the cluster, at a cost to the head in proportion
/// to the changes rather than to the cluster.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StatusDelta {
    /// The head's cluster id.
    pub cluster_id: crate::ids::ClusterId,
    /// The head's address.
    pub head_address: String,
    /// The head process's run of versions (a restarted head starts a new
    /// one, and answers an old one with every node).
    pub epoch: u64,
    /// The newest change included; ask again from here.
    pub version: u64,
    /// `nodes` is every node (replace the view) rather than the changes.
    pub full: bool,
    /// Nodes added or changed since (their heartbeat ages and drain
    /// deadlines as of this answer; draining nodes come in every answer).
    pub nodes: Vec<NodeStatus>,
    /// Nodes the head forgot since (dead ones past its memory).
    pub gone: Vec<NodeId>,
    /// Jobs that ended in the last minutes: raylets stop their workers.
    pub ended_jobs: Vec<crate::ids::JobId>,
}

/// Where an object may be: only on nodes whose label `label` has one of
/// the `allowed` values (`region in [in-south, in-west]`). The head holds
/// it with the object's locations and refuses to name a copy to, or record
/// a copy on, any other node.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Debug,
    Clone,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Residency {
    /// The node label that names a place (`region`).
    pub label: String,
    /// Its values the object may live at.
    pub allowed: Vec<String>,
}

impl Residency {
    /// Only where `label` is one of `allowed`.
    pub fn new(label: &str, allowed: &[&str]) -> Residency {
        Residency {
            label: label.into(),
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Whether a node with these labels may hold the object.
    pub fn permits(&self, labels: &[(String, String)]) -> bool {
        labels
            .iter()
            .any(|(k, v)| *k == self.label && self.allowed.contains(v))
    }

    /// Whether `object` may be put under this rule on `node`, which has
    /// `labels` (OD-3: the node itself must be inside the rule); else why
    /// not. The raylet grants claims with it and the head checks them.
    pub fn check_put(
        &self,
        object: impl std::fmt::Display,
        node: impl std::fmt::Display,
        labels: &[(String, String)],
    ) -> Result<(), String> {
        if self.label.is_empty() || self.allowed.is_empty() {
            return Err(format!("the residency rule {self} names no place"));
        }
        if !self.permits(labels) {
            return Err(format!(
                "cannot put object {object} with the residency rule {self} on node {node}, which has {}",
                self.place_of(labels)
            ));
        }
        Ok(())
    }

    /// The label selector of the nodes inside the rule (`region=a|b`).
    pub fn selector(&self) -> String {
        format!("{}={}", self.label, self.allowed.join("|"))
    }

    /// The node's value of the label, in words (`region=eu-west`, or `no
    /// region label`).
    pub fn place_of(&self, labels: &[(String, String)]) -> String {
        match labels.iter().find(|(k, _)| *k == self.label) {
            Some((k, v)) => format!("{k}={v}"),
            None => format!("no {} label", self.label),
        }
    }
}

impl std::fmt::Display for Residency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in [{}]", self.label, self.allowed.join(", "))
    }
}

/// What kind of peer is speaking.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum PeerRole {
    /// A raylet joining or running.
    Raylet,
    /// The CLI or a driver.
    Client,
    /// A client with the join token that acts only as a viewer of these
    /// namespaces (`*`: all): it reads state and logs there and may change
    /// nothing (the dashboard's read-only token reads the head so).
    Viewer {
        /// The namespaces it reads.
        namespaces: Vec<String>,
    },
}
