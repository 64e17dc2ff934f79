//! A draining node (DR-1 seen from its own raylet): the head's status says
//! this node is being drained, so work submitted here goes to other nodes
//! (or waits, parked, for one that can run it), and what waits in the
//! queue is spilled; work already accepted — running, spilled here by a
//! peer, or placed in one of this node's bundles — goes on until the node
//! leaves (at its deadline, or when idle), when the usual node-death
//! retries take over.

use super::bundles::bundle_of;
use super::{Action, Dispatcher, Queued};
use crate::ids::TaskId;
use crate::proto::task::WireStrategy;

impl Dispatcher {
    /// The head says this node is (or is no longer) being drained.
    pub fn set_draining(&mut self, reason: Option<String>) -> Vec<Action> {
        let started = reason.is_some() && self.draining.is_none();
        if started {
            tracing::info!(node = %self.me, reason = reason.as_deref().unwrap_or(""), "draining: no new work here");
        }
        self.draining = reason;
        let mut out = Vec::new();
        if started {
            self.pump(&mut out);
        }
        out
    }

    /// Whether this node is being drained.
    pub fn draining(&self) -> bool {
        self.draining.is_some()
    }

    /// Whether `q` may start here: anything while not draining; while
    /// draining, only work this node already accepted.
    pub(super) fn open_to(&self, q: &Queued) -> bool {
        self.draining.is_none() || q.spec.spilled || bundle_of(&q.spec.strategy).is_some()
    }

    /// The policy's view with this node in it, as a place for new work only
    /// while it is not draining.
    pub(super) fn view_with_me(&mut self) {
        let mut me = self.local.clone();
        // BP-4: what a refused bundle waits for is taken, to the policy
        // (GPUs aside: its view of them is by total).
        if let Some(mut kept) = self.held_back_free() {
            kept.set(prism_scheduler::GPU, prism_scheduler::Quantity::ZERO);
            let _ = me.allocate(&kept);
        }
        self.view.upsert(self.me, me);
        if self.draining.is_some() {
            self.view.set_alive(self.me, false);
        }
    }

    /// While draining: whether nothing here needs the node any more — no
    /// task queued or running, and every live actor can start again on
    /// another node (restarts left, not bound to this node or a bundle).
    /// The node may then leave before its deadline.
    pub fn drain_done(&self) -> bool {
        if self.draining.is_none() || !self.queue.is_empty() {
            return false;
        }
        let actor_slot = |t: &TaskId| self.actors.keys().any(|a| a.0 == t.0);
        let tasks_running = self.running.keys().any(|t| !actor_slot(t));
        let movable = self.actors.values().all(|a| {
            let strategy = &a.create.spec.strategy;
            let bound = match strategy {
                WireStrategy::NodeAffinity { node, soft } => !soft && *node == self.me,
                WireStrategy::Bundle { .. } => true,
                _ => false,
            };
            !a.no_restart && a.opts.restarts < a.opts.max_restarts && !bound
        });
        !tasks_running && movable
    }
}
