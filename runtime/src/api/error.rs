//! Errors of the user API: [`Error`] for any call, [`TaskError`] for why a
//! task produced no value.

use crate::ids::NodeId;
use crate::object_store::ObjectError;
use crate::proto::task::Failure;

/// Why a task produced no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskError {
    /// The user's function panicked.
    #[error("task {task} panicked at {location}: {message}")]
    Panicked {
        /// The task's name.
        task: String,
        /// The panic message.
        message: String,
        /// `file:line:col`.
        location: String,
    },
    /// The worker process died while running it (retries exhausted).
    #[error("task {task}: its worker on {node} died ({detail})")]
    WorkerDied {
        /// The task's name.
        task: String,
        /// Where.
        node: NodeId,
        /// `exit code N` or `signal 9 (SIGKILL)`.
        detail: String,
    },
    /// The node running it died (retries exhausted).
    #[error("task {task}: node {node} died ({detail})")]
    NodeDied {
        /// The task's name.
        task: String,
        /// The node.
        node: NodeId,
        /// What was seen.
        detail: String,
    },
    /// Cancelled.
    #[error("task {task} was cancelled")]
    Cancelled {
        /// The task's name.
        task: String,
    },
    /// No node can ever run it.
    #[error("task {task} is infeasible: {reason}")]
    Infeasible {
        /// The task's name.
        task: String,
        /// What is missing.
        reason: String,
    },
    /// An object it needs (or its result) is gone.
    #[error("task {task}: object {object} lost ({detail})")]
    ObjectLost {
        /// The task's name.
        task: String,
        /// The object.
        object: String,
        /// Why.
        detail: String,
    },
    /// The worker could not run the call: unknown function name or
    /// arguments that do not decode as its parameters.
    #[error("task {task}: bad call: {detail}")]
    BadCall {
        /// The task's name.
        task: String,
        /// Why.
        detail: String,
    },
    /// The head could not be reached for something only it knows (an
    /// actor's registration or name, a placement group).
    #[error("task {task}: cannot reach the head: {detail}")]
    HeadUnreachable {
        /// The task's name.
        task: String,
        /// What was asked and why it failed.
        detail: String,
    },
    /// No live actor has this name in this namespace.
    #[error("no live actor named {name:?} in namespace {namespace:?}")]
    NoSuchActor {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// Another live actor holds this name in its namespace.
    #[error("{task}: the actor's name is taken: {detail}")]
    NameTaken {
        /// The creation's name (`Type::new`).
        task: String,
        /// Which actor holds it.
        detail: String,
    },
    /// The actor is dead, or died while running this call.
    #[error("call {task}: actor {actor} died: {detail}")]
    ActorDied {
        /// The call's name (`Type::method`).
        task: String,
        /// The actor.
        actor: crate::ids::ActorId,
        /// Why: the constructor's panic, the worker's exit signal, the
        /// node's loss, or a kill.
        detail: String,
    },
    /// Its placement group was removed, or its bundle is not where the
    /// caller thought (call `ready` again after a node loss).
    #[error("task {task}: placement group {pg}: {detail}")]
    PlacementGroupGone {
        /// The task's name.
        task: String,
        /// The group.
        pg: crate::ids::PlacementGroupId,
        /// Why.
        detail: String,
    },
    /// No worker process could be started for it.
    #[error("task {task}: cannot start a worker: {detail}")]
    WorkerStartFailed {
        /// The task's name.
        task: String,
        /// Why.
        detail: String,
    },
}

impl TaskError {
    /// From the wire.
    pub fn from_failure(task: &str, f: Failure) -> TaskError {
        let task = task.to_string();
        match f {
            Failure::Panic { message, location } => TaskError::Panicked {
                task,
                message,
                location,
            },
            Failure::WorkerDied { node, detail } => TaskError::WorkerDied { task, node, detail },
            Failure::NodeDied { node, detail } => TaskError::NodeDied { task, node, detail },
            // Raylets place such a task again; should one reach an owner,
            // the node is on its way out.
            Failure::Draining { node, reason } => TaskError::NodeDied {
                task,
                node,
                detail: format!("it is being drained ({reason})"),
            },
            // Raylets place such a task again; should one reach an owner,
            // it could not be.
            Failure::Moved { node } => TaskError::NodeDied {
                task,
                node,
                detail: "it was handed back to be placed again, and was not".into(),
            },
            Failure::Cancelled => TaskError::Cancelled { task },
            Failure::Infeasible { reason } => TaskError::Infeasible { task, reason },
            Failure::ObjectLost { object, detail } => TaskError::ObjectLost {
                task,
                object: object.to_string(),
                detail,
            },
            Failure::BadCall { detail } => TaskError::BadCall { task, detail },
            Failure::HeadUnreachable { detail } => TaskError::HeadUnreachable { task, detail },
            Failure::NoSuchActor { namespace, name } => TaskError::NoSuchActor { namespace, name },
            Failure::NameTaken { detail } => TaskError::NameTaken { task, detail },
            Failure::WorkerStartFailed { detail } => TaskError::WorkerStartFailed { task, detail },
            Failure::ActorDied { actor_id, detail } => TaskError::ActorDied {
                task,
                actor: actor_id,
                detail,
            },
            Failure::PlacementGroupGone { pg, detail } => {
                TaskError::PlacementGroupGone { task, pg, detail }
            }
        }
    }
}

/// Any failure of the Prism API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A task failed.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// A `get` or `wait` ran out of time.
    #[error("timed out after {ms} ms waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The timeout.
        ms: u64,
    },
    /// `prism::init()` has not run in this process.
    #[error("prism::init() has not been called in this process")]
    NotInitialized,
    /// Starting or joining a cluster failed.
    #[error("cannot start or join the cluster: {0}")]
    Init(String),
    /// The local raylet connection is gone.
    #[error("lost the connection to the local raylet: {0}")]
    Disconnected(String),
    /// The head refused what this job asked: its owner may not.
    #[error("refused: {0}")]
    Refused(String),
    /// The model registry refused (an unknown model, version or run).
    #[error("model registry: {0}")]
    Registry(String),
    /// A file kept at rest could not be written, read or opened.
    #[error("at rest: {0}")]
    AtRest(String),
    /// An object's residency rule refused where it was to be put.
    #[error("residency: {0}")]
    Residency(String),
    /// A masking key was refused (the job's owner lacks `pii:read` in
    /// the namespace) or could not be had.
    #[error("masking: {0}")]
    Masking(String),
    /// The head could not answer a read of the cluster's state.
    #[error("cluster state: {0}")]
    ClusterState(String),
    /// A value could not be archived.
    #[error("cannot encode a value: {0}")]
    Encode(String),
    /// Bytes did not validate as the expected type.
    #[error("cannot decode a {type_name}: {detail}")]
    Decode {
        /// The expected type.
        type_name: &'static str,
        /// Why.
        detail: String,
    },
    /// The object store refused.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// A placement group is infeasible, still pending at a timeout, removed,
    /// or the head refused the request.
    #[error("placement group {pg}: {detail}")]
    PlacementGroup {
        /// The group.
        pg: crate::ids::PlacementGroupId,
        /// Why (the head's reason).
        detail: String,
    },
    /// A shared-memory channel could not be made, opened or written.
    #[error("channel: {0}")]
    Channel(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
