//! Actors in the head core: registration (names), state reports from
//! raylets, lookups, and what a node's death means for its actors (AT-4):
//! a restart on a live node that fits, picked with the raylets' own policy
//! ([`choose_node`]), or death with the cause.

use super::{bad, Clock, Effect, HeadCore};
use crate::head::actor_table::NodeLoss;
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

    /// Actors lost with `node`: restart those that may move (AT-4).
    pub(super) fn actors_lost(&mut self, now: Clock, node: NodeId, reason: &str) {
        let losses = self.actors.node_died(node, reason);
        if losses.is_empty() {
            return;
        }
        let status = self.status(now);
        for loss in losses {
            let (actor, create) = match loss {
                NodeLoss::Dead(a) => {
                    warn!(actor = %a, %node, "actor dead with its node");
                    continue;
                }
                NodeLoss::Restart(a, create) => (a, create),
            };
            match choose_node(&status, &create.task) {
                Ok((target, addr)) => self.push(Effect::RestartActor {
                    actor,
                    node: target,
                    addr,
                    create,
                }),
                Err(why) => {
                    // AT-5: it waits for a node that can take it.
                    warn!(%actor, %node, "no node can take the actor's restart yet: {why}");
                    let n = restart_number(&create.task);
                    self.actors.wait_for_node(actor, n, now.at, why, true);
                }
            }
        }
    }

    /// AT-5: places the restarts waiting for a node where one can take
    /// them now; one that waited past [`RESTART_WAIT`] is dead.
    pub(super) fn restarts_tick(&mut self, now: Clock) {
        let waiting = self.actors.waiting();
        if waiting.is_empty() {
            return;
        }
        let status = self.status(now);
        for (actor, n, since, why, place) in waiting {
            let again = self
                .restart_pending(actor, n)
                .then(|| self.actors.restart_again(actor, n))
                .flatten();
            let Some(create) = again else {
                self.actors.stop_waiting(actor);
                continue;
            };
            let waited = now.at.saturating_duration_since(since);
            let late = waited >= RESTART_WAIT;
            if !place {
                // Recovered mid-restart: a raylet may still bring it up
                // (queued there for resources, perhaps), so it is not
                // placed twice; dead if none has in time.
                if waited >= RECOVERED_RESTART_WAIT {
                    self.actors.stop_waiting(actor);
                    let why = format!(
                        "{why}, and no node reported it up within {RECOVERED_RESTART_WAIT:?}"
                    );
                    warn!(%actor, "{why}");
                    self.actors.restart_failed(actor, &why);
                }
                continue;
            }
            match choose_node(&status, &create.task) {
                Ok((target, addr)) => {
                    info!(%actor, node = %target, "a node can take the actor's restart now");
                    self.actors.stop_waiting(actor);
                    self.push(Effect::RestartActor {
                        actor,
                        node: target,
                        addr,
                        create: Box::new(create),
                    });
                }
                Err(none) if late => {
                    self.actors.stop_waiting(actor);
                    let why = format!(
                        "it cannot restart: no node could take it within {RESTART_WAIT:?} ({why}; now: {none})"
                    );
                    warn!(%actor, "{why}");
                    self.actors.restart_failed(actor, &why);
                }
                Err(_) => {}
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
    /// fence ended the constructor, DF-4) is placed again, as for the loss
    /// that caused it (AT-5: on a live node, or when one can take it);
    /// otherwise the actor is dead.
    pub fn restart_failed(&mut self, now: Clock, f: RestartFailure) {
        let RestartFailure {
            actor,
            n,
            node,
            why,
            refused,
        } = f;
        warn!(%actor, %node, "cannot restart the actor: {why}");
        // Only that restart, still under way and placed nowhere else: one
        // that came up (and failed on its own, reported by its node), a
        // later restart, or a dead actor keeps its state.
        if !self.restart_pending(actor, n) {
            return;
        }
        if refused && self.actors.restart_again(actor, n).is_some() {
            info!(%actor, %node, "placing an actor's restart again: its node did not run it");
            self.actors.wait_for_node(actor, n, now.at, why, true);
            self.restarts_tick(now);
            return;
        }
        self.actors.restart_failed(actor, &why);
    }
}

/// AT-5: how long a restart waits for a node that can take it (Ray keeps
/// such an actor pending for ever; a deadline ends every wait).
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
    /// Whether the node surely does not run it (it refused it, or its
    /// fence ended it), rather than no answer (it may still be queued).
    pub refused: bool,
}

/// AT-5: how long a restart under way when the head recovered waits for a
/// raylet to report it up (it may wait there for resources) before the
/// actor is dead.
pub(crate) const RECOVERED_RESTART_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

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
