//! The worker pool: dispatching a task to an idle worker of its job (or a
//! new one), workers becoming ready, tasks finishing, workers dying (D-3,
//! D-4), and CPUs lent out while a task blocks in `get`.

use super::{Action, Dispatcher, Queued, Running, Worker, WorkerId, WorkerState};
use crate::proto::task::{Failure, Outcome, TaskKind};
use prism_scheduler::{Quantity, ResourceSet, CPU};

impl Dispatcher {
    pub(super) fn dispatch(&mut self, q: Queued, out: &mut Vec<Action>) {
        let gpus = match self.take(&q.spec.strategy, &q.request) {
            Ok(g) => g,
            Err(_) => {
                self.queue.push_front(q.class(), q);
                return;
            }
        };
        let indices: Vec<u32> = gpus.iter().map(|(i, _)| *i).collect();
        let job = q.spec.job_id;
        if let TaskKind::CreateActor(create) = &q.spec.kind {
            let create = create.clone();
            self.start_actor(q, create, gpus, out);
            return;
        }
        let idle = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.reusable(self.me) && w.actor.is_none() && w.job == job && w.gpus == indices
            })
            .map(|(id, _)| *id)
            .min();
        let worker = match idle {
            Some(id) => {
                out.push(Action::Execute {
                    worker: id,
                    task: q.spec.clone(),
                    gpus: indices.clone(),
                });
                id
            }
            None => self.start_worker(job, indices, None, out),
        };
        if let Some(w) = self.workers.get_mut(&worker) {
            if w.state == WorkerState::Idle {
                w.state = WorkerState::Busy(q.spec.task_id);
            }
        }
        self.running.insert(
            q.spec.task_id,
            Running {
                held: q.request.clone(),
                task: q,
                worker,
                gpus,
                cancelled: false,
            },
        );
    }

    /// Starts a worker of `job` seeing `gpus`, for a task, a lease or
    /// (dedicated to it) an actor.
    pub(super) fn start_worker(
        &mut self,
        job: crate::ids::JobId,
        gpus: Vec<u32>,
        actor: Option<crate::ids::ActorId>,
        out: &mut Vec<Action>,
    ) -> WorkerId {
        let id = self.next_worker;
        self.next_worker += 1;
        self.workers.insert(
            id,
            Worker {
                job,
                gpus: gpus.clone(),
                state: WorkerState::Starting,
                actor,
                fresh: None,
                node: self.me,
            },
        );
        out.push(Action::Start {
            worker: id,
            job,
            gpus,
            node: self.me,
        });
        id
    }

    pub(super) fn task_of(&self, worker: WorkerId) -> Option<crate::ids::TaskId> {
        self.running
            .iter()
            .find(|(_, r)| r.worker == worker)
            .map(|(id, _)| *id)
    }

    /// A started worker connected: give it the task it was started for.
    pub fn worker_ready(&mut self, worker: WorkerId) -> Vec<Action> {
        let mut out = Vec::new();
        let task = self.task_of(worker);
        let Some(w) = self.workers.get_mut(&worker) else {
            out.push(Action::Kill { worker });
            return out;
        };
        // Started under an earlier id of this node (an actor's: for its
        // creation, not yet run, and not being killed).
        let stale = w.node != self.me
            && w.actor.is_none_or(|a| {
                self.actors
                    .get(&a)
                    .is_some_and(|a| a.worker == worker && a.death.is_none())
            });
        if stale {
            self.stale_worker_ready(worker, task, &mut out);
            return out;
        }
        match task.and_then(|t| self.running.get(&t)) {
            Some(r) if self.leases.holds(&r.task.spec.task_id) => {
                let lease = r.task.spec.task_id;
                w.state = WorkerState::Busy(lease);
                self.lease_ready(lease, worker, &mut out);
            }
            Some(r) => {
                w.state = WorkerState::Busy(r.task.spec.task_id);
                out.push(Action::Execute {
                    worker,
                    task: r.task.spec.clone(),
                    gpus: r.gpus.iter().map(|(i, _)| *i).collect(),
                });
            }
            // An actor's worker whose creation is gone (its actor ended,
            // or was fenced, while it started): it serves nothing. It stays
            // known until its exit, which its actor's state decides on.
            None if w.actor.is_some() => {
                out.push(Action::Kill { worker });
            }
            None => {
                w.state = WorkerState::Idle;
                self.pump(&mut out);
                self.trim_idle(&mut out);
            }
        }
        out
    }

    /// A worker started under an earlier id of this node came up after the
    /// node registered again: it would report that id as its own, so it
    /// goes, and what it was started for waits for another (a task, with
    /// no attempt spent: it never ran), is declined (a lease) or starts a
    /// worker of this id (an actor's creation, no restart spent).
    fn stale_worker_ready(
        &mut self,
        worker: WorkerId,
        task: Option<crate::ids::TaskId>,
        out: &mut Vec<Action>,
    ) {
        let actor = self.workers.remove(&worker).and_then(|w| w.actor);
        out.push(Action::Kill { worker });
        if let Some(actor) = actor {
            if let Some(t) = task {
                self.running.remove(&t);
            }
            let Some(a) = self.actors.get(&actor) else {
                return;
            };
            let job = a.create.spec.job_id;
            let gpus: Vec<u32> = a.gpus.iter().map(|(i, _)| *i).collect();
            let fresh = self.new_actor_worker(job, &gpus, actor, out);
            if let Some(a) = self.actors.get_mut(&actor) {
                a.worker = fresh;
            }
            return;
        }
        if let Some(r) = task.and_then(|t| self.running.remove(&t)) {
            self.release(&r);
            let id = r.task.spec.task_id;
            if self.leases.live.remove(&id).is_some() {
                out.push(super::lease::decline(r.task.owner, id));
            } else if !r.cancelled {
                self.queue.push_front(r.task.class(), r.task);
            }
        }
        self.pump(out);
    }

    pub(super) fn release(&mut self, r: &Running) {
        self.give_back(&r.task.spec.strategy, &r.held, &r.gpus);
    }

    /// A worker reports its task's outcome.
    pub fn task_done(
        &mut self,
        worker: WorkerId,
        task_id: crate::ids::TaskId,
        outcome: Outcome,
    ) -> Vec<Action> {
        if let Some(actor) = self.workers.get(&worker).and_then(|w| w.actor) {
            return self.actor_done(actor, task_id, outcome);
        }
        let mut out = Vec::new();
        let Some(r) = self.running.remove(&task_id) else {
            return out;
        };
        self.release(&r);
        // A worker being killed (force cancel) never takes another task.
        if let Some(w) = self
            .workers
            .get_mut(&worker)
            .filter(|_| !self.killing.contains(&worker))
        {
            w.state = WorkerState::Idle;
        }
        let retry = matches!(outcome, Outcome::Failed(Failure::Panic { .. }))
            && r.task.spec.retry_exceptions
            && r.task.spec.attempt < r.task.spec.max_retries
            && !r.cancelled;
        if retry {
            let mut q = r.task;
            q.spec.attempt += 1;
            self.queue.push_front(q.class(), q);
        } else if !r.cancelled {
            out.push(Action::Reply {
                owner: r.task.owner,
                task_id,
                outcome,
            });
        }
        self.pump(&mut out);
        self.trim_idle(&mut out);
        out
    }

    /// Keeps at most `max_idle` idle workers per node, killing the newest
    /// extras, and those started under an earlier id of this node (they
    /// would report it as theirs), but none whose lease ended less than
    /// [`super::lease::FLUSH_HOLD`] ago
    /// (TE-3: a worker's task events reach the raylet before it goes; it
    /// is trimmed on a later tick).
    pub(super) fn trim_idle(&mut self, out: &mut Vec<Action>) {
        let me = self.me;
        let stale: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.state == WorkerState::Idle && w.node != me && w.fresh.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.workers.remove(&id);
            out.push(Action::Kill { worker: id });
        }
        let mut idle: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.state == WorkerState::Idle)
            .map(|(id, _)| *id)
            .collect();
        if idle.len() <= self.max_idle {
            return;
        }
        idle.sort_unstable();
        for id in idle.split_off(self.max_idle) {
            if self.workers.get(&id).is_some_and(|w| w.fresh.is_some()) {
                continue;
            }
            self.workers.remove(&id);
            out.push(Action::Kill { worker: id });
        }
    }

    /// A worker process exited or its connection broke (D-4).
    pub fn worker_died(&mut self, worker: WorkerId, failure: Failure) -> Vec<Action> {
        let mut out = Vec::new();
        self.killing.remove(&worker);
        let Some(w) = self.workers.remove(&worker) else {
            return out;
        };
        if let Some(actor) = w.actor {
            return self.actor_worker_died(actor, worker, failure);
        }
        if let Some(t) = self.task_of(worker) {
            let r = self.running.remove(&t).expect("task_of found it");
            if self.leases.holds(&t) {
                self.lease_ended(r, &failure, &mut out);
            } else {
                self.release(&r);
                if !r.cancelled {
                    self.retry_or_fail(r.task, &failure, &mut out);
                }
            }
        }
        self.pump(&mut out);
        out
    }

    /// D-4: a task its worker's death cut short runs again while
    /// `max_retries` allows (never after a worker that could not start),
    /// else fails with the cause.
    pub(super) fn retry_or_fail(
        &mut self,
        mut q: Queued,
        failure: &Failure,
        out: &mut Vec<Action>,
    ) {
        let deterministic = matches!(failure, Failure::WorkerStartFailed { .. });
        if !deterministic && q.spec.attempt < q.spec.max_retries {
            q.spec.attempt += 1;
            tracing::warn!(task = ?q.spec.name, attempt = q.spec.attempt, "retrying after {failure:?}");
            self.queue.push_front(q.class(), q);
        } else {
            out.push(Action::Reply {
                owner: q.owner,
                task_id: q.spec.task_id,
                outcome: Outcome::Failed(failure.clone()),
            });
        }
    }

    /// The task's CPUs are lent out while it blocks in `get`.
    pub fn worker_blocked(&mut self, worker: WorkerId, blocked: bool) -> Vec<Action> {
        let mut out = Vec::new();
        // An actor holds its resources for its lifetime; it lends nothing.
        if self.workers.get(&worker).is_some_and(|w| w.actor.is_some()) {
            return out;
        }
        let Some(t) = self.task_of(worker) else {
            return out;
        };
        let r = self.running.get_mut(&t).expect("task_of found it");
        let cpu = r.task.request.get(CPU);
        let lend = ResourceSet::new().with(CPU, cpu);
        let holds_cpu = r.held.get(CPU) == cpu;
        if blocked && holds_cpu && !cpu.is_zero() {
            r.held.set(CPU, Quantity::ZERO);
            let strategy = r.task.spec.strategy.clone();
            self.give_back(&strategy, &lend, &[]);
            self.pump(&mut out);
        } else if !blocked && !holds_cpu {
            let strategy = r.task.spec.strategy.clone();
            // Taken back when free; otherwise it runs on borrowed time.
            if self.take(&strategy, &lend).is_ok() {
                if let Some(r) = self.running.get_mut(&t) {
                    r.held.set(CPU, cpu);
                }
            }
        }
        out
    }
}
