//! How work ends before it finishes: cancellation by its owner, and the
//! owner or its whole job going away (no orphan worker survives its job).

use super::{Action, Dispatcher, Owner, Queued, WorkerId};
use crate::ids::JobId;
use crate::proto::task::{Failure, Outcome, TaskKind};

impl Dispatcher {
    /// The owner cancels a task.
    pub fn cancel(&mut self, task_id: crate::ids::TaskId, force: bool) -> Vec<Action> {
        let mut out = Vec::new();
        // Actors end with `kill`, not `cancel`.
        let creation = |q: &Queued| matches!(q.spec.kind, TaskKind::CreateActor(_));
        if self
            .queue
            .iter()
            .any(|q| q.spec.task_id == task_id && creation(q))
            || self
                .running
                .get(&task_id)
                .is_some_and(|r| creation(&r.task))
            || self
                .parked
                .iter()
                .any(|p| p.q.spec.task_id == task_id && creation(&p.q))
        {
            return out;
        }
        let parked = self.parked.iter().position(|p| p.q.spec.task_id == task_id);
        let queued = match parked {
            Some(i) => Some(self.parked.remove(i).q),
            None => self
                .queue
                .remove_first(|q| q.spec.task_id == task_id)
                .or_else(|| self.cancel_lost(task_id)),
        };
        if let Some(q) = queued {
            out.push(Action::Reply {
                owner: q.owner,
                task_id,
                outcome: Outcome::Failed(Failure::Cancelled),
            });
            return out;
        }
        if force {
            self.kill_running(task_id, Outcome::Failed(Failure::Cancelled), &mut out);
        } else if let Some(r) = self.running.get_mut(&task_id).filter(|r| !r.cancelled) {
            r.cancelled = true;
            out.push(Action::Reply {
                owner: r.task.owner,
                task_id,
                outcome: Outcome::Failed(Failure::Cancelled),
            });
        }
        out
    }

    /// Ends running task `task_id` now (force cancel, a removed group, the
    /// fence): its owner is answered `outcome`, once, and its worker is
    /// killed and never reused; its resources come back with the worker's
    /// exit (D-1).
    pub(super) fn kill_running(
        &mut self,
        task_id: crate::ids::TaskId,
        outcome: Outcome,
        out: &mut Vec<Action>,
    ) {
        let Some(r) = self.running.get_mut(&task_id).filter(|r| !r.cancelled) else {
            return;
        };
        r.cancelled = true;
        out.push(Action::Reply {
            owner: r.task.owner,
            task_id,
            outcome,
        });
        out.push(Action::Kill { worker: r.worker });
        self.killing.insert(r.worker);
    }

    /// A job that ran elsewhere ended (the head says so): stop its workers
    /// here, except those of detached actors.
    pub fn job_ended(&mut self, job: JobId) -> Vec<Action> {
        self.owner_gone(None, Some(job))
    }

    /// The owner is gone: drop its queued tasks; with `job`, the job ended
    /// and its workers are killed (no orphans).
    pub fn owner_gone(&mut self, owner: Option<Owner>, job: Option<JobId>) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(o) = owner {
            self.leases_of_gone_owner(o, &mut out);
        }
        self.queue.retain(|q| Some(q.owner) != owner);
        self.parked.retain(|p| Some(p.q.owner) != owner);
        for r in self
            .running
            .values_mut()
            .filter(|r| Some(r.task.owner) == owner)
        {
            r.cancelled = true;
        }
        if let Some(job) = job {
            // Lease requests of the job's processes that live on (detached
            // actors) are declined, not dropped unanswered (L-7).
            let asked: Vec<Action> = self
                .queue
                .iter()
                .filter(|q| super::lease::is_lease(q) && q.spec.job_id == job)
                .map(|q| super::lease::decline(q.owner, q.spec.task_id))
                .collect();
            out.extend(asked);
            // Nothing of the job may be retried or restarted once it ends.
            for r in self
                .running
                .values_mut()
                .filter(|r| r.task.spec.job_id == job)
            {
                r.cancelled = true;
            }
            self.queue.retain(|q| q.spec.job_id != job);
            self.parked.retain(|p| p.q.spec.job_id != job);
            let detached = self.detached_workers();
            self.actors_of_job_end(job);
            let doomed: Vec<WorkerId> = self
                .workers
                .iter()
                .filter(|(id, w)| w.job == job && !detached.contains(id))
                .map(|(id, _)| *id)
                .collect();
            for w in doomed {
                out.push(Action::Kill { worker: w });
                let failure = Failure::Cancelled;
                out.extend(self.worker_died(w, failure));
            }
            self.queue.retain(|q| q.spec.job_id != job);
        }
        self.pump(&mut out);
        out
    }
}
