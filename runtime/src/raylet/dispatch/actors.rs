//! Actors in the dispatcher: each actor owns a dedicated worker and holds
//! its resources from creation to death. Calls queue while the constructor
//! runs (first start or restart) and go to the worker in arrival order.
//! Invariants:
//!
//! - **DA-1** an actor's resources are taken once at creation and released
//!   once, when it is dead for good (not across restarts);
//! - **DA-2** calls reach the worker in the order they arrived here;
//! - **DA-3** every call gets one reply: its result, or `ActorDied` with the
//!   cause (after `max_task_retries` re-sends across restarts);
//! - **DA-4** when the head declares this node dead, every actor whose
//!   worker runs here is killed for good before the node registers again
//!   (fencing: the head has restarted it elsewhere, or declared it dead,
//!   and it must not run twice), its death reported at once, under the id
//!   the node was declared dead with, which the head ignores (HC-1); its
//!   calls go on to its next incarnation (`fence.rs`, which also ends the
//!   work peers spilled here, creations included).

use super::{Action, Dispatcher, Owner, Queued, Running, WorkerId};
use crate::ids::{ActorId, JobId};
use crate::proto::head::ActorState;
use crate::proto::task::{ActorCreate, Failure, Outcome, TaskKind, TaskSpec};
use prism_scheduler::{Quantity, ResourceSet};
use std::collections::VecDeque;

/// The method name of the call that kills an actor (`prism::kill`).
pub const KILL_METHOD: &str = "__prism_kill__";

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Phase {
    Creating,
    Alive,
}

/// An actor hosted on this node.
#[derive(Debug)]
pub(crate) struct LocalActor {
    pub(super) create: Queued,
    pub(super) opts: ActorCreate,
    pub(super) worker: WorkerId,
    held: ResourceSet,
    pub(super) gpus: Vec<(u32, Quantity)>,
    pub(super) phase: Phase,
    replied: bool,
    /// A restart the head placed here (its sender waits for it).
    head_placed: bool,
    pub(super) no_restart: bool,
    pub(super) death: Option<String>,
    /// Why its last worker died, once it has restarted (for direct calls
    /// that worker held, handed over after its restart).
    pub(super) last_death: Option<String>,
    pub(super) inflight: VecDeque<Queued>,
    pub(super) waiting: VecDeque<Queued>,
}

impl LocalActor {
    /// The actor's class, without its module path.
    pub(crate) fn class_name(&self) -> String {
        let name = &self.create.spec.name;
        name.rsplit("::").next().unwrap_or(name).to_string()
    }

    /// The head, if this is a restart it placed here, not killed for good,
    /// and it has no answer yet: marked answered, for the caller to answer.
    pub(super) fn unanswered_head(&mut self) -> Option<Owner> {
        (self.head_placed && !self.no_restart && !self.replied).then(|| {
            self.replied = true;
            self.create.owner
        })
    }
}

/// The outcome of a call to a dead actor.
pub(crate) fn died(actor: ActorId, detail: String) -> Outcome {
    Outcome::Failed(Failure::ActorDied {
        actor_id: actor,
        detail,
    })
}

/// Whether a kill call asks for no restart.
fn kill_no_restart(spec: &TaskSpec) -> bool {
    matches!(spec.args.first(), Some(crate::proto::task::ArgSpec::Inline(b)) if b.first() == Some(&1))
}

/// Why a kill call kills: the cause it carries ([`super::kill_call_because`]),
/// else a user's `prism::kill`.
fn kill_cause(spec: &TaskSpec) -> String {
    match spec.args.get(1) {
        Some(crate::proto::task::ArgSpec::Inline(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => "killed by prism::kill".into(),
    }
}

impl Dispatcher {
    /// A local owner is creating `actor`: calls that arrive before the
    /// constructor is scheduled wait here.
    pub fn announce_actor(&mut self, actor: ActorId) {
        self.pre_waiting.entry(actor).or_default();
    }

    /// The actor will not exist: fail the calls that waited for it.
    pub fn actor_registration_failed(&mut self, actor: ActorId, reason: String) -> Vec<Action> {
        let mut out = Vec::new();
        for q in self.pre_waiting.remove(&actor).unwrap_or_default() {
            out.push(Action::Reply {
                owner: q.owner,
                task_id: q.spec.task_id,
                outcome: died(actor, reason.clone()),
            });
        }
        out.push(Action::ActorState {
            actor,
            state: ActorState::Dead,
            restarts: 0,
            reason: Some(reason.clone()),
        });
        self.dead_actors.insert(actor, reason);
        out
    }

    /// The actor's creation went to another node: so do its early calls.
    pub(super) fn calls_follow_actor(&mut self, actor: ActorId, out: &mut Vec<Action>) {
        if let Some(no_restart) = self.pending_kills.remove(&actor) {
            let kill = super::kill_call(actor, no_restart);
            self.pre_waiting
                .entry(actor)
                .or_default()
                .push_back(Queued {
                    request: ResourceSet::new(),
                    spec: kill,
                    owner: Owner::Raylet,
                });
        }
        for q in self.pre_waiting.remove(&actor).unwrap_or_default() {
            out.push(Action::ForwardCall {
                actor,
                owner: q.owner,
                task: q.spec,
            });
        }
    }

    /// A creation task got its resources: start its dedicated worker.
    pub(super) fn start_actor(
        &mut self,
        q: Queued,
        create: ActorCreate,
        gpus: Vec<(u32, Quantity)>,
        out: &mut Vec<Action>,
    ) {
        let indices: Vec<u32> = gpus.iter().map(|(i, _)| *i).collect();
        let job = q.spec.job_id;
        let actor = create.actor_id;
        self.unfence(actor);
        let head_placed =
            matches!(q.owner, Owner::Spilled(_)) && !super::placing::may_go_back(&q.spec);
        self.actors.insert(
            create.actor_id,
            LocalActor {
                held: q.request.clone(),
                create: q,
                opts: create,
                worker: 0,
                gpus,
                phase: Phase::Creating,
                head_placed,
                replied: false,
                no_restart: false,
                death: None,
                last_death: None,
                inflight: VecDeque::new(),
                waiting: self.pre_waiting.remove(&actor).unwrap_or_default(),
            },
        );
        let worker = self.new_actor_worker(job, &indices, actor, out);
        let kill = self.pending_kills.remove(&actor);
        if let Some(a) = self.actors.get_mut(&actor) {
            a.worker = worker;
            if let Some(no_restart) = kill {
                a.no_restart |= no_restart;
                a.death = Some("killed by prism::kill".into());
                // Before its constructor runs (one being spawned is killed
                // once it has a pid).
                out.push(Action::Kill { worker });
            }
        }
    }

    pub(super) fn new_actor_worker(
        &mut self,
        job: JobId,
        gpus: &[u32],
        actor: ActorId,
        out: &mut Vec<Action>,
    ) -> WorkerId {
        let id = self.start_worker(job, gpus.to_vec(), Some(actor), out);
        // The creation task is "running" on it until the constructor returns.
        let a = &self.actors.get(&actor);
        if let Some(a) = a {
            let task = a.create.clone();
            self.running.insert(
                task.spec.task_id,
                Running {
                    held: ResourceSet::new(),
                    task,
                    worker: id,
                    gpus: Vec::new(),
                    cancelled: false,
                },
            );
        }
        id
    }

    /// Workers dedicated to detached actors (they outlive their job).
    pub(super) fn detached_workers(&self) -> Vec<WorkerId> {
        self.actors
            .values()
            .filter(|a| a.opts.detached && a.death.is_none())
            .map(|a| a.worker)
            .collect()
    }

    /// The creating job ended: its owned actors die with it, for good.
    pub(super) fn actors_of_job_end(&mut self, job: JobId) {
        for a in self.actors.values_mut() {
            if a.create.spec.job_id == job && !a.opts.detached {
                a.no_restart = true;
                a.death
                    .get_or_insert_with(|| "its owner's job ended".into());
            }
        }
    }

    /// A call for an actor: to its worker, queued behind its constructor,
    /// refused if it is dead here, or routed to the node that hosts it.
    pub(super) fn submit_call(
        &mut self,
        actor: ActorId,
        spec: TaskSpec,
        owner: Owner,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let q = Queued {
            request: ResourceSet::new(),
            spec,
            owner,
        };
        // DF-5: read from a peer's stream before the fence closed it.
        if self.fenced_stream(owner) {
            out.push(Action::Dropped {
                task_id: q.spec.task_id,
            });
            return out;
        }
        if let Some(why) = self.dead_actors.get(&actor) {
            out.push(Action::Reply {
                owner,
                task_id: q.spec.task_id,
                outcome: died(actor, why.clone()),
            });
            return out;
        }
        if self.pre_waiting.contains_key(&actor) && q.spec.function == KILL_METHOD {
            let no_restart = kill_no_restart(&q.spec);
            *self.pending_kills.entry(actor).or_default() |= no_restart;
            out.push(Action::Reply {
                owner,
                task_id: q.spec.task_id,
                outcome: Outcome::Inline(Vec::new()),
            });
            return out;
        }
        if let Some(w) = self.pre_waiting.get_mut(&actor) {
            w.push_back(q);
            return out;
        }
        let Some(a) = self.actors.get_mut(&actor) else {
            out.push(Action::ForwardCall {
                actor,
                owner,
                task: q.spec,
            });
            return out;
        };
        if q.spec.function == KILL_METHOD {
            // A kill for good counts even after a kill that allowed a
            // restart (its worker is already being killed).
            a.no_restart |= kill_no_restart(&q.spec);
            if a.death.is_none() {
                a.death = Some(kill_cause(&q.spec));
                out.push(Action::Kill { worker: a.worker });
            } else if q.spec.args.len() > 1 {
                // Already being killed: a named cause still says why.
                a.death = Some(kill_cause(&q.spec));
            }
            out.push(Action::Reply {
                owner,
                task_id: q.spec.task_id,
                outcome: Outcome::Inline(Vec::new()),
            });
            return out;
        }
        if a.phase == Phase::Alive {
            out.push(Action::Execute {
                worker: a.worker,
                task: q.spec.clone(),
                gpus: a.gpus.iter().map(|(i, _)| *i).collect(),
            });
            a.inflight.push_back(q);
        } else {
            a.waiting.push_back(q);
        }
        out
    }

    /// The actor's worker finished its constructor or a call.
    pub(super) fn actor_done(
        &mut self,
        actor: ActorId,
        task_id: crate::ids::TaskId,
        outcome: Outcome,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(a) = self.actors.get_mut(&actor) else {
            return out;
        };
        if task_id == crate::ids::TaskId(actor.0) && a.phase == Phase::Creating {
            self.running.remove(&task_id);
            if let Outcome::Failed(f) = outcome {
                let why = match f {
                    Failure::Panic { message, location } => {
                        format!("its constructor panicked at {location}: {message}")
                    }
                    other => format!("its constructor failed: {}", other.summary()),
                };
                a.no_restart = true;
                a.death = Some(why);
                out.push(Action::Kill { worker: a.worker });
                return out;
            }
            if a.death.is_some() {
                // Killed while its constructor ran: it never serves.
                out.push(Action::Kill { worker: a.worker });
                return out;
            }
            a.phase = Phase::Alive;
            if !a.replied {
                a.replied = true;
                out.push(Action::Reply {
                    owner: a.create.owner,
                    task_id,
                    outcome: Outcome::Inline(Vec::new()),
                });
            }
            out.push(Action::ActorState {
                actor,
                state: ActorState::Alive,
                restarts: a.opts.restarts,
                reason: None,
            });
            let gpus: Vec<u32> = a.gpus.iter().map(|(i, _)| *i).collect();
            while let Some(q) = a.waiting.pop_front() {
                out.push(Action::Execute {
                    worker: a.worker,
                    task: q.spec.clone(),
                    gpus: gpus.clone(),
                });
                a.inflight.push_back(q);
            }
            return out;
        }
        // Calls finish in the order they were sent, unless they interleave.
        let pos = if a
            .inflight
            .front()
            .is_some_and(|q| q.spec.task_id == task_id)
        {
            Some(0)
        } else {
            a.inflight.iter().position(|q| q.spec.task_id == task_id)
        };
        if let Some(q) = pos.and_then(|p| a.inflight.remove(p)) {
            out.push(Action::Reply {
                owner: q.owner,
                task_id,
                outcome,
            });
        }
        out
    }

    /// The actor's worker died: restart it (same node, same resources) or
    /// declare it dead, failing or re-sending the calls it held.
    pub(super) fn actor_worker_died(
        &mut self,
        actor: ActorId,
        worker: WorkerId,
        failure: Failure,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(mut a) = self.actors.remove(&actor) else {
            return out;
        };
        if a.worker != worker {
            self.actors.insert(actor, a);
            return out;
        }
        self.running.remove(&crate::ids::TaskId(actor.0));
        let cause = match &failure {
            Failure::WorkerDied { detail, .. } => format!("its worker died ({detail})"),
            Failure::WorkerStartFailed { detail } => {
                format!("its worker could not start ({detail})")
            }
            other => format!("{other:?}"),
        };
        // A deliberate end (a kill, its job's end) is the reason; the
        // worker's exit that follows from it is not news.
        let deliberate = a.death.is_some();
        let reason = match &a.death {
            Some(d) => d.clone(),
            None => cause.clone(),
        };
        // In-flight calls: re-send (before anything queued) or fail (DA-3).
        // The worker runs up to `max_concurrency` of them, oldest first; the
        // rest were queued in it and never started.
        let mut resend = VecDeque::new();
        let running = a.opts.max_concurrency.max(1) as usize;
        for (i, mut q) in a.inflight.drain(..).enumerate() {
            if q.spec.attempt < a.opts.max_task_retries && !a.no_restart {
                q.spec.attempt += 1;
                resend.push_back(q);
            } else {
                let when = if deliberate {
                    "before this call finished".to_string()
                } else if i < running {
                    "while running this call".to_string()
                } else {
                    format!("before this call started (it was queued behind {i} others)")
                };
                out.push(Action::Reply {
                    owner: q.owner,
                    task_id: q.spec.task_id,
                    outcome: died(actor, format!("{reason} {when}")),
                });
            }
        }
        while let Some(q) = resend.pop_back() {
            a.waiting.push_front(q);
        }
        let restartable = !a.no_restart
            && a.opts.restarts < a.opts.max_restarts
            && !matches!(failure, Failure::WorkerStartFailed { .. });
        if restartable {
            a.opts.restarts += 1;
            a.last_death = Some(reason.clone());
            a.death = None;
            a.phase = Phase::Creating;
            if let TaskKind::CreateActor(c) = &mut a.create.spec.kind {
                c.restarts = a.opts.restarts;
            }
            out.push(Action::ActorState {
                actor,
                state: ActorState::Restarting,
                restarts: a.opts.restarts,
                reason: Some(cause),
            });
            let gpus: Vec<u32> = a.gpus.iter().map(|(i, _)| *i).collect();
            let job = a.create.spec.job_id;
            self.actors.insert(actor, a);
            let w = self.new_actor_worker(job, &gpus, actor, &mut out);
            if let Some(a) = self.actors.get_mut(&actor) {
                a.worker = w;
            }
            return out;
        }
        self.end_for_good(actor, a, &reason, &mut out);
        // Remember it dead, so later calls here fail at once with the cause.
        self.dead_actors.insert(actor, reason);
        let mut tail = Vec::new();
        self.pump(&mut tail);
        out.extend(tail);
        out
    }

    /// Dead for good (DA-1): frees its resources, fails what waits for it
    /// (and its creator, if not answered yet) with `reason`, and reports
    /// it dead.
    pub(super) fn end_for_good(
        &mut self,
        actor: ActorId,
        mut a: LocalActor,
        reason: &str,
        out: &mut Vec<Action>,
    ) {
        self.give_back(&a.create.spec.strategy, &a.held, &a.gpus);
        let creator = (!a.replied).then_some((a.create.owner, crate::ids::TaskId(actor.0)));
        let waiting = a.waiting.drain(..).map(|q| (q.owner, q.spec.task_id));
        for (owner, task_id) in waiting.chain(creator) {
            out.push(Action::Reply {
                owner,
                task_id,
                outcome: died(actor, reason.to_string()),
            });
        }
        out.push(Action::ActorState {
            actor,
            state: ActorState::Dead,
            restarts: a.opts.restarts,
            reason: Some(reason.to_string()),
        });
    }

    /// Kills, for good, the actors whose creation matches `pred` (their
    /// placement group went away): the worker's death reports `reason`.
    pub(super) fn kill_actors_where(
        &mut self,
        pred: impl Fn(&TaskSpec) -> bool,
        reason: &str,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        for a in self.actors.values_mut().filter(|a| pred(&a.create.spec)) {
            a.no_restart = true;
            a.death = Some(reason.to_string());
            out.push(Action::Kill { worker: a.worker });
        }
        out
    }

    /// Calls held by the actors here: (call, its actor's worker, sent to it).
    pub(super) fn actor_calls(&self) -> Vec<(&Queued, WorkerId, bool)> {
        let mut out = Vec::new();
        for a in self.actors.values() {
            out.extend(a.inflight.iter().map(|q| (q, a.worker, true)));
            out.extend(a.waiting.iter().map(|q| (q, a.worker, false)));
        }
        out
    }

    /// Whether `actor` lives here (or its constructor is queued here).
    pub fn hosts_actor(&self, actor: ActorId) -> bool {
        self.actors.contains_key(&actor) || self.pre_waiting.contains_key(&actor)
    }

    /// Why an actor that lived here is dead, if it did.
    pub fn dead_reason(&self, actor: ActorId) -> Option<&str> {
        self.dead_actors.get(&actor).map(String::as_str)
    }
}
