//! What of the head survives it: one durable row per node, actor,
//! placement group, job and object location, written before the reply to
//! the request that changed it (DH-1). The core says which rows changed
//! ([`super::core::HeadCore::take_changes`]); a [`DurableStore`] writes them
//! (`store_sqlite.rs`, behind the `durable` feature: the `prism` CLI's head
//! has it, an embedded cluster does not need it); a recovered head rebuilds
//! its tables from a [`Snapshot`] ([`super::core::HeadCore::restore`]).
//!
//! Invariants:
//!
//! - **DH-1** a change is in the store (written to the database file, so it
//!   survives `kill -9` of the head) before any reply or effect that follows
//!   from it leaves the head;
//! - **DH-2** a recovered head holds exactly the rows of the last committed
//!   batch: the same node ids, actors with their names and restart counts,
//!   created placement groups with their bundles' nodes, jobs with their
//!   states, object locations.

use crate::ids::{JobId, NodeId, PlacementGroupId};
use crate::proto::codec::{self, CodecError};
use crate::proto::head::{ActorInfo, JobInfo, RegisterNode};
use crate::proto::models::ModelInfo;
use crate::proto::placement::PgInfo;
use crate::proto::runs::{RunInfo, RunPoint};
use crate::proto::task::PeerSubmit;
use prism_objectstore::ObjectId;
use rkyv::{Archive, Deserialize, Serialize};

/// The durable row of a node.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NodeRow {
    /// Its id.
    pub id: NodeId,
    /// Its registration.
    pub reg: RegisterNode,
    /// Its incarnation under its name.
    pub incarnation: u64,
    /// Why it died, if it did.
    pub dead: Option<String>,
    /// The certificate it registered with (SHA-256).
    pub cert: Option<[u8; 32]>,
}

/// The durable row of an actor: what the head shows, and what recreates it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ActorRow {
    /// Its table row.
    pub info: ActorInfo,
    /// Its creation, if it may restart on another node.
    pub create: Option<PeerSubmit>,
}

/// The durable row of an object's locations.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ObjectRow {
    /// The object.
    pub id: ObjectId,
    /// Its size.
    pub size: u64,
    /// Nodes holding a sealed copy.
    pub nodes: Vec<NodeId>,
    /// Where it may be (OD-3).
    pub residency: Option<crate::proto::common::Residency>,
}

/// One durable row of any table.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // rows are written once per change, never held in bulk
pub enum Row {
    /// A node.
    Node(NodeRow),
    /// An actor.
    Actor(ActorRow),
    /// A placement group.
    Group(PgInfo),
    /// A job.
    Job(JobInfo),
    /// An object's locations.
    Object(ObjectRow),
    /// A training run (its points are appended apart: [`Change::RunPoints`]).
    Run(RunInfo),
    /// A registered model: its versions, aliases and history.
    Model(ModelInfo),
    /// A user (their token only as a hash).
    User(super::access::users::UserRow),
    /// A custom role.
    Role(crate::proto::access::RoleInfo),
    /// A namespace's quota, job limit and weight.
    Quota(crate::proto::queue::NamespaceQuota),
    /// What starts a submitted job that waits or runs (again).
    Submission(JobId, crate::proto::head::JobSubmission),
    /// A namespace whose files are sealed at rest with its own key.
    SealedNamespace(String),
}

/// Which table a row belongs to (its number in the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Nodes.
    Node = 1,
    /// Actors.
    Actor = 2,
    /// Placement groups.
    Group = 3,
    /// Jobs.
    Job = 4,
    /// Object locations.
    Object = 5,
    /// Training runs.
    Run = 6,
    /// Registered models.
    Model = 7,
    /// Users.
    User = 8,
    /// Custom roles.
    Role = 9,
    /// Namespaces' quotas.
    Quota = 10,
    /// Submitted jobs' submissions.
    Submission = 11,
    /// Namespaces sealed at rest.
    SealedNamespace = 12,
}

/// The key of sealed namespace `ns`'s row.
pub fn sealed_key(ns: &str) -> [u8; 16] {
    run_key(&format!("sealed:{ns}"))
}

/// The key of namespace `ns`'s model `name` (MR-5).
pub fn model_key(ns: &str, name: &str) -> [u8; 16] {
    run_key(&format!("model:{ns}/{name}"))
}

/// The key model `name` was stored under while names were one across the
/// cluster (never a [`model_key`]: names and namespaces hold no `/`).
pub fn legacy_model_key(name: &str) -> [u8; 16] {
    run_key(&format!("model:{name}"))
}

/// The 16-byte key of run `run_id` (the start of its SHA-256).
pub fn run_key(run_id: &str) -> [u8; 16] {
    let d = ring::digest::digest(&ring::digest::SHA256, run_id.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d.as_ref()[..16]);
    k
}

impl Row {
    /// Its table and key.
    pub fn key(&self) -> (Table, [u8; 16]) {
        match self {
            Row::Node(n) => (Table::Node, n.id.0),
            Row::Actor(a) => (Table::Actor, a.info.actor_id.0),
            Row::Group(g) => (Table::Group, g.pg.0),
            Row::Job(j) => (Table::Job, j.job_id.0),
            Row::Object(o) => (Table::Object, o.id.0),
            Row::Run(r) => (Table::Run, run_key(&r.run_id)),
            Row::Model(m) => (Table::Model, model_key(&m.namespace, &m.name)),
            Row::User(u) => (Table::User, run_key(&format!("user:{}", u.info.name))),
            Row::Role(r) => (Table::Role, run_key(&format!("role:{}", r.name))),
            Row::Quota(q) => (Table::Quota, run_key(&format!("quota:{}", q.namespace))),
            Row::Submission(id, _) => (Table::Submission, id.0),
            Row::SealedNamespace(ns) => (Table::SealedNamespace, sealed_key(ns)),
        }
    }

    /// Its stored bytes (a codec frame: versioned and validated on load).
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        codec::encode(self)
    }

    /// A row from its stored bytes.
    pub fn decode(bytes: &[u8]) -> Result<Row, CodecError> {
        codec::decode_frame(bytes, usize::MAX >> 1)
    }
}

/// A change to the durable state.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // a batch holds a few changes at a time
pub enum Change {
    /// Insert or replace a row.
    Put(Row),
    /// Forget a row.
    Delete(Table, [u8; 16]),
    /// Append a run's new points (a run's row is a [`Row::Run`]; deleting
    /// it deletes its points).
    RunPoints(String, Vec<RunPoint>),
    /// Append an entry to the audit trail (kept apart from the rows: a
    /// fresh cluster in the same database continues it, AU-3).
    Audit(crate::proto::access::AuditEntry),
}

impl Change {
    /// A deletion of a node's row.
    pub fn node_gone(id: NodeId) -> Change {
        Change::Delete(Table::Node, id.0)
    }
    /// A deletion of a group's row.
    pub fn group_gone(pg: PlacementGroupId) -> Change {
        Change::Delete(Table::Group, pg.0)
    }
    /// A deletion of a job's row.
    pub fn job_gone(id: JobId) -> Change {
        Change::Delete(Table::Job, id.0)
    }
    /// A deletion of an object's row.
    pub fn object_gone(id: ObjectId) -> Change {
        Change::Delete(Table::Object, id.0)
    }
}

/// Everything a recovered head starts from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Nodes.
    pub nodes: Vec<NodeRow>,
    /// Actors.
    pub actors: Vec<ActorRow>,
    /// Placement groups.
    pub groups: Vec<PgInfo>,
    /// Jobs.
    pub jobs: Vec<JobInfo>,
    /// Object locations.
    pub objects: Vec<ObjectRow>,
    /// Training runs.
    pub runs: Vec<RunInfo>,
    /// Their points: (run, point), in step order per run.
    pub run_points: Vec<(String, RunPoint)>,
    /// Registered models.
    pub models: Vec<ModelInfo>,
    /// Users.
    pub users: Vec<super::access::users::UserRow>,
    /// Custom roles.
    pub roles: Vec<crate::proto::access::RoleInfo>,
    /// Namespaces' quotas.
    pub quotas: Vec<crate::proto::queue::NamespaceQuota>,
    /// Submitted jobs' submissions.
    pub submissions: Vec<(JobId, crate::proto::head::JobSubmission)>,
    /// Namespaces sealed at rest.
    pub sealed: Vec<String>,
}

impl Snapshot {
    /// Sorts rows into their tables.
    pub fn from_rows(rows: impl IntoIterator<Item = Row>) -> Snapshot {
        let mut s = Snapshot::default();
        for r in rows {
            match r {
                Row::Node(n) => s.nodes.push(n),
                Row::Actor(a) => s.actors.push(a),
                Row::Group(g) => s.groups.push(g),
                Row::Job(j) => s.jobs.push(j),
                Row::Object(o) => s.objects.push(o),
                Row::Run(r) => s.runs.push(r),
                Row::Model(m) => s.models.push(m),
                Row::User(u) => s.users.push(u),
                Row::Role(r) => s.roles.push(r),
                Row::Quota(q) => s.quotas.push(q),
                Row::Submission(id, sub) => s.submissions.push((id, sub)),
                Row::SealedNamespace(ns) => s.sealed.push(ns),
            }
        }
        s
    }

    /// `N nodes, M actors, J jobs` (live nodes and actors), for the banner.
    pub fn summary(&self) -> String {
        let nodes = self.nodes.iter().filter(|n| n.dead.is_none()).count();
        let actors = self
            .actors
            .iter()
            .filter(|a| a.info.state != crate::proto::head::ActorState::Dead)
            .count();
        format!("{nodes} nodes, {actors} actors, {} jobs", self.jobs.len())
    }
}

/// The durable store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be opened.
    #[error("head database {path}: {detail}")]
    Database {
        /// Its file.
        path: String,
        /// What failed.
        detail: String,
    },
    /// A stored row does not decode (another version, or damage).
    #[error("head database {path}: a stored row does not decode: {source} (a database written by another Prism version is not recovered: run that version, or start a new cluster with --fresh)")]
    Row {
        /// Its file.
        path: String,
        /// Why.
        source: CodecError,
    },
}

/// Where the head's durable rows go.
pub trait DurableStore: Send + std::fmt::Debug {
    /// Writes one batch of changes atomically (DH-1).
    fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError>;
    /// Records that the head stopped cleanly: the next start begins a new
    /// cluster instead of recovering this one.
    fn mark_clean_stop(&mut self) -> Result<(), StoreError>;
    /// The audit trail as its file holds it now, oldest first (`None`: the
    /// store keeps no trail).
    fn audit_log(&self) -> Result<Option<Vec<crate::proto::access::AuditEntry>>, StoreError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::common::Resources;

    #[test]
    fn rows_round_trip_through_their_stored_bytes() {
        let node = Row::Node(NodeRow {
            id: NodeId::random(),
            reg: RegisterNode {
                node_name: "n".into(),
                address: "127.0.0.1:1".into(),
                resources: Resources::default(),
                labels: vec![("zone".into(), "a".into())],
                gpus: vec![],
                is_head: false,
                pid: 7,
            },
            incarnation: 2,
            dead: None,
            cert: Some([9; 32]),
        });
        let obj = Row::Object(ObjectRow {
            id: ObjectId::random(),
            size: 10,
            nodes: vec![NodeId::random()],
            residency: None,
        });
        for r in [node, obj] {
            let back = Row::decode(&r.encode().unwrap()).unwrap();
            assert_eq!(back, r);
            assert_eq!(back.key(), r.key());
        }
        assert!(Row::decode(b"garbage").is_err());
    }
}
