//! Direct calls handed back: a caller on this node sent calls straight to
//! an actor's worker ([`crate::proto::direct`]), the connection broke, and
//! the calls it had not been answered for come here. They are answered as
//! calls the raylet itself had sent that worker (DA-3): re-sent to the next
//! incarnation while `max_task_retries` allows, else `ActorDied` naming the
//! worker's death.
//!
//! - **DD-1** if the raylet has not yet seen that worker die, the calls
//!   join its in-flight list (oldest first) and its death answers them (a
//!   worker that still lives is killed: its calls' fate is unknowable);
//! - **DD-2** if the actor has restarted since, each call is re-sent to the
//!   new incarnation or failed with the old one's cause, now;
//!
//! A call answered by DD-2 or DD-3 says its worker died "before this call
//! finished": whether it had started is known only to the dead worker.
//! - **DD-3** if the actor is dead here, or unknown, each fails at once
//!   (one fenced here is re-sent to its next incarnation or fails, DF-2).

use super::actors::{died, Phase};
use super::{Action, Dispatcher, Owner, Queued};
use crate::proto::task::LostCalls;
use prism_scheduler::ResourceSet;

impl Dispatcher {
    /// Answers (now or at the worker's death) calls a direct connection lost.
    pub fn direct_calls_lost(&mut self, lost: LostCalls, owner: Owner) -> Vec<Action> {
        let LostCalls {
            actor_id: actor,
            restarts,
            calls,
        } = lost;
        let queued = |spec| Queued {
            request: ResourceSet::new(),
            spec,
            owner,
        };
        let mut out = Vec::new();
        let Some(a) = self.actors.get_mut(&actor) else {
            // DF-2: fenced here, it lives on elsewhere.
            if self.dead_reason(actor).is_none() && self.fenced.contains_key(&actor) {
                return self.fenced_calls_lost(actor, owner, calls);
            }
            // DD-3.
            let why = self.dead_reason(actor).map_or_else(
                || "its worker's connection broke and this node no longer hosts it".to_string(),
                |r| format!("{r} before this call finished"),
            );
            for spec in calls {
                out.push(Action::Reply {
                    owner,
                    task_id: spec.task_id,
                    outcome: died(actor, why.clone()),
                });
            }
            return out;
        };
        if a.opts.restarts == restarts {
            if calls.is_empty() {
                // Nothing unanswered: no reason to end the worker (and no
                // kill on a process's word alone).
                return out;
            }
            // DD-1: the same worker; its death is on its way.
            for spec in calls.into_iter().rev() {
                a.inflight.push_front(queued(spec));
            }
            // A worker that still lives cannot answer them without the
            // connection: it ends (and restarts, if it may).
            out.push(Action::Kill { worker: a.worker });
            return out;
        }
        // DD-2: an older incarnation's calls.
        let cause = a
            .last_death
            .clone()
            .unwrap_or_else(|| "its worker died".into());
        let gpus: Vec<u32> = a.gpus.iter().map(|(i, _)| *i).collect();
        let mut again = Vec::new();
        for mut spec in calls {
            if spec.attempt < a.opts.max_task_retries && !a.no_restart {
                spec.attempt += 1;
                again.push(spec);
            } else {
                out.push(Action::Reply {
                    owner,
                    task_id: spec.task_id,
                    outcome: died(actor, format!("{cause} before this call finished")),
                });
            }
        }
        if a.phase == Phase::Alive {
            for spec in again {
                out.push(Action::Execute {
                    worker: a.worker,
                    task: spec.clone(),
                    gpus: gpus.clone(),
                });
                a.inflight.push_back(queued(spec));
            }
        } else {
            for spec in again.into_iter().rev() {
                a.waiting.push_front(queued(spec));
            }
        }
        out
    }
}
