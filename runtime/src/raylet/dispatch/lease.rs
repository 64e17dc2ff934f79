//! Worker leases (Ray's lease protocol): an owner on this node asks for a
//! worker for tasks of one shape; the lease holds that shape's resources
//! like a running task, and the owner pushes its tasks straight to the
//! worker's socket, one at a time, until it returns the lease. The raylet
//! stays the authority on resources and worker lifetime. Invariants:
//!
//! - **L-1** a lease is granted only when no work of its class (shape and
//!   placement) is queued ahead of it (nobody of its shape is overtaken;
//!   across classes the queue is not strict, as for tasks), the node is not draining, no placement group's
//!   bundle waits for what leases held (L-3), and the shape is CPU-only
//!   with the default placement and fits now (on an idle worker of the job,
//!   or one started for it, L-8); otherwise it is declined, or queued (L-7);
//! - **L-2** a lease holds its resources from its grant to its return or its
//!   worker's death, and gives them back once (D-1);
//! - **L-3** a lease is revoked (once) when work waits in the queue here
//!   (anyone's, lease requests included: the raylet's queue is the fair
//!   one), when a placement group's bundle does not fit here but would once
//!   the leases and the running tasks give back what they hold (the head,
//!   told in each heartbeat what leases hold, plans bundles on it as free,
//!   and tries again; meanwhile, for a few ticks, what the bundle wants is
//!   kept from new leases, tasks and actors), or when the node drains: its
//!   owner returns it after the task it runs, once it has held it for its
//!   minimum tenure (`api/lease.rs`, LO-3), so leases do not churn;
//! - **L-4** tasks lost with a leased worker are retried while `max_retries`
//!   allows, else fail with the worker's death, as if the raylet had sent
//!   them (D-4); a connection lost while the worker lives ends the lease by
//!   killing it;
//! - **L-5** a lease whose owner goes away is ended by killing its worker
//!   (and its requests still queued are dropped);
//! - **L-6** a task lost on a lease and waiting for its worker's death is
//!   cancelled like a queued one: answered `Cancelled` at once, never run
//!   again;
//! - **L-7** a request of an owner that holds no lease of the job, which
//!   could be granted here but not now (its shape does not fit, or work
//!   waits), waits in the queue in its class, in order with the tasks, and
//!   is answered when it reaches the front: granted once it fits, declined
//!   when it cannot be granted here any more or a peer has room now (its
//!   owner's tasks then go through the raylet, which spills them there).
//!   An owner holding a lease already is declined instead of queued;
//! - **L-8** a lease that fits and holds CPU, with no idle worker of its
//!   job, starts one for it, and is answered once that worker is ready
//!   (declined if it dies first); until then it is not revoked, nor
//!   returned, and when work waits then, or a bundle's pause began, it is
//!   revoked right after its answer.

use super::{Action, Dispatcher, Owner, Queued, Running, WorkerId, WorkerState};
use crate::ids::TaskId;
use crate::proto::task::{Failure, Outcome, TaskKind, TaskSpec, WireStrategy};
use prism_scheduler::{ResourceSet, CPU, GPU};
use std::collections::HashMap;

/// The function name of a lease request's spec.
pub const LEASE_METHOD: &str = "__prism_lease__";

/// How long a worker whose lease ended is kept from trimming (as of the
/// raylet's ticks, and two ticks at least): its task events, flushed every
/// 200 ms, reach the raylet first (TE-3).
pub const FLUSH_HOLD: std::time::Duration = std::time::Duration::from_secs(1);
/// How many ended leases' causes are remembered for late [`Dispatcher::lease_lost`]s.
const DEATHS_KEPT: usize = 1024;

/// The leases of this node.
#[derive(Debug, Default)]
pub(super) struct Leases {
    /// Granted and not ended.
    pub(super) live: HashMap<TaskId, Live>,
    /// Why recently ended leases ended.
    deaths: HashMap<TaskId, Failure>,
    /// The pause of leases for a refused bundle (L-3, `bundle_pause.rs`).
    pub(super) pause: super::bundle_pause::Pause,
    /// Leases granted, ever.
    pub(super) granted: u64,
}

/// A lease granted and not ended.
#[derive(Debug, Default)]
pub(super) struct Live {
    /// Revoked yet.
    revoked: bool,
    /// Its owner was told its worker (once a worker started for it is
    /// ready, L-8).
    answered: bool,
    /// Tasks lost on it whose answer waits for its worker's death.
    orphans: Vec<Queued>,
    /// Its connection broke (L-4): it ends with its worker's death, and no
    /// longer counts as its owner's (L-7).
    lost: bool,
}

impl Leases {
    /// Whether `id` is a live lease.
    pub(super) fn holds(&self, id: &TaskId) -> bool {
        self.live.contains_key(id)
    }
}

/// Whether `q` is a lease request waiting in the queue (L-7); plain
/// submissions of that name are refused at the raylet's door.
pub(super) fn is_lease(q: &Queued) -> bool {
    q.spec.function == LEASE_METHOD && matches!(q.spec.kind, TaskKind::Task)
}

/// A lease request's refusal.
pub(super) fn decline(owner: Owner, lease: TaskId) -> Action {
    answer(owner, lease, None)
}

/// A lease's answer: the leased worker, or `None` (declined).
fn answer(owner: Owner, lease: TaskId, worker: Option<WorkerId>) -> Action {
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&worker)
        .map(|b| b.to_vec())
        .unwrap_or_default();
    Action::Reply {
        owner,
        task_id: lease,
        outcome: Outcome::Inline(bytes),
    }
}

impl Dispatcher {
    /// Grants a lease of a worker for tasks shaped like `spec`, declines it,
    /// or queues it behind the work waiting here (L-1, L-7).
    pub fn lease(&mut self, spec: TaskSpec, owner: Owner) -> Vec<Action> {
        let mut out = Vec::new();
        let lease = spec.task_id;
        let q = Queued {
            request: spec.resources.to_set(),
            spec,
            owner,
        };
        let holds_one = self.leases.live.iter().any(|(id, live)| {
            !live.lost
                && self
                    .running
                    .get(id)
                    .is_some_and(|r| r.task.owner == owner && r.task.spec.job_id == q.spec.job_id)
        });
        let known = self.leases.holds(&lease) || self.running.contains_key(&lease);
        if known || !self.leasable(&q) || !self.local.feasible(&q.request) {
            out.push(answer(owner, lease, None));
            return out;
        }
        let now = self.queue.is_empty() && self.fits(&q.spec.strategy, &q.request);
        if now {
            self.grant_or_decline(q, &mut out);
            return out;
        }
        // L-7: an owner holding none waits its turn; one that holds a lease
        // already does not queue for more.
        if holds_one {
            out.push(answer(owner, lease, None));
            return out;
        }
        self.queue.push_back(q.class(), q);
        self.pump(&mut out);
        out
    }

    /// Whether a lease of `q`'s shape may be granted here at all (L-1):
    /// CPU-only with the default placement, not spilled, the node not
    /// draining and no bundle's pause on.
    fn leasable(&self, q: &Queued) -> bool {
        self.draining.is_none()
            && !self.leases.pause.active()
            && matches!(q.spec.strategy, WireStrategy::Hybrid)
            && !q.spec.spilled
            && q.request.get(GPU).is_zero()
    }

    /// Grants `q` a lease of an idle worker of its job if its shape fits
    /// now, else declines it (L-1).
    pub(super) fn grant_or_decline(&mut self, q: Queued, out: &mut Vec<Action>) {
        let (owner, lease) = (q.owner, q.spec.task_id);
        let idle = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.reusable(self.me)
                    && w.job == q.spec.job_id
                    && w.gpus.is_empty()
                    && w.actor.is_none()
            })
            .map(|(id, _)| *id)
            .min();
        // L-8: with no idle worker of the job, one starts for a lease that
        // holds CPU (so no more start than there are CPUs), answered once
        // it is ready.
        let open = self.leasable(&q)
            && self.fits(&q.spec.strategy, &q.request)
            && (idle.is_some() || !q.request.get(CPU).is_zero());
        if !open {
            out.push(answer(owner, lease, None));
            return;
        }
        let Ok(gpus) = self.take(&q.spec.strategy, &q.request) else {
            out.push(answer(owner, lease, None));
            return;
        };
        let answered = idle.is_some();
        let worker = match idle {
            Some(w) => w,
            None => self.start_worker(q.spec.job_id, Vec::new(), None, out),
        };
        if let Some(w) = self.workers.get_mut(&worker).filter(|_| answered) {
            w.state = WorkerState::Busy(lease);
        }
        self.running.insert(
            lease,
            Running {
                held: q.request.clone(),
                task: q,
                worker,
                gpus,
                cancelled: false,
            },
        );
        self.leases.live.insert(
            lease,
            Live {
                answered,
                ..Live::default()
            },
        );
        self.leases.granted += 1;
        if answered {
            out.push(answer(owner, lease, Some(worker)));
        }
    }

    /// L-8: worker `worker`, started for lease `lease`, is ready: its owner
    /// is told, and the lease is revoked at once if work waits.
    pub(super) fn lease_ready(&mut self, lease: TaskId, worker: WorkerId, out: &mut Vec<Action>) {
        let Some(live) = self.leases.live.get_mut(&lease).filter(|l| !l.answered) else {
            return;
        };
        live.answered = true;
        if let Some(r) = self.running.get(&lease) {
            out.push(answer(r.task.owner, lease, Some(worker)));
        }
        // A bundle's pause began meanwhile for what it holds: it is not
        // held through it.
        let paused = self
            .running
            .get(&lease)
            .is_some_and(|r| self.pause_wants(&r.held));
        if paused {
            self.revoke_one(lease, out);
        }
        self.revoke_leases(out);
    }

    /// L-7: a lease request at the front of its class's queue (`i`) is
    /// granted once its shape fits, and declined when a lease cannot be
    /// granted here any more or a peer has room for the owner's tasks now
    /// (the raylet spills them there). `false`: it waits on.
    pub(super) fn lease_at_front(&mut self, i: usize, out: &mut Vec<Action>) -> bool {
        let Some(q) = self.queue.front(i) else {
            return false;
        };
        let ready = self.fits(&q.spec.strategy, &q.request) || !self.leasable(q) || {
            let q = q.clone();
            self.spill_target(&q).is_some()
        };
        if ready {
            let q = self.queue.pop_front(i).expect("front exists");
            self.grant_or_decline(q, out);
        }
        ready
    }

    /// What the live leases not yet revoked hold (given back for bundles,
    /// L-3; a revoked one comes back by itself).
    pub fn leased(&self) -> ResourceSet {
        let mut held = ResourceSet::new();
        for (id, live) in &self.leases.live {
            if let (false, Some(r)) = (live.revoked, self.running.get(id)) {
                held.add(&r.held);
            }
        }
        held
    }

    /// The owner is done with a lease: its worker is idle again (L-2).
    /// Only its own owner returns it, and only once told of it (L-8).
    pub fn return_lease(&mut self, lease: TaskId, owner: Owner) -> Vec<Action> {
        let mut out = Vec::new();
        let own = self
            .running
            .get(&lease)
            .is_some_and(|r| r.task.owner == owner);
        let answered = self.leases.live.get(&lease).is_some_and(|l| l.answered);
        if !own || !answered || self.leases.live.remove(&lease).is_none() {
            return out;
        }
        let Some(r) = self.running.remove(&lease) else {
            return out;
        };
        self.release(&r);
        if !self.killing.contains(&r.worker) {
            if let Some(w) = self.workers.get_mut(&r.worker) {
                w.state = WorkerState::Idle;
                w.fresh = self.now.map(|t| (t + FLUSH_HOLD, 2));
            }
        }
        self.pump(&mut out);
        self.trim_idle(&mut out);
        out
    }

    /// Tasks its owner pushed on `lease` had no answer when the lease's
    /// connection broke (L-4).
    pub fn lease_lost(&mut self, lease: TaskId, tasks: Vec<TaskSpec>, owner: Owner) -> Vec<Action> {
        let mut out = Vec::new();
        let lost = tasks.into_iter().map(|spec| Queued {
            request: spec.resources.to_set(),
            spec,
            owner,
        });
        // Only the lease's own owner ends it: another connection naming it
        // has its tasks answered as if the lease were gone.
        let own = self
            .running
            .get(&lease)
            .is_some_and(|r| r.task.owner == owner);
        if let Some(live) = self.leases.live.get_mut(&lease).filter(|_| own) {
            // Its death answers them; a worker that still lives is useless
            // to the lease without its connection.
            live.orphans.extend(lost);
            live.lost = true;
            if let Some(r) = self.running.get(&lease) {
                out.push(Action::Kill { worker: r.worker });
            }
            return out;
        }
        let failure =
            self.leases
                .deaths
                .get(&lease)
                .cloned()
                .unwrap_or_else(|| Failure::WorkerDied {
                    node: self.me,
                    detail: "its leased worker's connection broke".into(),
                });
        for q in lost {
            self.retry_or_fail(q, &failure, &mut out);
        }
        self.pump(&mut out);
        out
    }

    /// A leased worker died (from [`Dispatcher::worker_died`]): the lease
    /// ends, and the tasks lost on it are retried or fail (L-4).
    pub(super) fn lease_ended(&mut self, r: Running, failure: &Failure, out: &mut Vec<Action>) {
        let lease = r.task.spec.task_id;
        self.release(&r);
        let Live {
            answered, orphans, ..
        } = self.leases.live.remove(&lease).unwrap_or_default();
        // L-8: a worker started for it died before it was ready: declined.
        if !answered {
            out.push(answer(r.task.owner, lease, None));
        }
        if self.leases.deaths.len() >= DEATHS_KEPT {
            self.leases.deaths.clear();
        }
        self.leases.deaths.insert(lease, failure.clone());
        // A lease cancelled (force) or whose owner went away: nobody waits
        // for what was lost on it.
        if r.cancelled {
            return;
        }
        for q in orphans {
            self.retry_or_fail(q, failure, out);
        }
    }

    /// L-6: takes `task_id` out of the tasks lost on a lease, if it is one.
    pub(super) fn cancel_lost(&mut self, task_id: TaskId) -> Option<Queued> {
        self.leases.live.values_mut().find_map(|live| {
            let i = live
                .orphans
                .iter()
                .position(|q| q.spec.task_id == task_id)?;
            Some(live.orphans.remove(i))
        })
    }

    /// L-3: revokes the leases waiting work (or a drain) needs back.
    pub(super) fn revoke_leases(&mut self, out: &mut Vec<Action>) {
        if self.queue.is_empty() && self.draining.is_none() {
            return;
        }
        self.revoke_all_leases(out);
    }

    /// A tick at `now`: the pause of leases for a bundle (L-3) may end,
    /// and workers whose lease ended may be trimmed once their time is
    /// over (TE-3).
    pub(super) fn lease_tick(&mut self, now: std::time::Instant, out: &mut Vec<Action>) {
        self.pause_tick(now, out);
        let mut aged = false;
        for w in self.workers.values_mut() {
            if let Some((until, ticks)) = w.fresh.as_mut() {
                *ticks = ticks.saturating_sub(1);
                if now >= *until && *ticks == 0 {
                    w.fresh = None;
                    aged = true;
                }
            }
        }
        if aged {
            self.trim_idle(out);
        }
    }

    pub(super) fn revoke_all_leases(&mut self, out: &mut Vec<Action>) {
        // Every pump comes here: the common case costs one check.
        if self.leases.live.is_empty() {
            return;
        }
        let leases: Vec<TaskId> = self.leases.live.keys().copied().collect();
        for lease in leases {
            self.revoke_one(lease, out);
        }
    }

    /// Revokes `lease` once (one not yet answered is revoked once it is,
    /// L-8).
    fn revoke_one(&mut self, lease: TaskId, out: &mut Vec<Action>) {
        let (Some(live), Some(r)) = (self.leases.live.get_mut(&lease), self.running.get(&lease))
        else {
            return;
        };
        if !live.revoked && live.answered {
            live.revoked = true;
            out.push(Action::RevokeLease {
                owner: r.task.owner,
                lease,
            });
        }
    }

    /// L-5: the leases `owner` held end with their workers.
    pub(super) fn leases_of_gone_owner(&mut self, owner: Owner, out: &mut Vec<Action>) {
        for lease in self.leases.live.keys() {
            if let Some(r) = self.running.get(lease).filter(|r| r.task.owner == owner) {
                self.killing.insert(r.worker);
                out.push(Action::Kill { worker: r.worker });
            }
        }
    }
}
