//! What a raylet remembers of its tasks' lives, for `prism list tasks`, the
//! dashboard and `prism timeline`: when each task arrived, started and
//! ended, and the last `cap` finished ones. Pure: times are passed in.
//!
//! Invariants:
//!
//! - **TH-1** a task is in `open` from its submission here until it ends
//!   here or is forwarded to a peer (which then remembers it); a forwarded
//!   task is never listed twice;
//! - **TH-2** at most `cap` finished tasks are kept; the oldest go first.

use crate::ids::TaskId;
use crate::proto::state::{TaskInfo, TaskState};
use std::collections::{HashMap, VecDeque};

/// How many finished tasks a raylet remembers by default (Ray's GCS keeps
/// 100,000 task events for the whole cluster).
pub const DEFAULT_TASK_HISTORY: usize = 20_000;

/// A raylet's task history.
#[derive(Debug)]
pub struct TaskHistory {
    cap: usize,
    open: HashMap<TaskId, TaskInfo>,
    done: VecDeque<TaskInfo>,
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
            done: VecDeque::new(),
            finished_total: 0,
            failed_total: 0,
            seconds: Default::default(),
        }
    }

    /// A task arrived (its row in state `Queued`, `submitted_us` set).
    pub fn submitted(&mut self, id: TaskId, info: TaskInfo) {
        self.open.insert(id, info);
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
        let Some(mut t) = self.open.remove(&id) else {
            return;
        };
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

    /// It went to a peer, which remembers it from now on (TH-1).
    pub fn forwarded(&mut self, id: TaskId) {
        self.open.remove(&id);
    }

    /// Its row while it is open (for its times).
    pub fn open(&self, id: &TaskId) -> Option<&TaskInfo> {
        self.open.get(id)
    }

    /// The finished tasks, oldest first.
    pub fn done(&self) -> impl DoubleEndedIterator<Item = &TaskInfo> {
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
    use crate::ids::{JobId, NodeId};

    fn row(id: TaskId, at: u64) -> TaskInfo {
        TaskInfo {
            task_id: id.to_string(),
            job_id: JobId::random(),
            name: "f".into(),
            function: "f".into(),
            kind: "task".into(),
            state: TaskState::Queued,
            node_id: NodeId::random(),
            worker_pid: None,
            resources: Default::default(),
            attempt: 0,
            submitted_us: at,
            started_us: None,
            ended_us: None,
            error: None,
        }
    }

    #[test]
    fn a_task_is_open_until_it_ends_then_done_with_its_times() {
        let mut h = TaskHistory::new(10);
        let id = TaskId([1; 16]);
        h.submitted(id, row(id, 100));
        h.started(id, Some(42), 0, 150);
        assert_eq!(h.open(&id).map(|t| t.state), Some(TaskState::Running));
        h.finished(id, None, 300);
        assert!(h.open(&id).is_none());
        let done: Vec<_> = h.done().collect();
        assert_eq!(done.len(), 1);
        let t = done[0];
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
    }

    #[test]
    fn a_failure_keeps_its_reason() {
        let mut h = TaskHistory::new(10);
        let id = TaskId([2; 16]);
        h.submitted(id, row(id, 1));
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
        h.submitted(id, row(id, 1));
        h.forwarded(id);
        h.finished(id, None, 5);
        assert_eq!(h.done().count(), 0);
    }

    #[test]
    fn only_the_last_cap_finished_tasks_are_kept_th2() {
        let mut h = TaskHistory::new(3);
        for i in 0..5u8 {
            let id = TaskId([i; 16]);
            h.submitted(id, row(id, i as u64));
            h.finished(id, None, 10 + i as u64);
        }
        let kept: Vec<u64> = h.done().map(|t| t.submitted_us).collect();
        assert_eq!(kept, vec![2, 3, 4]);
    }
}
