//! Worker leases (Ray's lease protocol, granted only when nobody waits): an
//! owner on this node asks for a worker for tasks of one shape; the lease
//! holds that shape's resources like a running task, and the owner pushes
//! its tasks straight to the worker's socket, one at a time, until it
//! returns the lease. The raylet stays the authority on resources and
//! worker lifetime. Invariants:
//!
//! - **L-1** a lease is granted only when no work is queued here (nobody is
//!   overtaken), the node is not draining, no placement group's bundle
//!   waits for what leases held (L-3), the shape is CPU-only with the
//!   default placement and fits now, and an idle worker of the job exists;
//! - **L-2** a lease holds its resources from its grant to its return or its
//!   worker's death, and gives them back once (D-1);
//! - **L-3** a lease is revoked (once) when work waits in the queue here
//!   (anyone's: the raylet's queue is the fair one), when a placement
//!   group's bundle does not fit here but would once the leases and the
//!   running tasks give back what they hold (the head, told in each
//!   heartbeat what leases hold, plans bundles on it as free, and tries
//!   again; meanwhile, for a few ticks, what the bundle wants is kept from
//!   new leases, tasks and actors), or when the node drains: its owner
//!   returns it after the task it runs;
//! - **L-4** tasks lost with a leased worker are retried while `max_retries`
//!   allows, else fail with the worker's death, as if the raylet had sent
//!   them (D-4); a connection lost while the worker lives ends the lease by
//!   killing it;
//! - **L-5** a lease whose owner goes away is ended by killing its worker;
//! - **L-6** a task lost on a lease and waiting for its worker's death is
//!   cancelled like a queued one: answered `Cancelled` at once, never run
//!   again.

use super::{Action, Dispatcher, Owner, Queued, Running, WorkerId, WorkerState};
use crate::ids::TaskId;
use crate::proto::task::{Failure, Outcome, TaskSpec, WireStrategy};
use prism_scheduler::{ResourceSet, GPU};
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
    /// Granted and not ended: revoked yet, and tasks lost on it whose
    /// answer waits for its worker's death.
    live: HashMap<TaskId, (bool, Vec<Queued>)>,
    /// Why recently ended leases ended.
    deaths: HashMap<TaskId, Failure>,
    /// The pause of leases for a refused bundle (L-3, `bundle_pause.rs`).
    pub(super) pause: super::bundle_pause::Pause,
}

impl Leases {
    /// Whether `id` is a live lease.
    pub(super) fn holds(&self, id: &TaskId) -> bool {
        self.live.contains_key(id)
    }
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
    /// Grants or declines a lease of a worker for tasks shaped like `spec`.
    pub fn lease(&mut self, spec: TaskSpec, owner: Owner) -> Vec<Action> {
        let lease = spec.task_id;
        let request = spec.resources.to_set();
        let idle = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.state == WorkerState::Idle
                    && w.job == spec.job_id
                    && w.gpus.is_empty()
                    && w.actor.is_none()
            })
            .map(|(id, _)| *id)
            .min();
        // L-1.
        let open = self.queue.is_empty()
            && self.draining.is_none()
            && !self.leases.pause.active()
            && matches!(spec.strategy, WireStrategy::Hybrid)
            && !spec.spilled
            && request.get(GPU).is_zero()
            && !self.leases.holds(&lease)
            && !self.running.contains_key(&lease)
            && self.fits(&spec.strategy, &request);
        let Some(worker) = idle.filter(|_| open) else {
            return vec![answer(owner, lease, None)];
        };
        let Ok(gpus) = self.take(&spec.strategy, &request) else {
            return vec![answer(owner, lease, None)];
        };
        if let Some(w) = self.workers.get_mut(&worker) {
            w.state = WorkerState::Busy(lease);
        }
        self.running.insert(
            lease,
            Running {
                held: request.clone(),
                task: Queued {
                    spec,
                    owner,
                    request,
                },
                worker,
                gpus,
                cancelled: false,
            },
        );
        self.leases.live.insert(lease, (false, Vec::new()));
        vec![answer(owner, lease, Some(worker))]
    }

    /// What the live leases not yet revoked hold (given back for bundles,
    /// L-3; a revoked one comes back by itself).
    pub fn leased(&self) -> ResourceSet {
        let mut held = ResourceSet::new();
        for (id, (revoked, _)) in &self.leases.live {
            if let (false, Some(r)) = (revoked, self.running.get(id)) {
                held.add(&r.held);
            }
        }
        held
    }

    /// The owner is done with a lease: its worker is idle again (L-2).
    pub fn return_lease(&mut self, lease: TaskId) -> Vec<Action> {
        let mut out = Vec::new();
        if self.leases.live.remove(&lease).is_none() {
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
        if let Some((_, orphans)) = self.leases.live.get_mut(&lease).filter(|_| own) {
            // Its death answers them; a worker that still lives is useless
            // to the lease without its connection.
            orphans.extend(lost);
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
        let orphans = self
            .leases
            .live
            .remove(&lease)
            .map(|(_, o)| o)
            .unwrap_or_default();
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
        self.leases.live.values_mut().find_map(|(_, orphans)| {
            let i = orphans.iter().position(|q| q.spec.task_id == task_id)?;
            Some(orphans.remove(i))
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
        for (lease, (revoked, _)) in self.leases.live.iter_mut() {
            let Some(r) = self.running.get(lease) else {
                continue;
            };
            let owner = r.task.owner;
            if !*revoked {
                *revoked = true;
                out.push(Action::RevokeLease {
                    owner,
                    lease: *lease,
                });
            }
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
