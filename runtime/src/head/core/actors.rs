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
use tracing::warn;

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
                    warn!(%actor, %node, "cannot restart the actor: {why}");
                    self.actors
                        .restart_failed(actor, &format!("it cannot restart: {why}"));
                }
            }
        }
    }

    /// Restart number `n` the core asked for failed on its node.
    pub fn restart_failed(&mut self, actor: ActorId, n: u32, why: &str) {
        warn!(%actor, "cannot restart the actor: {why}");
        // Only that restart, still under way and placed nowhere else: one
        // that came up (and failed on its own, reported by its node), a
        // later restart, or a dead actor keeps its state.
        let pending = self.actors.get(actor).is_some_and(|a| {
            a.state == ActorState::Restarting && a.restarts == n && a.node_id.is_none()
        });
        if pending {
            self.actors.restart_failed(actor, why);
        }
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
