//! The fence (DA-4): this node was declared dead by the head, which has
//! restarted its actors elsewhere (or declared them dead), so the
//! incarnations here stop before the node registers again, and so does
//! the work other nodes spilled here. What they held is not lost with them:
//!
//! - **DF-1** a call that waited here, never sent to the worker, goes on to
//!   the actor's next incarnation (routed through the head's location, as
//!   any call to an actor on another node) without spending a retry;
//! - **DF-2** a call the worker had (sent through this raylet, or directly
//!   by a caller here whose connection then broke) may have run: it is
//!   re-sent while `attempt < max_task_retries`, else it fails with
//!   `ActorDied` naming the fence, as for any worker death (DA-3);
//! - **DF-3** a fenced actor is not remembered dead: the head may restart
//!   it anywhere, here included; later calls from here follow it. One
//!   killed for good here before the fence (`prism::kill`, no restart)
//!   stays killed: its calls fail with the kill, and a kill follows it to
//!   any incarnation the head started meanwhile;
//! - **DF-4** work other nodes spilled here ends: a running task's worker
//!   is killed (its resources come back with the worker's exit, D-1) and
//!   its sender told `NodeDied`, which it retries within `max_retries`;
//!   queued tasks and actor creations are handed back (`Moved`: placed
//!   again, no attempt spent). A sender that already stopped waiting for
//!   this node (PE-1) never reads either answer: it retried or failed the
//!   work itself. An actor's restart the head placed here is handed back
//!   too, and one whose constructor runs is killed with its actor, and the
//!   head told `NodeDied`: the head places every restart that was under
//!   way on a node it declared dead again, so neither may come up here.
//!   The node's placement-group bundles are given back (the head places
//!   them elsewhere), and the work in them ends with `NodeDied`. Other
//!   work of this node's own processes goes on: its owners never gave up
//!   on it;
//! - **DF-5** a call a peer raylet sent on its ordered stream is that
//!   peer's to re-send or fail (AR-1, AR-2): the raylet closes the peers'
//!   streams in the turn of the fence (results already made still go out
//!   first), and drops every call from them, whether it waited for an
//!   actor, for a constructor, or is read after the fence. Streams opened
//!   after the fence are served as usual;
//! - **DF-6** work sent to this node names the incarnation it is meant
//!   for; once fenced (from the fence on, before and after the new id) a
//!   raylet refuses work meant for an earlier one, without running it,
//!   with `Draining` naming it: its sender places it again elsewhere (no
//!   attempt spent: it never ran), the head a refused restart too
//!   ([`refuse_for`]). Work pinned to that node (a bundle there, a hard
//!   affinity) can go nowhere else: `NodeDied`, which its sender retries
//!   within `max_retries` or fails with, as for a lost node. Work
//!   for an id it does not know yet is for its next one (the head placed
//!   it there before the registration's answer arrived): it waits for
//!   that id (at most `NEXT_ID_WAIT`), then runs under it, or is refused.

use super::actors::died;
use super::{Action, Dispatcher, Owner, Queued};
use crate::ids::{ActorId, NodeId};
use crate::proto::task::{Failure, Outcome, TaskKind, TaskSpec};

/// DF-6: why work meant for node `to` is refused by this raylet, now node
/// `me` (after waiting for `to` if that may be its next id): `fenced`
/// says why `to` was declared dead (if it was), `earlier` whether `to` is
/// one of this raylet's earlier ids, `pinned` whether the work may run
/// nowhere but on `to`.
pub(in crate::raylet) fn refuse_for(
    to: NodeId,
    me: NodeId,
    earlier: bool,
    fenced: Option<String>,
    pinned: bool,
) -> Option<Failure> {
    let detail = match fenced {
        Some(why) => format!(
            "node {to} was declared dead ({why}) and its incarnation fenced; the raylet runs \
             as {me} now and did not run it"
        ),
        None if to == me => return None,
        None if earlier => format!(
            "node {to} is an earlier incarnation of this raylet, now {me}; it did not run it"
        ),
        None => format!("node {to} is not this raylet (node {me}); it did not run it"),
    };
    Some(match pinned {
        true => Failure::NodeDied { node: to, detail },
        false => Failure::Draining {
            node: to,
            reason: detail,
        },
    })
}

/// DF-6 for bundles: what a raylet that must not apply a bundle operation
/// meant for node `to` answers (arguments as for [`refuse_for`]); `None`:
/// it applies it.
#[derive(Debug, PartialEq)]
pub(in crate::raylet) enum BundleRefusal {
    /// A Return for this raylet's id or an earlier one: the fence of that
    /// incarnation gave back all it held, so it is done.
    Done,
    /// Refused, naming why (the head places the bundles elsewhere).
    Refused(String),
}

/// [`BundleRefusal`] for an operation (`is_return`: a Return).
pub(in crate::raylet) fn bundle_refusal(
    is_return: bool,
    to: NodeId,
    me: NodeId,
    earlier: bool,
    fenced: Option<String>,
) -> Option<BundleRefusal> {
    let f = refuse_for(to, me, earlier, fenced, false)?;
    if is_return && (earlier || to == me) {
        return Some(BundleRefusal::Done);
    }
    Some(BundleRefusal::Refused(match f {
        Failure::Draining { reason, .. } => reason,
        other => other.summary(),
    }))
}

/// DF-6: whether `spec` may run nowhere but on the node it was sent to.
pub(in crate::raylet) fn pinned(spec: &TaskSpec) -> bool {
    matches!(
        spec.strategy,
        crate::proto::task::WireStrategy::Bundle { .. }
            | crate::proto::task::WireStrategy::NodeAffinity { soft: false, .. }
    )
}

/// An actor fenced here: why, how often its calls may be re-sent, and
/// whether it had been killed for good here (DF-3).
#[derive(Debug, Clone)]
pub(super) struct Fenced {
    reason: String,
    max_task_retries: u32,
    killed: Option<String>,
}

impl Dispatcher {
    /// This node was declared dead (DA-4): the work peers spilled here ends
    /// (DF-4), its placement-group bundles are given back (the head
    /// places them elsewhere) and the work in them ends, and every actor
    /// whose worker runs here ends now, before the node registers again. Its worker is killed, its resources are given
    /// back, its creator (if not answered yet) fails with `reason`, its
    /// calls go on (DF-1..DF-3, DF-5), and its death is reported at once,
    /// under the id the node was declared dead with, which the head
    /// ignores (HC-1).
    /// `mark`: peer streams numbered below it are closed (DF-5).
    pub fn fence(&mut self, reason: &str, mark: u64) -> Vec<Action> {
        self.fence_mark = self.fence_mark.max(mark);
        let mut out = Vec::new();
        // DF-5: peers' calls waiting for a constructor here.
        for q in self.pre_waiting.values_mut() {
            q.retain(|c| {
                let drop = matches!(c.owner, Owner::PeerStream(_));
                if drop {
                    out.push(Action::Dropped {
                        task_id: c.spec.task_id,
                    });
                }
                !drop
            });
        }
        out.extend(self.fence_spilled(reason));
        for (actor, mut a) in std::mem::take(&mut self.actors) {
            self.running.remove(&crate::ids::TaskId(actor.0));
            // Its exit finds no actor here, and changes nothing.
            out.push(Action::Kill { worker: a.worker });
            let fenced = Fenced {
                reason: reason.to_string(),
                max_task_retries: a.opts.max_task_retries,
                killed: a
                    .no_restart
                    .then(|| a.death.clone().unwrap_or_else(|| reason.to_string())),
            };
            // Those its worker had first, then those that waited (DF-1).
            let sent = a.inflight.drain(..).map(|q| (q, true));
            let calls: Vec<_> = sent
                .chain(a.waiting.drain(..).map(|q| (q, false)))
                .collect();
            for (q, sent) in calls {
                fenced.follow(actor, q.owner, q.spec, sent, &mut out);
            }
            if let Some(why) = &fenced.killed {
                out.push(Action::ForwardCall {
                    actor,
                    owner: Owner::Raylet,
                    task: super::kill_call_because(actor, why),
                });
            }
            // DF-4: a restart the head placed here whose constructor had
            // not come up is the head's to place again: the node died
            // under it.
            if let Some(owner) = a.unanswered_head() {
                out.push(Action::Reply {
                    owner,
                    task_id: crate::ids::TaskId(actor.0),
                    outcome: Outcome::Failed(Failure::NodeDied {
                        node: self.me,
                        detail: reason.to_string(),
                    }),
                });
            }
            self.end_for_good(actor, a, reason, &mut out);
            self.fenced.insert(actor, fenced);
        }
        out.extend(self.fence_bundles(reason));
        let mut tail = Vec::new();
        self.pump(&mut tail);
        out.extend(tail);
        out
    }

    /// DF-4: ends the work peers spilled here, and the restarts the head
    /// placed here (it places them again once it declared the node dead).
    fn fence_spilled(&mut self, reason: &str) -> Vec<Action> {
        let mut out = Vec::new();
        let me = self.me;
        let ends = |q: &Queued| matches!(q.owner, Owner::Spilled(_));
        let mut dropped = self.queue.take_where(ends);
        self.queue.compact();
        let (gone, kept) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| ends(&p.q));
        self.parked = kept;
        dropped.extend(gone.into_iter().map(|p: super::parked::Parked| p.q));
        for q in &dropped {
            out.push(Action::Reply {
                owner: q.owner,
                task_id: q.spec.task_id,
                outcome: Outcome::Failed(Failure::Moved { node: me }),
            });
        }
        // Calls that waited for a handed-back creation follow the actor to
        // wherever its sender places it now.
        for q in &dropped {
            if let TaskKind::CreateActor(c) = &q.spec.kind {
                self.calls_follow_actor(c.actor_id, &mut out);
            }
        }
        let running: Vec<_> = self
            .running
            .iter()
            .filter(|(_, r)| matches!(r.task.spec.kind, TaskKind::Task) && ends(&r.task))
            .map(|(id, _)| *id)
            .collect();
        for id in running {
            let outcome = Outcome::Failed(Failure::NodeDied {
                node: me,
                detail: reason.to_string(),
            });
            self.kill_running(id, outcome, &mut out);
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
                fenced.follow(actor, owner, spec, true, &mut out);
            }
        }
        out
    }

    /// DF-5: whether `owner` is a peer's stream a fence closed.
    pub(super) fn fenced_stream(&self, owner: Owner) -> bool {
        matches!(owner, Owner::PeerStream(n) if n < self.fence_mark)
    }

    /// The actor lives here again: it is no longer the fenced one.
    pub(super) fn unfence(&mut self, actor: ActorId) {
        self.fenced.remove(&actor);
    }
}

impl Fenced {
    /// One call the fenced incarnation held; `sent`: its worker had it.
    fn follow(
        &self,
        actor: ActorId,
        owner: Owner,
        mut spec: TaskSpec,
        sent: bool,
        out: &mut Vec<Action>,
    ) {
        // DF-5: a peer's call is the peer's to re-send.
        if matches!(owner, Owner::PeerStream(_)) {
            out.push(Action::Dropped {
                task_id: spec.task_id,
            });
            return;
        }
        let why = match &self.killed {
            Some(k) => Some(k.clone()),
            None if sent && spec.attempt >= self.max_task_retries => {
                Some(format!("{} before this call finished", self.reason))
            }
            None => None,
        };
        match why {
            Some(why) => out.push(Action::Reply {
                owner,
                task_id: spec.task_id,
                outcome: died(actor, why),
            }),
            None => {
                // DF-2: a re-send spends a retry; DF-1: a wait does not.
                spec.attempt += u32::from(sent);
                out.push(Action::ForwardCall {
                    actor,
                    owner,
                    task: spec,
                });
            }
        }
    }
}

impl Dispatcher {
    /// DF-6: counts work refused for another incarnation of this node.
    pub(in crate::raylet) fn count_refused(&mut self) {
        self.refused += 1;
    }
}
