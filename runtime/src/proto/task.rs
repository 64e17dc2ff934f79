//! Tasks on the wire: what drivers and workers say to their raylet over the
//! local task socket, and what a raylet forwards to a peer on spillback.
//!
//! One Unix stream per process. A client's first frame is [`LocalRequest::HelloDriver`] or [`LocalRequest::HelloWorker`];
//! after that frames flow both ways independently (submissions and results
//! are matched by task id, not by order).

use super::common::Resources;
pub use super::failure::Failure;
pub use super::outcome::Outcome;
use crate::ids::{ActorId, HandleId, JobId, NodeId, TaskId};
use prism_objectstore::ObjectId;
use rkyv::{Archive, Deserialize, Serialize};

/// What runs a job's workers.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// The job.
    pub job_id: JobId,
    /// The job's binary on the submitting machine.
    pub binary: String,
    /// SHA-256 of the binary: other machines cache it under this name.
    pub binary_hash: [u8; 32],
    /// Size of the binary in bytes.
    pub binary_len: u64,
    /// Working directory for workers.
    pub cwd: String,
    /// Extra environment for workers (`PRISM_*` and the user's choices).
    pub env: Vec<(String, String)>,
    /// The node whose raylet the driver is connected to (set by that
    /// raylet): where its workers' output goes.
    pub driver_node: Option<NodeId>,
}

/// One argument of a task.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ArgSpec {
    /// The archived value itself (small values and resolved inline results).
    Inline(Vec<u8>),
    /// An object in the store, fetched (or pulled) by the worker.
    Object(ObjectId),
}

/// Where a task may run.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum WireStrategy {
    /// Pack locally until busy, then spread (the default).
    Hybrid,
    /// Round-robin over nodes.
    Spread,
    /// On one node; `soft` falls back elsewhere.
    NodeAffinity {
        /// The node.
        node: NodeId,
        /// Fall back when it is dead or can never fit the task.
        soft: bool,
    },
    /// Among nodes whose labels match (`key=value,key in (a|b)` syntax).
    Labels(String),
    /// Inside bundle `index` of a placement group, reserved on `node`: the
    /// task takes its resources from the bundle, not from the node.
    Bundle {
        /// The group.
        pg: crate::ids::PlacementGroupId,
        /// The bundle.
        index: u32,
        /// Where the bundle is reserved (as the driver last saw it).
        node: NodeId,
    },
    /// Round-robin over nodes whose labels match (a spread narrowed by a
    /// residency rule).
    SpreadLabels(String),
    /// On `node` while it is alive and its labels match, else among the
    /// nodes whose labels match (a soft affinity narrowed by a residency
    /// rule).
    PreferNode {
        /// The node.
        node: NodeId,
        /// The labels every node it may go to must match.
        within: String,
    },
}

impl WireStrategy {
    /// The scheduler's strategy for this placement; `Err` says why there is
    /// none (a malformed label selector, or a bundle, which is placed by its
    /// placement group instead).
    pub fn to_strategy(&self) -> Result<prism_scheduler::Strategy<NodeId>, String> {
        use prism_scheduler::{LabelSelector, Strategy};
        let parse = |sel: &str| LabelSelector::parse(sel).map_err(|e| e.to_string());
        Ok(match self {
            WireStrategy::Hybrid => Strategy::Hybrid,
            WireStrategy::Spread => Strategy::Spread,
            WireStrategy::NodeAffinity { node, soft } => Strategy::NodeAffinity {
                node: *node,
                soft: *soft,
            },
            WireStrategy::Labels(sel) => Strategy::Labels(parse(sel)?),
            WireStrategy::SpreadLabels(sel) => Strategy::SpreadLabels(parse(sel)?),
            WireStrategy::PreferNode { node, within } => Strategy::PreferNode {
                node: *node,
                within: parse(within)?,
            },
            WireStrategy::Bundle { pg, .. } => {
                return Err(format!(
                    "tasks in placement group {pg} go to its bundle's node"
                ))
            }
        })
    }
}

/// Creating an actor: its constructor runs as this task on a dedicated worker.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ActorCreate {
    /// The actor.
    pub actor_id: ActorId,
    /// Its name, if named.
    pub name: Option<String>,
    /// Its namespace.
    pub namespace: String,
    /// Lives until killed (not with its creator's job).
    pub detached: bool,
    /// Constructor re-runs allowed after the worker dies.
    pub max_restarts: u32,
    /// Re-sends of a call that was in flight when the worker died.
    pub max_task_retries: u32,
    /// Calls run at once (async `&self` methods interleave).
    pub max_concurrency: u32,
    /// Restarts so far.
    pub restarts: u32,
}

/// A call to an actor's method.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ActorCall {
    /// The actor.
    pub actor_id: ActorId,
    /// The calling handle (calls from one handle run in order).
    pub caller: HandleId,
    /// Its position in that caller's sequence.
    pub seq: u64,
}

/// What kind of work a [`TaskSpec`] is.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum TaskKind {
    /// A normal task.
    Task,
    /// An actor's constructor.
    CreateActor(ActorCreate),
    /// A method call on an actor.
    ActorCall(ActorCall),
}

/// Everything a raylet needs to run a task.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// The task; its result object has the same 16 bytes.
    pub task_id: TaskId,
    /// The job it belongs to.
    pub job_id: JobId,
    /// The registered function name.
    pub function: String,
    /// A display name for state views.
    pub name: String,
    /// Arguments, resolved.
    pub args: Vec<ArgSpec>,
    /// Resources held while it runs.
    pub resources: Resources,
    /// Placement.
    pub strategy: WireStrategy,
    /// Retries after system failures (worker or node death).
    pub max_retries: u32,
    /// Retry user panics too.
    pub retry_exceptions: bool,
    /// Attempts so far.
    pub attempt: u32,
    /// Already spilled from another raylet: run here or queue, never forward again.
    pub spilled: bool,
    /// Fail with `Infeasible` at once when no node can run it, instead of
    /// waiting (up to the raylet's infeasible timeout) for one to join.
    pub fail_if_infeasible: bool,
    /// Task, actor creation or actor call.
    pub kind: TaskKind,
    /// The process that submitted it (set by its raylet): a worker still
    /// holding refs from its arguments when it ends registers there.
    pub reply_to: Option<ReplyTo>,
    /// Objects whose refs are inside its argument values (the submitter
    /// keeps them alive until it ends; see `api/borrowing.rs`).
    pub nested_refs: Vec<prism_objectstore::ObjectId>,
    /// Where its result, and everything it puts, may live (a resident
    /// task's result is never inlined; see `api/residency.rs`).
    pub residency: Option<Box<super::common::Residency>>,
}

/// A process on a node: a local connection of that node's raylet.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub struct ReplyTo {
    /// The node.
    pub node: NodeId,
    /// Its raylet's connection number.
    pub conn: u64,
}

impl TaskSpec {
    /// A spec with no arguments, no resources, hybrid placement, no retries,
    /// first attempt, not spilled; callers set what differs.
    pub fn new(
        task_id: TaskId,
        job_id: JobId,
        function: &str,
        name: &str,
        kind: TaskKind,
    ) -> TaskSpec {
        TaskSpec {
            task_id,
            job_id,
            function: function.to_string(),
            name: name.to_string(),
            args: Vec::new(),
            resources: Resources::default(),
            strategy: WireStrategy::Hybrid,
            max_retries: 0,
            retry_exceptions: false,
            attempt: 0,
            spilled: false,
            fail_if_infeasible: false,
            kind,
            reply_to: None,
            nested_refs: Vec::new(),
            residency: None,
        }
    }
}

/// Driver or worker to raylet.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum LocalRequest {
    /// The first frame of a driver's connection.
    HelloDriver {
        /// Protocol version.
        version: u16,
        /// The job it drives.
        job: JobSpec,
    },
    /// The first frame of a worker's connection.
    HelloWorker {
        /// Protocol version.
        version: u16,
        /// The id the raylet gave it at spawn.
        worker_id: u64,
    },
    /// Run a task (drivers, and workers submitting nested tasks).
    Submit(TaskSpec),
    /// Cancel a task this connection submitted.
    Cancel {
        /// The task.
        task_id: TaskId,
        /// Kill the worker if it is running.
        force: bool,
    },
    /// A worker finished the task it was given.
    Done {
        /// The task.
        task_id: TaskId,
        /// Its outcome.
        outcome: Outcome,
    },
    /// Kill an actor; with `no_restart`, it stays dead. Answered, once the
    /// head allowed it and the kill is on its way, with a `Finished` for
    /// `request_id` carrying the head's archived answer.
    KillActor {
        /// Where the answer goes.
        request_id: TaskId,
        /// The actor.
        actor_id: ActorId,
        /// Do not restart it.
        no_restart: bool,
    },
    /// Find a named actor; the answer is a `Finished` for `request_id`
    /// carrying the archived [`ActorId`] (or `ActorDied` if none).
    LookupActor {
        /// Matches the answer.
        request_id: TaskId,
        /// The name.
        name: String,
        /// The namespace.
        namespace: String,
    },
    /// A placement-group request for the head, relayed by the raylet; the
    /// answer is a `Finished` for `request_id` carrying the head's archived
    /// response.
    PlacementGroup {
        /// Matches the answer.
        request_id: TaskId,
        /// The request.
        request: super::placement::PgRequest,
    },
    /// The owner freed these objects (its last ref is gone, with every
    /// borrower's): drop every copy, here and on other nodes. Unanswered.
    Free(Vec<prism_objectstore::ObjectId>),
    /// This process started (`release: false`) or stopped borrowing these
    /// objects from `to`; a start is answered, once handed on, with a
    /// `Finished` for `request_id`.
    Borrows {
        /// Matches the answer (starts only).
        request_id: Option<TaskId>,
        /// Where the refs came from.
        to: ReplyTo,
        /// The objects.
        objects: Vec<prism_objectstore::ObjectId>,
        /// Stopped rather than started.
        release: bool,
    },
    /// This process let go of these results of tasks that ran in `to`,
    /// which holds the refs archived inside them (RR-1 in
    /// `api/result_refs.rs`): they may go there.
    ReleaseHeld {
        /// The process that ran the tasks.
        to: ReplyTo,
        /// The results.
        results: Vec<prism_objectstore::ObjectId>,
    },
    /// This process holds the refs inside these results of tasks it ran
    /// for `owner` (RR-1), until `owner` releases them; its raylet releases
    /// them in the owner's name if the owner goes first (HL-1 in
    /// `raylet/held_ledger.rs`). Unanswered.
    HeldFor {
        /// The results' owner.
        owner: ReplyTo,
        /// The results.
        results: Vec<prism_objectstore::ObjectId>,
    },
    /// A worker's task blocks in `get`: lend its CPUs to other tasks.
    Blocked,
    /// The worker's task runs again.
    Unblocked,
    /// Changes of user metrics ([`crate::metrics`]).
    Metrics(Vec<crate::metrics::MetricUpdate>),
    /// New points of a training run, for the head (relayed, unanswered).
    ReportRun(super::runs::RunReport),
    /// A serve controller's state, for the head (relayed, unanswered).
    ReportServe(super::serving::ServeReport),
    /// A model-registry request for the head, relayed by the raylet; the
    /// answer is a `Finished` for `request_id` carrying the head's archived
    /// response.
    Models {
        /// Matches the answer.
        request_id: TaskId,
        /// The request.
        request: super::models::ModelRequest,
    },
    /// An object this process is about to put may only live where `rule`
    /// allows; relayed to the head as `SetResidency` for this node and
    /// answered like `Models`.
    Residency {
        /// Matches the answer.
        request_id: TaskId,
        /// The object.
        object: ObjectId,
        /// Where it may be.
        rule: super::common::Residency,
    },
    /// A read of the cluster's state (nodes, runs) for the head, relayed
    /// by the raylet; answered like `Models`.
    Cluster {
        /// Matches the answer.
        request_id: TaskId,
        /// What to read.
        query: ClusterQuery,
    },
    /// A key of `namespace`, relayed to the head as `NamespaceKey` for
    /// this process's job (so judged as the job's owner) and answered
    /// like `Models`.
    NamespaceKey {
        /// Matches the answer.
        request_id: TaskId,
        /// Which key.
        usage: super::access::KeyUse,
        /// Whose key.
        namespace: String,
    },
    /// This process's direct connection to a local actor's worker broke
    /// with these calls unanswered: the raylet answers them as calls its
    /// worker held when it died (re-sent to the next incarnation, or
    /// `ActorDied` with the cause).
    DirectLost(LostCalls),
    /// Lease an idle worker for tasks shaped like `shape` (its resources
    /// and placement; no arguments). Answered like `Models`, with the
    /// archived `Option<u64>` worker number (`None`: declined).
    Lease {
        /// Matches the answer; the lease's id from then on.
        request_id: TaskId,
        /// The shape.
        shape: TaskSpec,
    },
    /// This owner is done with a lease.
    ReturnLease {
        /// The lease.
        lease: TaskId,
    },
    /// A lease's connection broke with these tasks unanswered: the raylet
    /// retries them or fails them with the worker's death.
    LeaseLost {
        /// The lease.
        lease: TaskId,
        /// The tasks.
        tasks: Vec<TaskSpec>,
    },
    /// Work that reached this worker directly started or ended (sent in
    /// batches, a few times a second). Unanswered.
    TaskEvents(super::direct::TaskEvents),
    /// The tasks waiting in this owner for a leased worker, now (a
    /// snapshot that replaces the last one; empty once none waits), sent
    /// about twice a second while any wait. Unanswered.
    OwnerWaiting(super::direct::OwnerWaiting),
}

/// [`LocalRequest::DirectLost`]'s calls, as one value.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LostCalls {
    /// Their actor (hosted on this node).
    pub actor_id: ActorId,
    /// The incarnation the connection reached (its restart count).
    pub restarts: u32,
    /// The calls sent and not answered, oldest first.
    pub calls: Vec<TaskSpec>,
}

/// What [`LocalRequest::Cluster`] reads.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub enum ClusterQuery {
    /// Every node, live or dead (the head's `GetStatus`).
    Status,
    /// Every training run (the head's `ListRuns`).
    Runs,
}

/// A line a task worker writes to its stdout and stderr, followed by a
/// task's name, before it runs a task of another name than the last: its
/// raylet, reading those pipes, labels the lines after it with that name
/// (it knows the tasks it sends, not those pushed on a lease) and drops
/// the line.
pub const TASK_LABEL_MARK: &str = "\u{1e}prism-task:";

/// Raylet to driver or worker.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // Execute dominates the traffic; boxing it would cost an allocation per task.
pub enum LocalEvent {
    /// Answer to a hello.
    Welcome {
        /// This raylet's node.
        node_id: NodeId,
        /// Its object store socket.
        store_socket: String,
        /// The cluster's at-rest key when it encrypts at rest (checkpoints
        /// are sealed with it, `prism::at_rest`).
        at_rest_key: Option<[u8; 32]>,
        /// This connection's number: where results for it are sent
        /// (a direct call's `reply_to`).
        conn: u64,
    },
    /// Run this task (to a worker). `gpus` are the GPU indices it was given.
    Execute {
        /// The task.
        task: TaskSpec,
        /// Assigned GPU indices.
        gpus: Vec<u32>,
    },
    /// A task this connection submitted has ended.
    Finished {
        /// The task.
        task_id: TaskId,
        /// How.
        outcome: Outcome,
    },
    /// The hello was refused.
    Refused {
        /// Why.
        message: String,
    },
    /// Something the user should know about work this connection submitted
    /// (it cannot run anywhere now, say); the driver prints it once.
    Warning {
        /// What to print.
        message: String,
    },
    /// Return this lease once its running task ends (others wait here).
    RevokeLease {
        /// The lease.
        lease: TaskId,
    },
    /// Output of the job's workers (on any node), for its driver to print.
    Logs(Vec<super::state::LogLine>),
    /// Processes started (or, with `release`, stopped) borrowing these
    /// objects from this one.
    Borrows {
        /// The objects.
        objects: Vec<prism_objectstore::ObjectId>,
        /// Stopped rather than started.
        release: bool,
    },
    /// The owners of these results of tasks that ran here let them go:
    /// the refs held for them may go (RR-1).
    ReleaseHeld {
        /// The results.
        results: Vec<prism_objectstore::ObjectId>,
    },
}

/// Largest task frame on a raylet's sockets (arguments travel inline up to
/// the inline limit, so this only bounds garbage).
pub const MAX_TASK_FRAME: usize = 256 << 20;

/// A task to run on another raylet (spilled there, or an actor's restart
/// the head hands to it), with the job that runs it. The answer comes on
/// the same stream when it ends.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PeerSubmit {
    /// The job (its binary by path and content hash).
    pub job: JobSpec,
    /// The task.
    pub task: TaskSpec,
}
