//! Messages to the head and its answers.
//!
//! Who may send what (enforced by the head, see `head::server`):
//! - any connection: `Hello` first (version and role), then
//! - an anonymous connection that presented the join token in `Hello`:
//!   `Join`, `GetStatus`, `GetStatusSince`;
//! - a connection authenticated by a node certificate from the cluster CA:
//!   `Register`, `Heartbeat`, `Unregister`, `GetStatus`, `GetStatusSince`;
//! - a connection that presented a user's token (`name@secret`) in `Hello`:
//!   what that user's role permits in their namespaces (`head::access`).
//! - a connection that presented the join token as a [`PeerRole::Viewer`]:
//!   what the `viewer` role permits in the namespaces it named.

use super::common::{ClusterStatus, GpuInfo, Resources};
use crate::ids::{ClusterId, NodeId};
use rkyv::{Archive, Deserialize, Serialize};

pub use super::common::PeerRole;
pub use super::jobs::{JobInfo, JobState, JobSubmission};
pub use super::relayed::RelayedRequest;

/// A request to the head.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum HeadRequest {
    /// First message on every connection.
    Hello {
        /// The sender's protocol version (also in every frame header).
        version: u16,
        /// Raylet or client.
        role: PeerRole,
        /// The cluster's join secret, or a user's `name@secret`; required on
        /// connections without a node certificate.
        token: Option<String>,
    },
    /// Ask for a node certificate signed by the cluster CA.
    Join {
        /// The node's stable name.
        node_name: String,
    },
    /// Register a raylet (mTLS only).
    Register(RegisterNode),
    /// Periodic liveness and the node's free resources (mTLS only).
    Heartbeat {
        /// The node.
        node_id: NodeId,
        /// What is free now.
        available: Resources,
        /// What worker leases hold (not free, but given back for a
        /// placement group's bundles, L-3).
        leased: Resources,
        /// Work waiting on this node, and work no node can run.
        demand: Vec<super::common::Demand>,
    },
    /// A raylet stopping cleanly.
    Unregister {
        /// The node.
        node_id: NodeId,
    },
    /// The node table.
    GetStatus,
    /// The nodes that changed since `version` of the head's run `epoch`
    /// (`epoch` 0, or another run's: every node).
    GetStatusSince {
        /// The run of versions the asker knows.
        epoch: u64,
        /// The newest version it has.
        version: u64,
    },
    /// A node now holds a sealed copy of an object (mTLS only).
    AddObjectLocation {
        /// The node.
        node_id: NodeId,
        /// The object.
        object: prism_objectstore::ObjectId,
        /// Its size.
        size: u64,
    },
    /// Copies a node sealed (`Some(size)`) and lost (`None`: freed,
    /// evicted), in the order they happened (mTLS only).
    UpdateObjectLocations {
        /// The node.
        node_id: NodeId,
        /// Each object and its change.
        changes: Vec<(prism_objectstore::ObjectId, Option<u64>)>,
    },
    /// Their owner freed these objects: every other node holding a copy
    /// drops it (mTLS only; the asking node dropped its own).
    FreeObjects {
        /// The node asking.
        node_id: NodeId,
        /// The objects.
        objects: Vec<prism_objectstore::ObjectId>,
    },
    /// Where copies of an object are.
    GetObjectLocations {
        /// The object.
        object: prism_objectstore::ObjectId,
    },
    /// A job binary follows on this stream as `len` raw bytes; the head
    /// caches it under its SHA-256 (`hash`).
    UploadBinary {
        /// SHA-256 of the bytes.
        hash: [u8; 32],
        /// How many bytes follow.
        len: u64,
    },
    /// Run an uploaded binary as a job driver on the head's machine.
    SubmitJob(JobSubmission),
    /// A driver started by hand announces its job; the job ends when this
    /// connection closes.
    RegisterDriver {
        /// The driver's job.
        job_id: crate::ids::JobId,
        /// Its command line, for `prism job list`.
        entrypoint: String,
        /// Its process id.
        pid: u32,
    },
    /// The job table.
    ListJobs,
    /// A submitted job's output from byte `offset`.
    JobLogs {
        /// The job.
        job_id: crate::ids::JobId,
        /// First byte wanted.
        offset: u64,
    },
    /// Stop a job (SIGTERM, then SIGKILL after a grace period).
    StopJob {
        /// The job.
        job_id: crate::ids::JobId,
    },
    /// A new actor (refused if its name is taken), with what recreates it
    /// on another node if its node dies (`None`: it is never moved).
    RegisterActor(ActorInfo, Option<Box<super::task::PeerSubmit>>),
    /// A raylet reports an actor's state.
    UpdateActor {
        /// The actor.
        actor_id: crate::ids::ActorId,
        /// Its new state.
        state: ActorState,
        /// Where it runs now.
        node: Option<(crate::ids::NodeId, String)>,
        /// Restarts so far.
        restarts: u32,
        /// Why, when dead.
        reason: Option<String>,
    },
    /// One actor by id.
    GetActor {
        /// The actor.
        actor_id: crate::ids::ActorId,
    },
    /// A live actor by name.
    GetNamedActor {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// May the relaying raylet's job kill this actor? Answered `Ok` to a
    /// raylet, which then kills it ([`RelayedRequest::KillActor`]); the
    /// head kills nothing itself.
    KillActor {
        /// The actor.
        actor_id: crate::ids::ActorId,
        /// Whether it is to stay dead.
        no_restart: bool,
    },
    /// The actor table.
    ListActors,
    /// Every live node's queued and running tasks.
    ListTasks,
    /// Every live node's stored objects.
    ListObjects,
    /// Every live raylet's worker processes.
    ListWorkers,
    /// The newest tasks that pass a filter, and how many pass, over every
    /// live raylet.
    QueryTasks(super::state::TaskFilter),
    /// Every live raylet's metrics and the head's own.
    Metrics,
    /// New points of a training run.
    ReportRun(super::runs::RunReport),
    /// A serve controller's state (from its raylet, judged as its job).
    ReportServe(super::serving::ServeReport),
    /// Each namespace's serving, as last reported.
    ListServe,
    /// The training runs.
    ListRuns,
    /// One training run's points.
    GetRun {
        /// The run.
        run_id: String,
    },
    /// The model registry.
    Models(super::models::ModelRequest),
    /// Part of a worker's log file, from its node.
    WorkerLog {
        /// The worker's node.
        node_id: crate::ids::NodeId,
        /// The worker's pid.
        pid: u32,
        /// First byte.
        offset: u64,
    },
    /// A placement-group request.
    PlacementGroup(super::placement::PgRequest),
    /// Drains a node: it takes no new work, its restartable actors start
    /// again elsewhere, and it leaves once idle or at the deadline
    /// (`prism drain`, a preemption notice).
    DrainNode {
        /// The node.
        node_id: NodeId,
        /// Why (`preemption`, `scale-down`, an operator's words).
        reason: String,
        /// How long running work may go on, in milliseconds.
        deadline_ms: u64,
    },
    /// A draining node's raylet has stopped taking new work (mTLS only).
    DrainStarted {
        /// The node.
        node_id: NodeId,
    },
    /// Users, roles and the audit trail.
    Access(super::access::AccessRequest),
    /// The job queue.
    Queue(super::queue::QueueRequest),
    /// Objects put on `node_id` may only live where their rules allow
    /// (mTLS only). A raylet sends the rules its processes claimed in one
    /// batch, before it reports any of those objects' copies; each rule is
    /// refused if the node itself is outside it (answer: `ResidencySet`).
    SetResidency {
        /// The node the objects are put on.
        node_id: NodeId,
        /// Each object and where it may be.
        rules: Vec<(prism_objectstore::ObjectId, super::common::Residency)>,
    },
    /// A key of `namespace` (answer: `NamespaceKey`): the masking key
    /// (`Dataset::mask`), only for whoever holds `pii:read` there, or the
    /// at-rest key (`prism::at_rest`), for any member. A raylet relays it
    /// for its driver or worker, naming that process's `job` (judged as the
    /// job's owner); a user asks for themselves.
    NamespaceKey {
        /// The job asking, when a raylet relays the request.
        job: Option<crate::ids::JobId>,
        /// Which key.
        usage: super::access::KeyUse,
        /// Whose key.
        namespace: String,
    },
    /// What a raylet relays for one of its drivers or workers: judged as
    /// that process's job (its owner's role and namespaces), audited in the
    /// owner's name. Only a node may send it.
    Relayed {
        /// The relaying connection's job, as the raylet knows it (not the
        /// request's word); `None`: a worker whose job it does not know.
        job: Option<crate::ids::JobId>,
        /// What the process asks.
        request: RelayedRequest,
    },
}

/// An actor's lifecycle state.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorState {
    /// Created, constructor not finished.
    Pending,
    /// Serving calls.
    Alive,
    /// Its worker died; the constructor is running again.
    Restarting,
    /// Gone for good.
    Dead,
}

/// One row of the actor table.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct ActorInfo {
    /// The actor.
    pub actor_id: crate::ids::ActorId,
    /// Its type's registered name.
    pub class: String,
    /// Its name, if named.
    pub name: Option<String>,
    /// Its namespace.
    pub namespace: String,
    /// Its state.
    pub state: ActorState,
    /// The node hosting it.
    pub node_id: Option<crate::ids::NodeId>,
    /// That node's QUIC address.
    pub node_address: String,
    /// Restarts so far.
    pub restarts: u32,
    /// Why it died.
    pub death_reason: Option<String>,
    /// Lives beyond its creator's job.
    pub detached: bool,
    /// The job that created it.
    pub job_id: crate::ids::JobId,
    /// Re-sends of a call in flight when it died (callers' raylets apply
    /// this to calls lost with its node).
    pub max_task_retries: u32,
    /// Its residency rule, if it has one (a handle found by name places
    /// the tasks reading its results inside it).
    pub residency: Option<crate::proto::common::Residency>,
}

/// A raylet's registration.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RegisterNode {
    /// Stable across restarts of the same raylet (host and session directory).
    pub node_name: String,
    /// Where peers reach it over QUIC.
    pub address: String,
    /// Everything it has.
    pub resources: Resources,
    /// Its labels.
    pub labels: Vec<(String, String)>,
    /// Its GPUs.
    pub gpus: Vec<GpuInfo>,
    /// Whether it runs beside the head.
    pub is_head: bool,
    /// Its process id.
    pub pid: u32,
}

/// Why the head refused a request.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Missing or wrong join token, or an operation that needs a node certificate.
    Unauthorized,
    /// The request is not valid here (wrong order, unknown node, bad value).
    BadRequest,
    /// The request conflicts with what exists (a live actor's name).
    Conflict,
    /// The caller is known but may not do this (role, namespace, revoked).
    Forbidden,
    /// The head failed internally.
    Internal,
}

/// The head's answer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum HeadResponse {
    /// Hello accepted.
    Welcome {
        /// The cluster.
        cluster_id: ClusterId,
    },
    /// A node certificate and key, PEM, signed by the cluster CA.
    Joined {
        /// The CA certificate.
        ca_pem: String,
        /// The node's certificate.
        cert_pem: String,
        /// The node's private key.
        key_pem: String,
    },
    /// Registration accepted.
    Registered {
        /// The node's new id.
        node_id: NodeId,
        /// Incarnation under its name.
        incarnation: u64,
        /// How often to heartbeat.
        heartbeat_interval_ms: u64,
        /// The key this node seals its spill files with, when the cluster
        /// encrypts at rest (kept in memory only).
        spill_key: Option<[u8; 32]>,
    },
    /// Heartbeat accepted.
    HeartbeatAck,
    /// The head does not know this node as alive (declared dead, or the head
    /// restarted): register again as a new incarnation.
    ReRegister {
        /// Why.
        reason: String,
    },
    /// The node was drained and has left the cluster: stop, do not register
    /// again.
    Leave {
        /// Why.
        reason: String,
    },
    /// The node table.
    Status(ClusterStatus),
    /// The rules of a `SetResidency` batch the head refused, and why (the
    /// others hold).
    ResidencySet {
        /// Refused objects.
        refused: Vec<(prism_objectstore::ObjectId, String)>,
    },
    /// The node table's changes (`GetStatusSince`).
    StatusDelta(super::common::StatusDelta),
    /// A namespace's key (`NamespaceKey`).
    NamespaceKey {
        /// The namespace.
        namespace: String,
        /// Its 256-bit key for the use asked, derived from the head's
        /// secret; `None` for an at-rest key a non-member asked of a
        /// namespace that does not seal (nothing to seal or open).
        key: Option<[u8; 32]>,
        /// For `AtRest`: whether the namespace is marked to encrypt at
        /// rest (files written in it are sealed with the key).
        seal: bool,
    },
    /// Live nodes holding an object, with their addresses (empty: unknown,
    /// or lost).
    ObjectLocations {
        /// The object's size.
        size: u64,
        /// `(node, QUIC address)` of each copy.
        nodes: Vec<(NodeId, String)>,
        /// Why no copy is left, when the last one died with its node.
        lost: Option<String>,
    },
    /// Done.
    Ok,
    /// A job was accepted.
    JobSubmitted {
        /// Its id.
        job_id: crate::ids::JobId,
    },
    /// The job table.
    Jobs(Vec<JobInfo>),
    /// One actor (`None`: unknown).
    Actor(Option<ActorInfo>),
    /// The actor table.
    Actors(Vec<ActorInfo>),
    /// Answer to `ListTasks`.
    Tasks(Vec<super::state::TaskInfo>),
    /// Answer to `ListObjects`.
    Objects(Vec<super::state::ObjectInfo>),
    /// Answer to `QueryTasks`.
    TaskPage {
        /// The newest rows, newest first.
        rows: Vec<super::state::TaskInfo>,
        /// How many passed the filter.
        total: u64,
    },
    /// Answer to `ListWorkers`.
    Workers(Vec<super::state::WorkerInfo>),
    /// Answer to `Metrics`.
    Metrics {
        /// The head's request latency (seconds).
        head_requests: crate::metrics::Histogram,
        /// Each live node's.
        nodes: Vec<super::state::NodeMetrics>,
    },
    /// Answer to `ListRuns`.
    Runs(Vec<super::runs::RunInfo>),
    /// Answer to `ListServe`.
    Serve(Vec<super::serving::ServeRow>),
    /// Answer to `GetRun`.
    Run(Option<(super::runs::RunInfo, Vec<super::runs::RunPoint>)>),
    /// Answer to a registry request: the models it names or changed.
    Models(Vec<super::models::ModelInfo>),
    /// Answer to `WorkerLog`.
    WorkerLog(super::state::LogChunk),
    /// One placement group (`None`: unknown id).
    PlacementGroup(Option<super::placement::PgInfo>),
    /// Answer to `WaitPlacementGroup`: the group, plus other groups of its
    /// job created recently (so a driver that made many groups learns
    /// where they all are in one round trip).
    PlacementGroupWaited {
        /// The group asked about (`None`: unknown after the wait).
        group: Option<super::placement::PgInfo>,
        /// Other recently created groups of the same job.
        also_created: Vec<super::placement::PgInfo>,
    },
    /// The placement-group table.
    PlacementGroups(Vec<super::placement::PgInfo>),
    /// Output of a submitted job.
    Logs {
        /// Bytes from the requested offset (at most 1 MiB).
        data: Vec<u8>,
        /// The offset after them.
        next: u64,
        /// The job's row (its state says whether more can come).
        job: JobInfo,
    },
    /// Answer to an access request.
    Access(super::access::AccessReply),
    /// Answer to a queue request.
    Queue(super::queue::QueueView),
    /// Refused.
    Error {
        /// Category.
        kind: ErrorKind,
        /// A sentence naming the cause.
        message: String,
    },
}
