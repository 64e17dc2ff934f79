//! The raylet's side of the state API: its tasks (from the dispatcher's
//! pure [`Dispatcher::task_rows`](super::dispatch::Dispatcher::task_rows),
//! with worker pids and times added, then the finished ones it remembers),
//! its objects and its workers, for the head to merge; and the task
//! events workers report for the work they took directly (TH-3).

use super::dispatch::state::kind_name;
use super::dispatch::WorkerId;
use super::service::TaskService;
use crate::proto::direct::TaskEvents;
use crate::proto::state::{
    NodeMetrics, ObjectInfo, StateQuery, StateReply, TaskFilter, TaskInfo, TaskState, WorkerInfo,
};
use crate::proto::task::TaskSpec;

impl TaskService {
    /// Answers a head's state query.
    pub fn state(&self, query: StateQuery) -> StateReply {
        match query {
            StateQuery::Tasks => StateReply::Tasks(self.list_tasks()),
            StateQuery::TaskPage(mut f) => {
                // Searched, not scanned: sorted here whoever sent it.
                if let Some(jobs) = &mut f.jobs {
                    jobs.sort();
                    jobs.dedup();
                }
                self.task_page(&f)
            }
            StateQuery::Objects => StateReply::Objects(self.list_objects()),
            StateQuery::Workers => StateReply::Workers(self.list_workers()),
            StateQuery::Metrics => StateReply::Metrics(self.metrics()),
            StateQuery::PidJobs { pid } => StateReply::Jobs(self.pid_jobs(pid)),
        }
    }

    /// The jobs worker `pid` served here (see [`StateQuery::PidJobs`]).
    fn pid_jobs(&self, pid: u32) -> Vec<crate::ids::JobId> {
        let mine = Some(pid);
        let workers = self.list_workers().into_iter().filter(|w| w.pid == mine);
        let mut jobs: Vec<_> = workers.map(|w| w.job_id).collect();
        let live = self.list_live_tasks().into_iter();
        jobs.extend(live.filter(|t| t.worker_pid == mine).map(|t| t.job_id));
        let history = self.lock_history();
        let done = history.done().filter(|r| r.worker_pid == mine);
        jobs.extend(done.map(|r| r.job_id));
        jobs.sort();
        jobs.dedup();
        jobs
    }

    /// A task's row as this node lists it.
    pub(super) fn task_row(&self, spec: &TaskSpec, state: TaskState) -> TaskInfo {
        TaskInfo {
            task_id: spec.task_id.to_string(),
            job_id: spec.job_id,
            name: spec.name.clone(),
            function: spec.function.clone(),
            kind: kind_name(&spec.kind).to_string(),
            state,
            node_id: self.node(),
            worker_pid: None,
            resources: spec
                .resources
                .to_set()
                .iter()
                .map(|(k, q)| (k.to_string(), q.as_f64()))
                .collect(),
            attempt: spec.attempt,
            submitted_us: 0,
            started_us: None,
            ended_us: None,
            error: None,
        }
    }

    fn list_tasks(&self) -> Vec<TaskInfo> {
        let node = self.node();
        let mut out = self.list_live_tasks();
        out.extend(self.lock_history().done().map(|r| r.to_info(node)));
        out
    }

    /// Tasks queued or running here, with their times.
    fn list_live_tasks(&self) -> Vec<TaskInfo> {
        let rows = self.disp().task_rows();
        let node = self.node();
        let history = self.lock_history();
        let direct = history.direct_running().map(|r| r.to_info(node));
        let waiting: Vec<TaskInfo> = history.waiting().iter().map(|r| r.to_info(node)).collect();
        rows.into_iter()
            // A lease holds a worker for its owner's tasks, listed one by
            // one from the worker's reports: the lease itself is no task.
            .filter(|r| r.spec.function != super::dispatch::LEASE_METHOD)
            .map(|r| {
                let mut t = self.task_row(&r.spec, r.state);
                t.worker_pid = r.worker.and_then(|w| self.pids.get(&w).map(|p| *p));
                if let Some(h) = history.open(&r.spec.task_id) {
                    t.submitted_us = h.submitted_us;
                    t.started_us = h.started_us.filter(|_| r.state == TaskState::Running);
                }
                t
            })
            .chain(direct)
            .chain(waiting)
            .collect()
    }

    /// The newest tasks passing `f`, and how many pass: the finished ones
    /// are filtered in place, and only the kept rows are copied.
    fn task_page(&self, f: &TaskFilter) -> StateReply {
        let live: Vec<TaskInfo> = self
            .list_live_tasks()
            .into_iter()
            .filter(|t| f.keeps(t))
            .collect();
        let node = self.node();
        let node_name = node.to_string();
        let history = self.lock_history();
        let mut done: Vec<_> = history.done().filter(|r| r.passes(f, &node_name)).collect();
        let total = (live.len() + done.len()) as u64;
        done.sort_by_key(|r| std::cmp::Reverse(r.time(f)));
        let mut rows = live;
        rows.extend(
            done.into_iter()
                .take(f.newest as usize)
                .map(|r| r.to_info(node)),
        );
        drop(history);
        f.newest_first(&mut rows);
        StateReply::TaskPage { rows, total }
    }

    fn list_objects(&self) -> Vec<ObjectInfo> {
        let node_id = self.node();
        self.store
            .list()
            .into_iter()
            .map(|(id, i)| ObjectInfo {
                object_id: id.to_string(),
                node_id,
                size: i.size as u64,
                sealed: i.sealed,
                pinned: i.pinned,
                spilled: i.spilled,
                refs: i.refs,
                job_id: i.tag.map(crate::ids::JobId),
            })
            .collect()
    }

    /// The job of local process `pid`: a worker's by the raylet's own
    /// record, else a driver's as its hello said.
    pub(super) fn job_of_pid(&self, pid: u32) -> Option<crate::ids::JobId> {
        let worker = self
            .pids
            .iter()
            .find(|e| *e.value() == pid)
            .map(|e| *e.key());
        match worker {
            Some(w) => self.disp().job_of(w),
            None => self.driver_pids.get(&pid).map(|j| *j),
        }
    }

    fn metrics(&self) -> NodeMetrics {
        use std::sync::atomic::Ordering::Relaxed;
        let store = self.store.stats();
        let disp = self.disp().stats();
        let history = self.lock_history();
        NodeMetrics {
            node_id: Some(self.node()),
            store_capacity: store.capacity as u64,
            store_used: store.capacity.saturating_sub(store.free) as u64,
            store_objects: store.objects as u64,
            store_spilled_bytes: store.spilled_bytes as u64,
            spills: store.spills,
            evictions: store.evictions,
            bytes_sent: self.store.bytes_sent.load(Relaxed),
            bytes_received: self.store.bytes_received.load(Relaxed),
            tasks_queued: disp.queued as u64,
            tasks_running: disp.running as u64,
            tasks_finished: history.finished_total,
            tasks_failed: history.failed_total,
            task_seconds: history.seconds.clone(),
            workers: disp.workers as u64,
            leases_held: disp.leases_held as u64,
            leases_waiting: disp.leases_waiting as u64,
            leases_granted: disp.leases_granted,
            work_refused: disp.work_refused,
            user: self
                .user_metrics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values(),
        }
    }

    fn list_workers(&self) -> Vec<WorkerInfo> {
        let node_id = self.node();
        let rows = self.disp().worker_rows();
        rows.into_iter()
            .map(|w| {
                let pid = self.pids.get(&w.id).map(|p| *p);
                WorkerInfo {
                    worker_id: w.id,
                    node_id,
                    pid,
                    job_id: w.job,
                    state: w.state.to_string(),
                    task_id: w.task.map(|t| t.to_string()),
                    actor_id: w.actor.map(|a| a.to_string()),
                    gpus: w.gpus,
                    log_file: pid.and_then(|p| self.worker_log(p)),
                }
            })
            .collect()
    }
}

impl TaskService {
    /// A worker's task events (TH-3). Its pid is also its connection's
    /// peer's: the batch may be read after the worker's exit was handled
    /// (its pid forgotten), and its tasks keep the pid they ran in.
    pub(super) fn task_events(&self, w: WorkerId, peer: Option<u32>, batch: TaskEvents) {
        let live = self.pids.get(&w).map(|p| *p);
        let mut history = self.lock_history();
        history.finished_total += batch.unlisted_finished;
        history.failed_total += batch.unlisted_failed;
        for ev in batch.events {
            history.reported(ev, live.or(peer), live.is_none());
        }
    }
}
