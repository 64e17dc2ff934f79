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

    /// A worker (pid `pid`) reports work it took directly (TH-3).
    pub fn reported(&mut self, ev: TaskEvent, pid: Option<u32>) {
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
            None if pid.is_none() => {
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
mod tests {
    use super::*;
    use crate::proto::task::TaskKind;

    fn spec(id: TaskId) -> TaskSpec {
        TaskSpec::new(id, JobId::random(), "f", "f", TaskKind::Task)
    }

    #[test]
    fn a_task_is_open_until_it_ends_then_done_with_its_times() {
        let mut h = TaskHistory::new(10);
        let id = TaskId([1; 16]);
        h.submitted(&spec(id), "task", 100);
        h.started(id, Some(42), 0, 150);
        assert_eq!(h.open(&id).map(|t| t.state), Some(TaskState::Running));
        h.finished(id, None, 300);
        assert!(h.open(&id).is_none());
        let done: Vec<_> = h.done().collect();
        assert_eq!(done.len(), 1);
        let t = done[0].to_info(NodeId::random());
        assert_eq!(
            (
                t.state,
                t.submitted_us,
                t.started_us,
                t.ended_us,
                t.worker_pid
            ),
            (TaskState::Finished, 100, Some(150), Some(300), Some(42))
        );
        assert_eq!((t.name.as_str(), t.kind.as_str()), ("f", "task"));
        assert_eq!(
            (h.finished_total, h.failed_total, h.seconds.count),
            (1, 0, 1)
        );
    }

    #[test]
    fn a_failure_keeps_its_reason() {
        let mut h = TaskHistory::new(10);
        let id = TaskId([2; 16]);
        h.submitted(&spec(id), "task", 1);
        h.finished(id, Some("boom".into()), 2);
        let t = h.done().next().unwrap();
        assert_eq!(
            (t.state, t.error.as_deref()),
            (TaskState::Failed, Some("boom"))
        );
    }

    #[test]
    fn forwarded_tasks_are_forgotten_here_th1() {
        let mut h = TaskHistory::new(10);
        let id = TaskId([3; 16]);
        h.submitted(&spec(id), "task", 1);
        h.forwarded(id, true);
        h.finished(id, None, 5);
        assert_eq!(h.done().count(), 0);
        assert!(h.away.is_empty(), "the peer's answer ends its wait");
        // Handed back by the peer: here again, as of when it first came,
        // and listed where it ends.
        let back = TaskId([8; 16]);
        h.submitted(&spec(back), "task", 2);
        h.forwarded(back, true);
        h.submitted(&spec(back), "task", 6);
        h.started(back, Some(9), 0, 7);
        h.finished(back, None, 8);
        let done: Vec<_> = h
            .done()
            .map(|t| (t.state, t.submitted_us, t.ended_us))
            .collect();
        assert_eq!(done, vec![(TaskState::Finished, 2, Some(8))]);
        // One this raylet hands back to its sender is not waited for.
        h.submitted(&spec(id), "task", 9);
        h.forwarded(id, false);
        assert!(h.away.is_empty());
    }

    #[test]
    fn only_the_last_cap_finished_tasks_are_kept_th2() {
        let mut h = TaskHistory::new(3);
        for i in 0..5u8 {
            let id = TaskId([i; 16]);
            h.submitted(&spec(id), "task", i as u64);
            h.finished(id, None, 10 + i as u64);
        }
        let kept: Vec<u64> = h.done().map(|t| t.submitted_us).collect();
        assert_eq!(kept, vec![2, 3, 4]);
    }

    fn event(id: TaskId, ended: Option<u64>, error: Option<&str>) -> TaskEvent {
        TaskEvent {
            task_id: id,
            job_id: JobId::random(),
            name: "Log.push".into(),
            function: "Log::push".into(),
            actor_call: true,
            resources: Resources::default(),
            attempt: 0,
            arrived_us: 10,
            started_us: Some(11),
            ended_us: ended,
            error: error.map(String::from),
        }
    }

    #[test]
    fn direct_work_runs_from_its_report_until_it_ends_th3() {
        let mut h = TaskHistory::new(10);
        let id = TaskId([4; 16]);
        h.reported(event(id, None, None), Some(7));
        let running: Vec<_> = h.direct_running().collect();
        assert_eq!(running.len(), 1);
        assert_eq!(
            (running[0].state, running[0].kind, running[0].worker_pid),
            (TaskState::Running, "actor_call", Some(7))
        );
        h.reported(event(id, Some(20), None), Some(7));
        assert_eq!(h.direct_running().count(), 0);
        let t = h.done().next().unwrap();
        assert_eq!(
            (t.state, t.submitted_us, t.started_us, t.ended_us),
            (TaskState::Finished, 10, Some(11), Some(20))
        );
        // One that ends within one report is listed (and counted) once.
        h.reported(event(TaskId([5; 16]), Some(30), Some("boom")), Some(7));
        assert_eq!((h.finished_total, h.failed_total), (1, 1));
        assert_eq!(h.done().count(), 2);
    }

    #[test]
    fn direct_work_fails_with_its_worker_th3() {
        let mut h = TaskHistory::new(10);
        h.reported(event(TaskId([6; 16]), None, None), Some(7));
        h.reported(event(TaskId([7; 16]), None, None), Some(8));
        h.worker_exited(7, "killed by signal 9", 40);
        let failed: Vec<_> = h.done().collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(
            (
                failed[0].task_id,
                failed[0].state,
                failed[0].error.as_deref()
            ),
            (
                TaskId([6; 16]),
                TaskState::Failed,
                Some("killed by signal 9")
            )
        );
        assert_eq!(h.direct_running().count(), 1);
        // A running report read after its worker's exit: ended with it.
        h.reported(event(TaskId([8; 16]), None, None), None);
        assert_eq!(h.direct_running().count(), 1, "only the live worker's");
        assert_eq!(h.done().count(), 2);
    }

    #[test]
    fn names_are_shared_and_filters_apply_to_records() {
        let mut h = TaskHistory::new(10);
        for i in 0..2u8 {
            h.submitted(&spec(TaskId([i; 16])), "task", 1);
        }
        let (a, b) = (
            h.open(&TaskId([0; 16])).unwrap(),
            h.open(&TaskId([1; 16])).unwrap(),
        );
        assert!(Arc::ptr_eq(&a.name, &b.name));
        let f = TaskFilter {
            state: Some(TaskState::Queued),
            name: Some("F".into()),
            node: Some("n-ab".into()),
            ..Default::default()
        };
        assert!(a.passes(&f, "n-abcdef"));
        assert!(!a.passes(&f, "n-cdef"));
    }
}
