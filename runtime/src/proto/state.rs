//! The state API (`prism list tasks|objects|workers`, the dashboard's
//! `/api/v0`): the CLI asks the head
//! ([`super::head::HeadRequest::ListTasks`] / `ListObjects` / `ListWorkers`), the head asks
//! every live raylet over its peer endpoint ([`StateQuery`] in a
//! [`super::raylet::PeerRequest::State`]) and merges the [`StateReply`]s.

use crate::ids::{JobId, NodeId};
use rkyv::{Archive, Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a raylet is asked to list.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum StateQuery {
    /// The newest of its tasks that pass a filter, and how many pass.
    TaskPage(TaskFilter),
    /// Its queued and running tasks (actor constructors and calls
    /// included) and the last finished ones it remembers.
    Tasks,
    /// What its object store holds.
    Objects,
    /// Its worker processes.
    Workers,
    /// Its counters (store, transfers, tasks) and its users' metrics.
    Metrics,
    /// The jobs the worker with this pid served here: a live worker's, and
    /// those of the tasks it ran that the raylet remembers (whose log it
    /// is, for the head's check before a restricted caller reads it).
    PidJobs {
        /// The worker's pid.
        pid: u32,
    },
}

/// A raylet's answer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum StateReply {
    /// Its tasks.
    Tasks(Vec<TaskInfo>),
    /// Its objects.
    Objects(Vec<ObjectInfo>),
    /// Its workers.
    Workers(Vec<WorkerInfo>),
    /// The newest tasks that passed the filter, and how many did.
    TaskPage {
        /// At most `newest` of them, newest first.
        rows: Vec<TaskInfo>,
        /// How many passed.
        total: u64,
    },
    /// Its metrics.
    Metrics(NodeMetrics),
    /// Jobs, sorted, without repeats.
    Jobs(Vec<JobId>),
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
    /// It returned a result.
    Finished,
    /// It ended with an error (its last attempt).
    Failed,
}

impl TaskState {
    /// Its lowercase name, as JSON and `--state` spell it.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Infeasible => "infeasible",
            TaskState::Finished => "finished",
            TaskState::Failed => "failed",
        }
    }
}

/// Which tasks a listing wants: all that pass, counted; the `newest` of
/// them (by arrival) returned. The state API pushes these down to the
/// raylets so a page of 100 rows does not move every task's row.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskFilter {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks whose job id starts with this.
    pub job: Option<String>,
    /// Only tasks with this name.
    pub name: Option<String>,
    /// Only tasks on nodes whose id starts with this.
    pub node: Option<String>,
    /// Only tasks of these jobs, sorted (set by the head for a caller who
    /// sees some namespaces only; an unsorted list may miss rows).
    pub jobs: Option<Vec<JobId>>,
    /// How many rows to return.
    pub newest: u32,
    /// Which time "newest" means.
    pub by: TaskTime,
}

/// A time in a task's life.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskTime {
    /// When it arrived (`submitted_us`).
    #[default]
    Submitted,
    /// When it last started (`started_us`).
    Started,
    /// When it ended (`ended_us`).
    Ended,
}

impl TaskTime {
    /// The field with this name.
    pub fn parse(field: &str) -> Option<TaskTime> {
        match field {
            "submitted_us" => Some(TaskTime::Submitted),
            "started_us" => Some(TaskTime::Started),
            "ended_us" => Some(TaskTime::Ended),
            _ => None,
        }
    }

    /// That time of `t` (tasks without it sort last).
    pub fn of(self, t: &TaskInfo) -> Option<u64> {
        match self {
            TaskTime::Submitted => Some(t.submitted_us),
            TaskTime::Started => t.started_us,
            TaskTime::Ended => t.ended_us,
        }
    }
}

impl TaskFilter {
    /// Whether `t` passes.
    pub fn keeps(&self, t: &TaskInfo) -> bool {
        self.state.is_none_or(|s| s == t.state)
            && self
                .job
                .as_deref()
                .is_none_or(|j| t.job_id.to_string().starts_with(j))
            && self
                .name
                .as_deref()
                .is_none_or(|n| n.eq_ignore_ascii_case(&t.name))
            && self
                .node
                .as_deref()
                .is_none_or(|n| t.node_id.to_string().starts_with(n))
            && self
                .jobs
                .as_ref()
                .is_none_or(|j| j.binary_search(&t.job_id).is_ok())
    }

    /// Keeps the `newest` rows, newest first.
    pub fn newest_first(&self, rows: &mut Vec<TaskInfo>) {
        rows.sort_by_key(|t| std::cmp::Reverse(self.by.of(t)));
        rows.truncate(self.newest as usize);
    }
}

impl TaskState {
    /// The state with this name.
    pub fn parse(s: &str) -> Option<TaskState> {
        [
            TaskState::Queued,
            TaskState::Running,
            TaskState::Infeasible,
            TaskState::Finished,
            TaskState::Failed,
        ]
        .into_iter()
        .find(|t| t.name().eq_ignore_ascii_case(s))
    }
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
    /// Queued, running, finished...
    pub state: TaskState,
    /// The node listing it.
    pub node_id: NodeId,
    /// The worker process running it, when it runs and the pid is known.
    pub worker_pid: Option<u32>,
    /// Resources it asked for.
    pub resources: BTreeMap<String, f64>,
    /// Attempts before this one.
    pub attempt: u32,
    /// When this raylet received it (Unix time, microseconds; 0 if unknown).
    pub submitted_us: u64,
    /// When it last started on a worker.
    pub started_us: Option<u64>,
    /// When it ended.
    pub ended_us: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// One worker process of a raylet.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerInfo {
    /// The raylet's number for it.
    pub worker_id: u64,
    /// Its node.
    pub node_id: NodeId,
    /// Its process, once started.
    pub pid: Option<u32>,
    /// The job whose binary it runs.
    pub job_id: JobId,
    /// `starting`, `idle`, `busy` or `actor`.
    pub state: String,
    /// The task it runs, when busy.
    pub task_id: Option<String>,
    /// The actor it hosts.
    pub actor_id: Option<String>,
    /// GPUs it holds.
    pub gpus: Vec<u32>,
    /// Its output file (stdout and stderr), in the raylet's session.
    pub log_file: Option<String>,
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
    /// The job of the process that created this copy; `None` for copies
    /// the raylet made itself (pulled from a peer, a job's binary) or whose
    /// creator is gone.
    pub job_id: Option<JobId>,
}

/// A line (or a fold of repeated lines) a worker wrote, on its way to the
/// driver of its job.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct LogLine {
    /// What printed it: `(square pid=1234 node=n-1a2b3c4d)`.
    pub prefix: String,
    /// The text, without its newline.
    pub text: String,
    /// From stderr.
    pub stderr: bool,
    /// More identical lines folded into this one (0: none).
    pub repeated: u32,
}

/// Part of a worker's log file.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub enum LogChunk {
    /// Bytes from the asked offset; `next` is where to read on.
    Data {
        /// The bytes (at most [`MAX_LOG_CHUNK`]).
        data: Vec<u8>,
        /// The offset after them.
        next: u64,
    },
    /// There is no such log.
    Missing(String),
}

/// Most bytes of a log returned at once.
pub const MAX_LOG_CHUNK: u64 = 1 << 20;

/// One node's counters, for the head's `/metrics`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct NodeMetrics {
    /// The node.
    pub node_id: Option<NodeId>,
    /// Object store segment bytes.
    pub store_capacity: u64,
    /// Bytes of the segment in use.
    pub store_used: u64,
    /// Objects held (in memory or spilled).
    pub store_objects: u64,
    /// Bytes of objects on disk.
    pub store_spilled_bytes: u64,
    /// Objects ever spilled.
    pub spills: u64,
    /// Objects ever evicted.
    pub evictions: u64,
    /// Object bytes sent to other nodes.
    pub bytes_sent: u64,
    /// Object bytes pulled from other nodes.
    pub bytes_received: u64,
    /// Tasks queued here now.
    pub tasks_queued: u64,
    /// Tasks running here now.
    pub tasks_running: u64,
    /// Tasks that returned a result here, ever.
    pub tasks_finished: u64,
    /// Tasks that failed here, ever.
    pub tasks_failed: u64,
    /// Run time of the tasks that ended here (seconds).
    pub task_seconds: crate::metrics::Histogram,
    /// Worker processes.
    pub workers: u64,
    /// Leases granted and not ended now (their tasks bypass the raylet),
    /// counting those whose worker is still starting.
    pub leases_held: u64,
    /// Lease requests waiting their turn in the queue now.
    pub leases_waiting: u64,
    /// Leases granted here, ever.
    pub leases_granted: u64,
    /// Work refused here, ever, because it was sent for another
    /// incarnation of this node (DF-6).
    pub work_refused: u64,
    /// Users' metrics from this node's processes.
    pub user: Vec<crate::metrics::MetricValue>,
}
