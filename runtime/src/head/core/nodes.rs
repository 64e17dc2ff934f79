//! Nodes in the head core: heartbeats, drains, and what the node table's
//! events (a node registered, suspected, back, dead) mean for the other
//! tables — a dead node's objects, actors and placement-group bundles.

use super::{Clock, HeadCore};
use crate::head::node_table::{HeartbeatOutcome, NodeEvent};
use crate::ids::NodeId;
use crate::proto::common::{Demand, NodeState};
use crate::proto::head::{ErrorKind, HeadResponse};
use std::time::Duration;
use tracing::{info, warn};

impl HeadCore {
    pub(super) fn heartbeat(
        &mut self,
        now: Clock,
        id: NodeId,
        (free, leased): (prism_scheduler::ResourceSet, prism_scheduler::ResourceSet),
        demand: Vec<Demand>,
    ) -> HeadResponse {
        let r = match self.nodes.handle_heartbeat(now.at, id, free) {
            HeartbeatOutcome::Ack => {
                self.nodes.set_leased(id, leased);
                self.demand.insert(id, demand);
                HeadResponse::HeartbeatAck
            }
            HeartbeatOutcome::ReRegister(reason) => HeadResponse::ReRegister { reason },
            HeartbeatOutcome::Leave(reason) => HeadResponse::Leave { reason },
        };
        self.after_node_events(now);
        r
    }

    /// Starts draining a node (DR-1…DR-3): schedulers skip it from now on;
    /// it leaves once idle or at the deadline.
    pub(super) fn drain(
        &mut self,
        now: Clock,
        id: NodeId,
        reason: String,
        deadline_ms: u64,
    ) -> HeadResponse {
        let deadline = Duration::from_millis(deadline_ms);
        match self
            .nodes
            .handle_drain(now.at, id, reason.clone(), deadline)
        {
            Ok(left) => {
                tracing::info!(node = %id, %reason, left_ms = left.as_millis() as u64, "draining node");
                HeadResponse::Ok
            }
            Err(e) => HeadResponse::Error {
                kind: ErrorKind::BadRequest,
                message: e.to_string(),
            },
        }
    }

    pub(super) fn is_live(&self, id: NodeId) -> bool {
        self.nodes
            .node(id)
            .is_some_and(|n| n.state != NodeState::Dead)
    }

    /// What node-table events imply for the other tables.
    pub(super) fn after_node_events(&mut self, now: Clock) {
        while let Some(ev) = self.nodes.poll_event() {
            match ev {
                NodeEvent::Registered { id, incarnation } => {
                    let name = self
                        .nodes
                        .node(id)
                        .map(|n| n.reg.node_name.clone())
                        .unwrap_or_default();
                    info!(node = %id, %name, incarnation, "node registered");
                    // New room may let waiting groups in.
                    self.placing.nudge();
                }
                NodeEvent::Suspected(id) => warn!(node = %id, "node missed heartbeats: suspect"),
                NodeEvent::Rejoined(id) => {
                    info!(node = %id, "node is back after the head restarted")
                }
                NodeEvent::Recovered(id) => {
                    info!(node = %id, "suspect node heartbeat again: alive")
                }
                NodeEvent::Died { id, reason } => {
                    warn!(node = %id, %reason, "node dead");
                    self.objects.remove_node(id, &reason);
                    self.demand.remove(&id);
                    self.actors_lost(now, id, &reason);
                    let hit = self.groups.node_died(id);
                    if !hit.is_empty() {
                        warn!(node = %id, groups = hit.len(), "node held placement-group bundles; rescheduling them");
                        self.placing.nudge();
                    }
                }
            }
        }
    }
}
