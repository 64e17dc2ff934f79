//! The state API (`prism list tasks|objects`): the CLI asks the head
//! ([`super::head::HeadRequest::ListTasks`] / `ListObjects`), the head asks
//! every live raylet over its peer endpoint ([`StateQuery`] in a
//! [`super::raylet::PeerRequest::State`]) and merges the [`StateReply`]s.

use crate::ids::{JobId, NodeId};
use rkyv::{Archive, Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a raylet is asked to list.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateQuery {
    /// Its queued and running tasks (actor constructors and calls included).
    Tasks,
    /// What its object store holds.
    Objects,
}

/// A raylet's answer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum StateReply {
    /// Its tasks.
    Tasks(Vec<TaskInfo>),
    /// Its objects.
    Objects(Vec<ObjectInfo>),
}

/// Where a task is in its life on a raylet.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Waiting for resources, a worker, or its actor's constructor.
    Queued,
    /// On a worker.
    Running,
    /// No node can run it now; it waits for one to join (bounded by the
    /// raylet's infeasible timeout).
    Infeasible,
}

/// One task as its raylet sees it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskInfo {
    /// The task (`t-` and the hex of its result object's id).
    pub task_id: String,
    /// Its job.
    pub job_id: JobId,
    /// Its display name.
    pub name: String,
    /// The registered function (or actor method).
    pub function: String,
    /// `task`, `actor_creation` or `actor_call`.
    pub kind: String,
    /// Queued or running.
    pub state: TaskState,
    /// The node listing it.
    pub node_id: NodeId,
    /// The worker process running it, when it runs and the pid is known.
    pub worker_pid: Option<u32>,
    /// Resources it asked for.
    pub resources: BTreeMap<String, f64>,
    /// Attempts before this one.
    pub attempt: u32,
}

/// One object in a node's store.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct ObjectInfo {
    /// The object (`o-` and hex).
    pub object_id: String,
    /// The node holding this copy.
    pub node_id: NodeId,
    /// Bytes.
    pub size: u64,
    /// Sealed (readable); unsealed objects are being written.
    pub sealed: bool,
    /// Pinned by its owner (never evicted, only spilled).
    pub pinned: bool,
    /// On local disk rather than in the shared segment.
    pub spilled: bool,
    /// References held by local processes.
    pub refs: u32,
}
