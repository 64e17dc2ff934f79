//! The fence (DA-4): this node was declared dead by the head, which has
//! restarted its actors elsewhere (or declared them dead), so the
//! incarnations here stop before the node registers again. Their calls are
//! not lost with them:
//!
//! - **DF-1** a call that waited here, never sent to the worker, goes on to
//!   the actor's next incarnation (routed through the head's location, as
//!   any call to an actor on another node) without spending a retry;
//! - **DF-2** a call the worker had (sent through this raylet, or directly
//!   by a caller here whose connection then broke) may have run: it is
//!   re-sent while `attempt < max_task_retries`, else it fails with
//!   `ActorDied` naming the fence, as for any worker death (DA-3);
//! - **DF-3** a fenced actor is not remembered dead: the head may restart
//!   it anywhere, here included; later calls from here follow it;
//! - **DF-4** work other nodes spilled here (tasks, and actor creations
//!   still waiting for resources) ends too: its senders stopped waiting for
//!   this node when the head declared it dead (PE-1) and retried it
//!   elsewhere or failed it, so it must not run here as well. Running
//!   tasks' workers are killed (their resources come back with the
//!   worker's exit, D-1); queued ones are dropped. Work of this node's own
//!   processes goes on: its owners never gave up on it.

use super::actors::died;
use super::{Action, Dispatcher, Owner, Queued};
use crate::ids::ActorId;
use crate::proto::task::{Failure, Outcome, TaskKind, TaskSpec};

/// An actor fenced here: why, and how often its calls may be re-sent.
#[derive(Debug, Clone)]
pub(super) struct Fenced {
    reason: String,
    max_task_retries: u32,
}

impl Dispatcher {
    /// This node was declared dead (DA-4): every actor whose worker runs
    /// here ends now, before the node registers again. Its worker is
    /// killed, its resources are given back, its creator (if not answered
    /// yet) fails with `reason`, its calls go on (DF-1, DF-2), and its death
    /// is reported at once, under the id the node was declared dead with,
    /// which the head ignores (HC-1).
    pub fn fence(&mut self, reason: &str) -> Vec<Action> {
        let mut out = self.fence_spilled(reason);
        for (actor, mut a) in std::mem::take(&mut self.actors) {
            self.running.remove(&crate::ids::TaskId(actor.0));
            // Its exit finds no actor here, and changes nothing.
            out.push(Action::Kill { worker: a.worker });
            let fenced = Fenced {
                reason: reason.to_string(),
                max_task_retries: a.opts.max_task_retries,
            };
            let sent = a.inflight.drain(..).map(|q| (q.owner, q.spec));
            for (owner, spec) in sent {
                fenced.resend_or_fail(actor, owner, spec, &mut out);
            }
            // DF-1: in arrival order, after the re-sent ones.
            for q in a.waiting.drain(..) {
                out.push(Action::ForwardCall {
                    actor,
                    owner: q.owner,
                    task: q.spec,
                });
            }
            self.end_for_good(actor, a, reason, &mut out);
            self.fenced.insert(actor, fenced);
        }
        let mut tail = Vec::new();
        self.pump(&mut tail);
        out.extend(tail);
        out
    }

    /// DF-4: ends the work peers spilled here; its replies reach no one
    /// (the peers' streams are gone) but keep D-2 whole.
    fn fence_spilled(&mut self, reason: &str) -> Vec<Action> {
        let mut out = Vec::new();
        let me = self.me;
        let spilled = |q: &Queued| matches!(q.owner, Owner::Spilled(_));
        let failed = |q: &Queued| Action::Reply {
            owner: q.owner,
            task_id: q.spec.task_id,
            outcome: Outcome::Failed(Failure::NodeDied {
                node: me,
                detail: reason.to_string(),
            }),
        };
        let mut dropped: Vec<Queued> = self.queue.iter().filter(|q| spilled(q)).cloned().collect();
        self.queue.retain(|q| !spilled(q));
        self.queue.compact();
        let (gone, kept) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| spilled(&p.q));
        self.parked = kept;
        dropped.extend(gone.into_iter().map(|p: super::parked::Parked| p.q));
        for q in &dropped {
            out.push(failed(q));
        }
        // Calls that waited for a dropped creation follow the actor to
        // wherever its sender places it now.
        for q in &dropped {
            if let TaskKind::CreateActor(c) = &q.spec.kind {
                self.calls_follow_actor(c.actor_id, &mut out);
            }
        }
        for r in self.running.values_mut() {
            let task = matches!(r.task.spec.kind, TaskKind::Task);
            if !task || !spilled(&r.task) || r.cancelled {
                continue;
            }
            r.cancelled = true;
            out.push(failed(&r.task));
            out.push(Action::Kill { worker: r.worker });
            self.killing.insert(r.worker);
        }
        out
    }

    /// DF-2 for calls a caller here sent straight to a fenced actor's
    /// worker and handed back when its connection broke (none if the actor
    /// was not fenced here).
    pub(super) fn fenced_calls_lost(
        &self,
        actor: ActorId,
        owner: Owner,
        calls: Vec<TaskSpec>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(fenced) = self.fenced.get(&actor) {
            for spec in calls {
                fenced.resend_or_fail(actor, owner, spec, &mut out);
            }
        }
        out
    }
}

impl Fenced {
    /// DF-2: one call that may have run in the fenced worker.
    fn resend_or_fail(
        &self,
        actor: ActorId,
        owner: Owner,
        mut spec: TaskSpec,
        out: &mut Vec<Action>,
    ) {
        if spec.attempt < self.max_task_retries {
            spec.attempt += 1;
            out.push(Action::ForwardCall {
                actor,
                owner,
                task: spec,
            });
        } else {
            out.push(Action::Reply {
                owner,
                task_id: spec.task_id,
                outcome: died(actor, format!("{} before this call finished", self.reason)),
            });
        }
    }
}
