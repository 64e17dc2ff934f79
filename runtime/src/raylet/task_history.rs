//! What a raylet remembers of its tasks' lives, for `prism list tasks`, the
//! dashboard and `prism timeline`: when each task arrived, started and
//! ended, and the last `cap` finished ones. Pure: times are passed in.
//!
//! Invariants:
//!
//! - **TH-1** a task is in `open` from its submission here until it ends
//!   here or is forwarded to a peer (which then remembers it); a forwarded
//!   task is never listed twice; one the peer hands back (or fails to
//!   take) is submitted here again, keeping when it first arrived, so that
//!   it is listed where it ends (a forward that failed after the peer took
//!   the task, its node cut off but alive, may list it there too);
//! - **TH-2** at most `cap` finished tasks are kept; the oldest go first.
//! - **TH-3** work a worker took directly (a direct actor call, a leased
//!   task) is listed from its worker's reports: running from the report
//!   that it started until the one that it ended, or until its worker
//!   exits (then failed with that cause); it is counted once, as it ends.
//! - **TH-4** tasks waiting in an owner for its leases are listed queued
//!   from that owner's last snapshot (at most [`MAX_WAITING`] per owner),
//!   from when this raylet first heard of each, until a later snapshot
//!   leaves them out or the owner's connection closes; one listed here
//!   otherwise (queued, running or ended) is listed only so.

use crate::ids::{JobId, NodeId, TaskId};
use crate::proto::common::Resources;
use crate::proto::direct::TaskEvent;
use crate::proto::state::{TaskFilter, TaskInfo, TaskState};
use crate::proto::task::TaskSpec;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// How many finished tasks a raylet remembers by default (Ray's GCS keeps
/// 100,000 task events for the whole cluster).
pub const DEFAULT_TASK_HISTORY: usize = 20_000;
/// Tasks sent to peers whose arrival times are kept at most (beyond, one
/// that comes back is listed from its return).
const MAX_AWAY: usize = 100_000;
/// Distinct task names kept interned before the cache starts over.
const MAX_NAMES: usize = 10_000;
/// Tasks listed waiting in one owner at most (TH-4); the owner sends no
/// more than this either.
pub const MAX_WAITING: usize = 1_000;

/// What is remembered of one task: compact (names are shared, ids are not
/// formatted) so that remembering costs the task path almost nothing; it
/// becomes a [`TaskInfo`] only when listed.
#[derive(Debug, Clone)]
pub struct Record {
    /// The task.
    pub task_id: TaskId,
    /// Its job.
    pub job_id: JobId,
    /// Its display name.
    pub name: Arc<str>,
    /// Its function.
    pub function: Arc<str>,
    /// `task`, `actor_creation` or `actor_call`.
    pub kind: &'static str,
    /// What it asked for.
    pub resources: Resources,
    /// Attempts before this one.
    pub attempt: u32,
    /// Where it is.
    pub state: TaskState,
    /// Its worker's pid, once started.
    pub worker_pid: Option<u32>,
    /// When it arrived.
    pub submitted_us: u64,
    /// When it last started.
    pub started_us: Option<u64>,
    /// When it ended.
    pub ended_us: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

impl Record {
    /// Its row on node `node`.
    pub fn to_info(&self, node: NodeId) -> TaskInfo {
        TaskInfo {
            task_id: self.task_id.to_string(),
            job_id: self.job_id,
            name: self.name.to_string(),
            function: self.function.to_string(),
            kind: self.kind.to_string(),
            state: self.state,
            node_id: node,
            worker_pid: self.worker_pid,
            resources: self
                .resources
                .to_set()
                .iter()
                .map(|(k, q)| (k.to_string(), q.as_f64()))
                .collect(),
            attempt: self.attempt,
            submitted_us: self.submitted_us,
            started_us: self.started_us,
            ended_us: self.ended_us,
            error: self.error.clone(),
        }
    }

    /// Whether it passes `f` on node `node` (`node` formatted once by the caller).
    pub fn passes(&self, f: &TaskFilter, node: &str) -> bool {
        f.state.is_none_or(|s| s == self.state)
            && f.name
                .as_deref()
                .is_none_or(|n| n.eq_ignore_ascii_case(&self.name))
            && f.node.as_deref().is_none_or(|n| node.starts_with(n))
            && f.job
                .as_deref()
                .is_none_or(|j| self.job_id.to_string().starts_with(j))
            && f.jobs
                .as_ref()
                .is_none_or(|j| j.binary_search(&self.job_id).is_ok())
    }

    /// The time `f` orders by.
    pub fn time(&self, f: &TaskFilter) -> Option<u64> {
        match f.by {
            crate::proto::state::TaskTime::Submitted => Some(self.submitted_us),
            crate::proto::state::TaskTime::Started => self.started_us,
            crate::proto::state::TaskTime::Ended => self.ended_us,
        }
    }
}

/// A raylet's task history.
#[derive(Debug)]
pub struct TaskHistory {
    cap: usize,
    open: HashMap<TaskId, Record>,
    /// Direct work reported running (TH-3).
    direct: HashMap<TaskId, Record>,
    done: VecDeque<Record>,
    /// When each task sent to a peer first arrived here (TH-1), until the
    /// peer answers for it.
    away: HashMap<TaskId, u64>,
    names: HashSet<Arc<str>>,
    /// Tasks waiting in owners for their leases, by owner connection, as
    /// each last listed them (TH-4).
    waiting: HashMap<u64, Vec<Record>>,
    /// Tasks that returned a result, ever.
    pub finished_total: u64,
    /// Tasks that failed, ever.
    pub failed_total: u64,
    /// Their run times (start to end), seconds.
    pub seconds: crate::metrics::Histogram,
}

impl TaskHistory {
    /// Remembers up to `cap` finished tasks.
    pub fn new(cap: usize) -> TaskHistory {
        TaskHistory {
            cap,
            open: HashMap::new(),
            direct: HashMap::new(),
            done: VecDeque::new(),
            away: HashMap::new(),
            names: HashSet::new(),
            waiting: HashMap::new(),
            finished_total: 0,
            failed_total: 0,
            seconds: Default::default(),
        }
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.names.get(s) {
            return a.clone();
        }
        if self.names.len() >= MAX_NAMES {
            self.names.clear();
        }
        let a: Arc<str> = Arc::from(s);
        self.names.insert(a.clone());
        a
    }

    /// A task arrived (state `Queued`).
    pub fn submitted(&mut self, spec: &TaskSpec, kind: &'static str, now_us: u64) {
        let record = Record {
            task_id: spec.task_id,
            job_id: spec.job_id,
            name: self.intern(&spec.name),
            function: self.intern(&spec.function),
            kind,
            resources: spec.resources.clone(),
            attempt: spec.attempt,
            state: TaskState::Queued,
            worker_pid: None,
            submitted_us: self.away.remove(&spec.task_id).unwrap_or(now_us),
            started_us: None,
            ended_us: None,
            error: None,
        };
        self.open.insert(spec.task_id, record);
    }

    /// It started on a worker (again, after a retry).
    pub fn started(&mut self, id: TaskId, pid: Option<u32>, attempt: u32, now_us: u64) {
        if let Some(t) = self.open.get_mut(&id) {
            t.state = TaskState::Running;
            t.started_us = Some(now_us);
            t.worker_pid = pid;
            t.attempt = attempt;
        }
    }

    /// It ended, with `error` if it failed.
    pub fn finished(&mut self, id: TaskId, error: Option<String>, now_us: u64) {
        let Some(t) = self.open.remove(&id) else {
            // Its peer's answer: the peer lists it.
            self.away.remove(&id);
            return;
        };
        self.close(t, error, now_us);
    }

    /// A worker (pid `pid`) reports work it took directly (TH-3);
    /// `exited`: its exit was handled before this report was read.
    pub fn reported(&mut self, ev: TaskEvent, pid: Option<u32>, exited: bool) {
        let record = Record {
            task_id: ev.task_id,
            job_id: ev.job_id,
            name: self.intern(&ev.name),
            function: self.intern(&ev.function),
            kind: if ev.actor_call { "actor_call" } else { "task" },
            resources: ev.resources,
            attempt: ev.attempt,
            state: TaskState::Running,
            worker_pid: pid,
            submitted_us: ev.arrived_us,
            started_us: ev.started_us,
            ended_us: None,
            error: None,
        };
        match ev.ended_us {
            // Its worker's exit was handled before this report: it ended
            // with it.
            None if exited => {
                self.close(record, Some("its worker exited".into()), now_us());
            }
            None => {
                self.direct.insert(ev.task_id, record);
            }
            Some(end) => {
                self.direct.remove(&ev.task_id);
                self.close(record, ev.error, end);
            }
        }
    }

    /// The worker with pid `pid` exited: the direct work it reported
    /// running failed with it (TH-3).
    pub fn worker_exited(&mut self, pid: u32, cause: &str, now_us: u64) {
        let gone: Vec<TaskId> = self
            .direct
            .iter()
            .filter(|(_, r)| r.worker_pid == Some(pid))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(r) = self.direct.remove(&id) {
                self.close(r, Some(cause.to_string()), now_us);
            }
        }
    }

    /// Owner `conn` (a process of `job`) lists the tasks waiting in it
    /// for its leases now (TH-4): they replace what it listed before.
    pub fn owner_waiting(&mut self, conn: u64, job: JobId, tasks: Vec<TaskEvent>, now_us: u64) {
        let before: HashMap<TaskId, u64> = self
            .waiting
            .remove(&conn)
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.task_id, r.submitted_us))
            .collect();
        let mut rows = Vec::with_capacity(tasks.len().min(MAX_WAITING));
        for ev in tasks.into_iter().take(MAX_WAITING) {
            rows.push(Record {
                task_id: ev.task_id,
                // The connection's job, never the report's word.
                job_id: job,
                name: self.intern(&ev.name),
                function: self.intern(&ev.function),
                kind: "task",
                resources: ev.resources,
                attempt: ev.attempt,
                state: TaskState::Queued,
                worker_pid: None,
                submitted_us: before.get(&ev.task_id).copied().unwrap_or(now_us),
                started_us: None,
                ended_us: None,
                error: None,
            });
        }
        if !rows.is_empty() {
            self.waiting.insert(conn, rows);
        }
    }

    /// Owner `conn`'s connection closed: nothing waits in it any more.
    pub fn owner_gone(&mut self, conn: u64) {
        self.waiting.remove(&conn);
    }

    /// Tasks waiting in owners (TH-4), less any listed here otherwise.
    pub fn waiting(&self) -> Vec<&Record> {
        if self.waiting.is_empty() {
            return Vec::new();
        }
        // By attempt: a retry waiting in its owner is listed, though the
        // attempt before it ended.
        let ended: HashSet<(TaskId, u32)> =
            self.done.iter().map(|r| (r.task_id, r.attempt)).collect();
        self.waiting
            .values()
            .flatten()
            .filter(|r| {
                let id = &r.task_id;
                !self.open.contains_key(id)
                    && !self.direct.contains_key(id)
                    && !ended.contains(&(*id, r.attempt))
            })
            .collect()
    }

    /// Direct work running here, as its workers last reported (TH-3).
    pub fn direct_running(&self) -> impl Iterator<Item = &Record> {
        self.direct.values()
    }

    fn close(&mut self, mut t: Record, error: Option<String>, now_us: u64) {
        t.state = if error.is_some() {
            TaskState::Failed
        } else {
            TaskState::Finished
        };
        t.ended_us = Some(now_us);
        t.error = error;
        if t.state == TaskState::Failed {
            self.failed_total += 1;
        } else {
            self.finished_total += 1;
        }
        if let Some(start) = t.started_us {
            self.seconds
                .observe(now_us.saturating_sub(start) as f64 / 1e6);
        }
        if self.cap == 0 {
            return;
        }
        if self.done.len() == self.cap {
            self.done.pop_front();
        }
        self.done.push_back(t);
    }

    /// It went to a peer, which remembers it from now on (TH-1); `sent`:
    /// this raylet sent it (and hears back), rather than handing it back
    /// to its sender.
    pub fn forwarded(&mut self, id: TaskId, sent: bool) {
        if let Some(t) = self.open.remove(&id) {
            if sent && self.away.len() < MAX_AWAY {
                self.away.insert(id, t.submitted_us);
            }
        }
    }

    /// Its record while it is open (for its times).
    pub fn open(&self, id: &TaskId) -> Option<&Record> {
        self.open.get(id)
    }

    /// The finished tasks, oldest first.
    pub fn done(&self) -> impl DoubleEndedIterator<Item = &Record> {
        self.done.iter()
    }
}

/// Now, in microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "task_history_tests.rs"]
mod tests;
