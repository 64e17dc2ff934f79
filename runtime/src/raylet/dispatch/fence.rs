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
//!   it anywhere, here included; later calls from here follow it.

use super::actors::died;
use super::{Action, Dispatcher, Owner};
use crate::ids::ActorId;
use crate::proto::task::TaskSpec;

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
    pub fn fence_actors(&mut self, reason: &str) -> Vec<Action> {
        let mut out = Vec::new();
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
