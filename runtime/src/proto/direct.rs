//! Direct actor calls on one machine: a caller connects to the Unix socket
//! of the worker hosting its actor (`<session>/a/<actor id>`), writes the
//! calls' [`super::task::TaskSpec`]s in order and reads their outcomes,
//! with no raylet in between. The raylet stays the authority on the
//! worker's life: when the connection breaks, the caller hands the calls
//! still in flight to it ([`super::task::LocalRequest::DirectLost`]).

use super::common::Resources;
use super::task::Outcome;
use crate::ids::{JobId, TaskId};
use rkyv::{Archive, Deserialize, Serialize};

/// The name, in `<session>/a/`, of the socket task worker `worker` takes
/// its leased tasks on (an actor's is its id).
pub fn lease_socket_name(worker: u64) -> String {
    format!("w-{worker}")
}

/// Actor worker to caller.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum DirectEvent {
    /// The connection's first frame: which incarnation of the actor the
    /// caller reached (its restart count).
    Welcome {
        /// Restarts before this worker.
        restarts: u32,
    },
    /// A call sent on this connection has ended.
    Finished {
        /// The call.
        task_id: TaskId,
        /// How.
        outcome: Outcome,
        /// How long it ran on the worker, in microseconds (0: unknown):
        /// its own time, without the queueing before and after it that a
        /// busy machine adds, which is what an owner sizes its queue by.
        ran_us: u64,
    },
}

/// One batch of [`TaskEvent`]s.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct TaskEvents {
    /// The events, in the order they happened.
    pub events: Vec<TaskEvent>,
    /// Work that finished while the batch was full: counted, not listed.
    pub unlisted_finished: u64,
    /// Work that failed while the batch was full: counted, not listed.
    pub unlisted_failed: u64,
}

impl TaskEvent {
    /// `spec`, arrived at `arrived_us`, not started.
    pub fn arrived(spec: &super::task::TaskSpec, arrived_us: u64) -> TaskEvent {
        TaskEvent {
            task_id: spec.task_id,
            job_id: spec.job_id,
            name: spec.name.clone(),
            function: spec.function.clone(),
            actor_call: matches!(spec.kind, super::task::TaskKind::ActorCall(_)),
            resources: spec.resources.clone(),
            attempt: spec.attempt,
            arrived_us,
            started_us: None,
            ended_us: None,
            error: None,
        }
    }
}

/// The tasks an owner keeps waiting for its leases (LO-2), as it lists
/// them to its raylet for `prism list tasks` (TH-4 in
/// `raylet/task_history.rs`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct OwnerWaiting {
    /// The first of them, in order within each shape of task (`started_us` and `ended_us` are
    /// `None`; `arrived_us` is 0: the raylet counts from when it first
    /// hears of each). At most `raylet::task_history::MAX_WAITING`.
    pub tasks: Vec<TaskEvent>,
}

/// What a worker tells its raylet (batched, in
/// [`super::task::LocalRequest::TaskEvents`]) about work that reached it
/// directly, so that `prism list tasks`, the dashboard and `prism
/// timeline` show direct calls and leased tasks like the raylet's own.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TaskEvent {
    /// The task or call.
    pub task_id: TaskId,
    /// Its job.
    pub job_id: JobId,
    /// Its display name.
    pub name: String,
    /// Its function.
    pub function: String,
    /// An actor call (else a task).
    pub actor_call: bool,
    /// What it asked for.
    pub resources: Resources,
    /// Attempts before this one.
    pub attempt: u32,
    /// When it reached the worker.
    pub arrived_us: u64,
    /// When it started there.
    pub started_us: Option<u64>,
    /// When it ended; `None`: it is still running.
    pub ended_us: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}
