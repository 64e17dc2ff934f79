//! What a raylet tells its heartbeat loop (`head_link.rs`) and does with
//! what the head answers: its free resources and demand, the head's node
//! rows, a new id after it was declared dead, and the fence before it
//! registers again (DA-4).

use super::head_link::Reporter;
use super::service::TaskService;
use crate::ids::NodeId;
use crate::proto::common::{Demand, Resources};
use std::sync::Arc;

/// What the heartbeat loop reports for this node, and what it hears back.
impl Reporter for Arc<TaskService> {
    fn report(&self, node: NodeId) -> (Resources, Resources, Vec<Demand>) {
        let (available, leased) = {
            let d = self.disp();
            (Resources::from(d.available()), Resources::from(&d.leased()))
        };
        (available, leased, self.demand(node))
    }

    fn status_cursor(&self) -> (u64, u64) {
        TaskService::status_cursor(self)
    }

    fn status(&self, delta: crate::proto::common::StatusDelta) -> usize {
        self.apply_status(delta)
    }

    fn declared_dead(&self, reason: &str) {
        // The head restarts this node's actors elsewhere (or declares them
        // dead) when it declares the node dead, and peers run the work they
        // spilled here elsewhere: it all stops here, so nothing runs twice
        // (DA-4, DF-4).
        let why = format!(
            "its node was declared dead by the head ({reason}): this incarnation is stopped so \
             that it never runs twice"
        );
        // Its calls go on to the next incarnations (DF-1, DF-2), which are
        // never looked for under the old id.
        self.peers.declare_lost(self.node(), reason);
        // Before the new id: the deaths are reported under the old one.
        // Peers' call streams open now close, in the same turn: what they
        // sent is theirs to re-send, and a call read from them before they
        // close is dropped, not run (DF-5).
        let mark = self.next_id();
        self.act(|d| {
            self.fences.send_modify(|n| *n += 1);
            d.fence(&why, mark)
        });
    }

    fn new_id(&self, id: NodeId) {
        self.transfer.set_node_id(id);
        self.set_node_id(id);
    }

    fn tick(&self, now: std::time::Instant) {
        TaskService::tick(self, now);
    }
}
