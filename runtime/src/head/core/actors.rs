//! Actors in the head core: registration (names), state reports from
//! raylets, lookups, and what a node's death means for its actors (AT-4):
//! a restart on a live node that fits, picked with the raylets' own policy
//! ([`choose_node`]), or death with the cause.

use super::{bad, Clock, Effect, HeadCore};
use crate::head::actor_table::{NodeLoss, RestartWait};
use crate::ids::{ActorId, NodeId};
use crate::proto::common::{ClusterStatus, NodeState};
use crate::proto::head::{ActorState, HeadRequest, HeadResponse};
use crate::proto::task::TaskSpec;
use prism_scheduler::{ClusterView, Decision, Scheduler};
use tracing::{info, warn};

impl HeadCore {
    pub(super) fn actor_request(&mut self, req: HeadRequest) -> HeadResponse {
        match req {
            HeadRequest::RegisterActor(info, create) => {
                match self.actors.register(info, create.map(|c| *c)) {
                    Ok(()) => HeadResponse::Ok,
                    Err(message) => HeadResponse::Error {
                        kind: crate::proto::head::ErrorKind::Conflict,
                        message,
                    },
                }
            }
            HeadRequest::UpdateActor {
                actor_id,
                state,
                node,
                restarts,
                reason,
            } => {
                // HC-1: a late report from a node declared dead must not pull
                // the actor back there (it may be restarting elsewhere).
                let from_dead = node.as_ref().is_some_and(|(n, _)| !self.is_live(*n));
                if from_dead {
                    tracing::info!(actor = %actor_id, ?state, "ignoring a late report from a node declared dead");
                }
                // AT-2: an incarnation that comes up for an actor already
                // dead (its restart given up while a node still held it)
                // is told so, and its raylet stops it.
                let zombie = self.actors.get(actor_id).filter(|a| {
                    a.state == ActorState::Dead && state != ActorState::Dead && !from_dead
                });
                if let Some(a) = zombie {
                    let why = a.death_reason.clone().unwrap_or_default();
                    return HeadResponse::Error {
                        kind: crate::proto::head::ErrorKind::Conflict,
                        message: format!(
                            "actor {actor_id} is dead ({why}); this incarnation must stop"
                        ),
                    };
                }
                if !from_dead {
                    self.actors.update(actor_id, state, node, restarts, reason);
                }
                HeadResponse::Ok
            }
            HeadRequest::GetActor { actor_id } => {
                HeadResponse::Actor(self.actors.get(actor_id).cloned())
            }
            HeadRequest::GetNamedActor { namespace, name } => {
                HeadResponse::Actor(self.actors.by_name(&namespace, &name).cloned())
            }
            HeadRequest::ListActors => HeadResponse::Actors(self.actors.list()),
            other => bad(format!(
                "not an actor request: {}",
                super::request_name(&other)
            )),
        }
    }

    /// Actors lost with `node`: restart those that may move (AT-4), and
    /// place again the restarts sent there that it never reported up.
    pub(super) fn actors_lost(&mut self, now: Clock, node: NodeId, reason: &str) {
        let losses = self.actors.node_died(node, reason);
        for loss in losses {
            match loss {
                NodeLoss::Dead(a) => warn!(actor = %a, %node, "actor dead with its node"),
                NodeLoss::Restart(a, create) => {
                    let n = restart_number(&create.task);
                    let why = format!("its node {node} died ({reason})");
                    self.actors.wait(a, n, now.at, why, RestartWait::Placement);
                }
            }
        }
        for (actor, w) in self.actors.waiting() {
            if matches!(w.on, RestartWait::Sent(x) | RestartWait::Report(Some(x)) if x == node) {
                info!(%actor, %node, "placing an actor's restart again: its node died before it came up");
                let why = format!("{}; its node {node} died ({reason})", w.why);
                // A new loss: its wait for a node starts again.
                self.actors.stop_waiting(actor);
                self.actors
                    .wait(actor, w.n, now.at, why, RestartWait::Placement);
            }
        }
        self.restarts_tick(now);
    }

    /// AT-5: places the restarts waiting for a node where one can take
    /// them now; one that waited past [`RESTART_WAIT`] for a node, or past
    /// [`REPORT_WAIT`] for a report, is dead.
    pub(super) fn restarts_tick(&mut self, now: Clock) {
        let waiting = self.actors.waiting();
        if waiting.is_empty() {
            return;
        }
        let status = self.status(now);
        for (actor, w) in waiting {
            let again = self
                .restart_pending(actor, w.n)
                .then(|| self.actors.restart_again(actor, w.n))
                .flatten();
            let Some(create) = again else {
                self.actors.stop_waiting(actor);
                continue;
            };
            let waited = now.at.saturating_duration_since(w.since);
            let why = w.why;
            match w.on {
                RestartWait::Sent(_) => {}
                // It may run there still (queued for resources, perhaps),
                // so it is not placed twice; dead if none has in time.
                RestartWait::Report(_) if waited >= REPORT_WAIT => {
                    self.actors.stop_waiting(actor);
                    let why = format!("{why}, and no node reported it up within {REPORT_WAIT:?}");
                    warn!(%actor, "{why}");
                    self.actors.restart_failed(actor, &why);
                }
                RestartWait::Report(_) => {}
                RestartWait::Placement => match choose_node(&status, &create.task) {
                    Ok((target, addr)) => {
                        info!(%actor, node = %target, "placing the actor's restart");
                        let sent = RestartWait::Sent(target);
                        self.actors.wait(actor, w.n, now.at, why, sent);
                        self.push(Effect::RestartActor {
                            actor,
                            node: target,
                            addr,
                            create: Box::new(create),
                        });
                    }
                    Err(none) if waited >= RESTART_WAIT => {
                        self.actors.stop_waiting(actor);
                        let why = format!(
                            "it cannot restart: no node could take it within {RESTART_WAIT:?} ({why}; now: {none})"
                        );
                        warn!(%actor, "{why}");
                        self.actors.restart_failed(actor, &why);
                    }
                    Err(none) => {
                        if waited.is_zero() {
                            warn!(%actor, "no node can take the actor's restart yet: {none}");
                        }
                    }
                },
            }
        }
    }

    /// Whether restart number `n` of `actor` is under way and placed
    /// nowhere (no node reported it up, no later restart began).
    fn restart_pending(&self, actor: ActorId, n: u32) -> bool {
        self.actors.get(actor).is_some_and(|a| {
            a.state == ActorState::Restarting && a.restarts == n && a.node_id.is_none()
        })
    }

    /// A restart the core asked for failed on the node it was sent to.
    /// One that node surely does not run (it refused it, DF-6, or its
    /// fence ended the constructor, DF-4), or one whose node is dead by
    /// now, is placed again (AT-5: on a live node, or when one can take
    /// it); one that got no answer waits for that node's report, or its
    /// death; one that failed there leaves the actor dead.
    pub fn restart_failed(&mut self, now: Clock, f: RestartFailure) {
        let RestartFailure {
            actor,
            n,
            node,
            why,
            answer,
        } = f;
        warn!(%actor, %node, "cannot restart the actor: {why}");
        // Only that restart, still under way and placed nowhere else: one
        // that came up (and failed on its own, reported by its node), a
        // later restart, or a dead actor keeps its state.
        // And only an answer from where it was last sent: one sent on
        // since (its node died) is not placed twice.
        let sent = self.actors.waiting_for(actor).filter(|w| w.n == n);
        let Some(w) = sent.filter(|w| w.on == RestartWait::Sent(node)) else {
            return;
        };
        let waited = now.at.saturating_duration_since(w.since);
        if !self.restart_pending(actor, n) || self.actors.restart_again(actor, n).is_none() {
            return;
        }
        let on = match answer {
            RestartAnswer::Failed => {
                self.actors.stop_waiting(actor);
                self.actors.restart_failed(actor, &why);
                return;
            }
            // As for its node's death (which may come after): its wait
            // for a node starts again.
            _ if !self.is_live(node) => {
                self.actors.stop_waiting(actor);
                RestartWait::Placement
            }
            // Refused by live nodes for longer than a node is waited for.
            RestartAnswer::NotRun if waited >= RESTART_WAIT => {
                self.actors.stop_waiting(actor);
                let why = format!("it cannot restart: the nodes it was placed on refused it for {RESTART_WAIT:?} ({why})");
                self.actors.restart_failed(actor, &why);
                return;
            }
            RestartAnswer::NotRun => RestartWait::Placement,
            RestartAnswer::Unanswered => RestartWait::Report(Some(node)),
        };
        if on == RestartWait::Placement {
            info!(%actor, %node, "placing an actor's restart again: its node did not run it");
        }
        self.actors.wait(actor, n, now.at, why, on);
        self.restarts_tick(now);
    }
}

/// AT-5: how long a restart waits for a node that can take it (Ray keeps
/// such an actor pending for ever; a deadline ends every wait), counted
/// from its first wait since its last node loss: a restart live nodes
/// keep refusing ends after it too.
pub(crate) const RESTART_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// A restart that failed on the node it was sent to, as the shell saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartFailure {
    /// The actor.
    pub actor: ActorId,
    /// Its restart number.
    pub n: u32,
    /// Where it was sent.
    pub node: NodeId,
    /// What went wrong.
    pub why: String,
    /// What the node answered.
    pub answer: RestartAnswer,
}

/// What the node a restart was sent to answered, when it did not run it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RestartAnswer {
    /// It surely does not run it: it refused it (DF-6), or its fence ended
    /// the constructor (DF-4). Placed again.
    NotRun,
    /// It failed there (its constructor, say): the actor is dead.
    Failed,
    /// No answer (the connection was lost): it may run there still.
    Unanswered,
}

/// AT-5: how long a restart that may be under way on a node (one that
/// gave no answer, or any when the head recovered) waits for that node to
/// report it up (it may wait there for resources) before the actor is
/// dead.
pub(crate) const REPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// The restart number a creation carries (0 for a first creation).
pub fn restart_number(task: &TaskSpec) -> u32 {
    match &task.kind {
        crate::proto::task::TaskKind::CreateActor(c) => c.restarts,
        _ => 0,
    }
}

/// Where a lost actor's constructor runs next: a live node that fits its
/// resources and placement, by the raylets' own policy. `Err` says why
/// there is none.
pub(crate) fn choose_node(
    status: &ClusterStatus,
    task: &TaskSpec,
) -> Result<(NodeId, String), String> {
    let mut view: ClusterView<NodeId> = ClusterView::new();
    // DR-1: a draining node takes no new actor.
    let open =
        |n: &&crate::proto::common::NodeStatus| n.state == NodeState::Alive && n.draining.is_none();
    for n in status.nodes.iter().filter(open) {
        view.upsert(n.node_id, n.to_resources());
    }
    let strategy = task.strategy.to_strategy()?;
    let request = task.resources.to_set();
    match Scheduler::new().decide(&view, &request, &strategy, None) {
        Decision::Place(n) | Decision::Queue(n) => {
            let addr = status
                .nodes
                .iter()
                .find(|s| s.node_id == n)
                .map(|s| s.address.clone())
                .unwrap_or_default();
            Ok((n, addr))
        }
        Decision::Infeasible(why) => Err(format!("no live node can host it: {why}")),
    }
}
