//! The raylet's side of the state API: its tasks (from the dispatcher's
//! pure [`Dispatcher::task_rows`](super::dispatch::Dispatcher::task_rows),
//! with worker pids added) and its objects, for the head to merge.

use super::dispatch::state::kind_name;
use super::service::TaskService;
use crate::proto::state::{ObjectInfo, StateQuery, StateReply, TaskInfo};

impl TaskService {
    /// Answers a head's state query.
    pub fn state(&self, query: StateQuery) -> StateReply {
        match query {
            StateQuery::Tasks => StateReply::Tasks(self.list_tasks()),
            StateQuery::Objects => StateReply::Objects(self.list_objects()),
        }
    }

    fn list_tasks(&self) -> Vec<TaskInfo> {
        let node_id = self.node();
        let rows = self.disp().task_rows();
        rows.into_iter()
            .map(|r| TaskInfo {
                task_id: r.spec.task_id.to_string(),
                job_id: r.spec.job_id,
                name: r.spec.name.clone(),
                function: r.spec.function.clone(),
                kind: kind_name(&r.spec.kind).to_string(),
                state: r.state,
                node_id,
                worker_pid: r.worker.and_then(|w| self.pids.get(&w).map(|p| *p)),
                resources: r
                    .spec
                    .resources
                    .to_set()
                    .iter()
                    .map(|(k, q)| (k.to_string(), q.as_f64()))
                    .collect(),
                attempt: r.spec.attempt,
            })
            .collect()
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
            })
            .collect()
    }
}
