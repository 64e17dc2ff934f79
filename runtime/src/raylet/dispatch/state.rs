//! Read-only views of the dispatcher for the state API (`prism list
//! tasks`): what is queued here and what runs on which worker. Pure: no
//! pids, no node status (the shell adds those).

use super::{Dispatcher, Queued, WorkerId, WorkerState};
use crate::proto::state::TaskState;
use crate::proto::task::{TaskKind, TaskSpec};

/// One task held by the dispatcher.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    /// The task.
    pub spec: TaskSpec,
    /// Queued or running.
    pub state: TaskState,
    /// The worker it runs on (or whose actor it waits for).
    pub worker: Option<WorkerId>,
}

/// `task`, `actor_creation` or `actor_call`.
pub fn kind_name(kind: &TaskKind) -> &'static str {
    match kind {
        TaskKind::Task => "task",
        TaskKind::CreateActor(_) => "actor_creation",
        TaskKind::ActorCall(_) => "actor_call",
    }
}

impl Dispatcher {
    /// Every task queued or running here: the queue, the running table
    /// (actor constructors included), calls held by local actors and calls
    /// waiting for an actor's constructor to be scheduled.
    pub fn task_rows(&self) -> Vec<TaskRow> {
        let row = |q: &Queued, state, worker| TaskRow {
            spec: q.spec.clone(),
            state,
            worker,
        };
        let mut out: Vec<TaskRow> = self
            .queue
            .iter()
            .map(|q| row(q, TaskState::Queued, None))
            .collect();
        out.extend(
            self.running
                .values()
                .map(|r| row(&r.task, TaskState::Running, Some(r.worker))),
        );
        for (q, worker, running) in self.actor_calls() {
            let state = if running {
                TaskState::Running
            } else {
                TaskState::Queued
            };
            out.push(row(q, state, Some(worker)));
        }
        for q in self.pre_waiting.values().flatten() {
            out.push(row(q, TaskState::Queued, None));
        }
        for p in &self.parked {
            out.push(row(&p.q, TaskState::Infeasible, None));
        }
        out
    }
}

/// One worker process the dispatcher knows.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    /// Its number.
    pub id: WorkerId,
    /// Its job.
    pub job: crate::ids::JobId,
    /// `starting`, `idle`, `busy` or `actor`.
    pub state: &'static str,
    /// The task it runs.
    pub task: Option<crate::ids::TaskId>,
    /// The actor it hosts.
    pub actor: Option<crate::ids::ActorId>,
    /// Its GPUs.
    pub gpus: Vec<u32>,
}

impl Dispatcher {
    /// The class of the actor a worker hosts, for its output's prefix.
    pub fn worker_actor_class(&self, worker: WorkerId) -> Option<String> {
        let w = self.workers.get(&worker)?;
        w.actor
            .and_then(|a| self.actors.get(&a))
            .map(|a| a.class_name())
    }

    /// Every worker process, by number.
    pub fn worker_rows(&self) -> Vec<WorkerRow> {
        let mut rows: Vec<WorkerRow> = self
            .workers
            .iter()
            .map(|(id, w)| {
                let (state, task) = match (&w.state, w.actor) {
                    (WorkerState::Starting, _) => ("starting", None),
                    (_, Some(_)) => ("actor", None),
                    (WorkerState::Idle, None) => ("idle", None),
                    (WorkerState::Busy(t), None) => ("busy", Some(*t)),
                };
                WorkerRow {
                    id: *id,
                    job: w.job,
                    state,
                    task,
                    actor: w.actor,
                    gpus: w.gpus.clone(),
                }
            })
            .collect();
        rows.sort_by_key(|r| r.id);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{JobId, NodeId};
    use crate::proto::common::Resources;
    use crate::raylet::dispatch::Owner;
    use prism_scheduler::{NodeResources, Quantity, ResourceSet};

    #[test]
    fn task_rows_show_running_and_queued_tasks() {
        let cpu = ResourceSet::new().with("CPU", Quantity::whole(1));
        let mut d = Dispatcher::new(NodeId::random(), NodeResources::new(cpu.clone()));
        let job = JobId::random();
        let spec = |id: u8| {
            let mut t = TaskSpec::new(crate::ids::TaskId([id; 16]), job, "f", "f", TaskKind::Task);
            t.resources = Resources::from(&cpu);
            t
        };
        let _ = d.submit(spec(1), Owner::Local(1));
        let _ = d.submit(spec(2), Owner::Local(1));
        let mut rows = d.task_rows();
        rows.sort_by_key(|r| r.spec.task_id);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].state, TaskState::Running);
        assert!(rows[0].worker.is_some(), "a running task names its worker");
        assert_eq!((rows[1].state, rows[1].worker), (TaskState::Queued, None));
        assert_eq!(kind_name(&rows[1].spec.kind), "task");
        let workers = d.worker_rows();
        assert_eq!(workers.len(), 1, "{workers:?}");
        assert_eq!((workers[0].state, workers[0].job), ("starting", job));
    }
}
