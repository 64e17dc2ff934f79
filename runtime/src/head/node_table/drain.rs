//! Draining a node, part of the node table's pure state machine.
//!
//! - **DR-1** a draining node takes no new work: schedulers skip nodes whose
//!   status says `draining` (its calls, objects and bundles still work).
//! - **DR-2** it leaves at its deadline — declared dead with the reason
//!   `drained (…)`, so its remaining work is retried elsewhere and its
//!   actors restarted elsewhere as for any dead node — and its raylet is
//!   then told to stop, not to register again. A raylet with nothing left
//!   that needs it drains itself again with a zero deadline, to leave at
//!   once.
//! - **DR-3** only a live node that is not the head's own can be drained;
//!   draining one again keeps the earlier deadline if it is sooner.
//! - **DR-4** (the raylet's side, `raylet/drain_copies.rs`) its primary
//!   object copies move to other nodes before it ends its drain early.

use super::{NodeEntry, NodeTable};
use crate::ids::NodeId;
use crate::proto::common::NodeState;
use std::time::{Duration, Instant};

/// A drain under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    /// Why.
    pub reason: String,
    /// When it began.
    pub since: Instant,
    /// When the node leaves even if work still runs.
    pub deadline: Instant,
    /// Its raylet said it takes no new work.
    pub seen: bool,
}

impl Drain {
    /// Milliseconds left before the deadline.
    pub fn ms_left(&self, now: Instant) -> u64 {
        self.deadline.saturating_duration_since(now).as_millis() as u64
    }
}

/// Why a node cannot be drained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrainError {
    /// No such node.
    #[error("no node {0} in this cluster")]
    Unknown(NodeId),
    /// It is dead already.
    #[error("node {0} is dead already ({1})")]
    Dead(NodeId, String),
    /// The head's own node.
    #[error("node {0} runs beside the head: stop the cluster instead of draining it")]
    Head(NodeId),
}

/// The death reason of a drained node.
fn left_reason(n: &NodeEntry) -> String {
    let reason = n.drain.as_ref().map_or("drained", |d| d.reason.as_str());
    format!("drained ({reason})")
}

impl NodeTable {
    /// Starts draining `id` (DR-1, DR-3); returns its deadline from now.
    pub fn handle_drain(
        &mut self,
        now: Instant,
        id: NodeId,
        reason: String,
        deadline: Duration,
    ) -> Result<Duration, DrainError> {
        let n = self.nodes.get_mut(&id).ok_or(DrainError::Unknown(id))?;
        if n.state == NodeState::Dead {
            let why = n.death_reason.clone().unwrap_or_default();
            return Err(DrainError::Dead(id, why));
        }
        if n.reg.is_head {
            return Err(DrainError::Head(id));
        }
        let at = now + deadline;
        match &mut n.drain {
            Some(d) => {
                d.deadline = d.deadline.min(at);
                d.reason = reason;
            }
            None => {
                n.drain = Some(Drain {
                    reason,
                    since: now,
                    deadline: at,
                    seen: false,
                })
            }
        }
        let left = n.drain.as_ref().map_or(deadline, |d| d.deadline - now);
        self.draining.insert(id);
        self.versions.touch(id);
        Ok(left)
    }

    /// The node's raylet has stopped taking new work.
    pub fn drain_seen(&mut self, id: NodeId) {
        if let Some(d) = self.nodes.get_mut(&id).and_then(|n| n.drain.as_mut()) {
            if !d.seen {
                d.seen = true;
                self.versions.touch(id);
            }
        }
    }

    /// DR-2: draining nodes past their deadline leave (a look at the
    /// draining nodes only, not at every node, on each tick).
    pub(super) fn drain_deadlines(&mut self, now: Instant) {
        let due: Vec<(NodeId, String)> = self
            .draining
            .iter()
            .filter_map(|id| self.nodes.get(id))
            .filter(|n| n.state != NodeState::Dead)
            .filter(|n| n.drain.as_ref().is_some_and(|d| now >= d.deadline))
            .map(|n| (n.id, left_reason(n)))
            .collect();
        for (id, reason) in due {
            self.kill(id, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{reg, table};
    use super::*;
    use crate::head::node_table::HeartbeatOutcome;
    use prism_scheduler::{Quantity, ResourceSet, CPU};

    fn busy() -> ResourceSet {
        ResourceSet::new().with(CPU, Quantity::whole(1))
    }

    #[test]
    fn dr_2_a_draining_node_leaves_at_its_deadline_and_is_told_to_stop() {
        let t0 = Instant::now();
        let mut t = table();
        let a = NodeId::random();
        t.handle_register(t0, a, reg("a"));
        let left = t
            .handle_drain(t0, a, "preemption".into(), Duration::from_secs(2))
            .unwrap();
        assert_eq!(left, Duration::from_secs(2));
        let st = t.status(t0);
        let d = st[0].draining.clone().unwrap();
        assert_eq!(
            (d.reason.as_str(), d.ms_left, d.stopped_new_work),
            ("preemption", 2000, false)
        );
        t.drain_seen(a);
        assert!(t.status(t0)[0].draining.as_ref().unwrap().stopped_new_work);
        // Busy: still there before the deadline.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(t.handle_heartbeat(t1, a, busy()), HeartbeatOutcome::Ack);
        t.tick(t1);
        assert_eq!(t.node(a).unwrap().state, NodeState::Alive);
        let t2 = t0 + Duration::from_secs(2);
        t.handle_heartbeat(t2, a, busy());
        t.tick(t2);
        let n = t.node(a).unwrap();
        assert_eq!(n.state, NodeState::Dead);
        assert_eq!(n.death_reason.as_deref(), Some("drained (preemption)"));
        // Its next heartbeat is told to stop, not to register again.
        assert!(matches!(
            t.handle_heartbeat(t2, a, busy()),
            HeartbeatOutcome::Leave(r) if r == "drained (preemption)"
        ));
    }

    #[test]
    fn dr_2_a_zero_deadline_leaves_at_the_next_tick() {
        let t0 = Instant::now();
        let mut t = table();
        let a = NodeId::random();
        t.handle_register(t0, a, reg("a"));
        t.handle_drain(t0, a, "scale-down".into(), Duration::from_secs(30))
            .unwrap();
        // The raylet finds nothing left that needs it.
        t.handle_drain(t0, a, "scale-down".into(), Duration::ZERO)
            .unwrap();
        t.tick(t0);
        assert_eq!(
            t.node(a).unwrap().death_reason.as_deref(),
            Some("drained (scale-down)")
        );
        assert!(matches!(
            t.handle_heartbeat(t0, a, busy()),
            HeartbeatOutcome::Leave(_)
        ));
    }

    #[test]
    fn dr_3_only_live_worker_nodes_drain_and_a_sooner_deadline_wins() {
        let t0 = Instant::now();
        let mut t = table();
        let (a, h) = (NodeId::random(), NodeId::random());
        t.handle_register(t0, a, reg("a"));
        let mut head = reg("h");
        head.is_head = true;
        t.handle_register(t0, h, head);
        assert_eq!(
            t.handle_drain(t0, h, "x".into(), Duration::from_secs(1)),
            Err(DrainError::Head(h))
        );
        let nobody = NodeId::random();
        assert_eq!(
            t.handle_drain(t0, nobody, "x".into(), Duration::from_secs(1)),
            Err(DrainError::Unknown(nobody))
        );
        t.handle_drain(t0, a, "x".into(), Duration::from_secs(10))
            .unwrap();
        let left = t
            .handle_drain(t0, a, "y".into(), Duration::from_secs(3))
            .unwrap();
        assert_eq!(left, Duration::from_secs(3));
        let left = t
            .handle_drain(t0, a, "z".into(), Duration::from_secs(60))
            .unwrap();
        assert_eq!(left, Duration::from_secs(3), "the sooner deadline stays");
        t.tick(t0 + Duration::from_secs(3));
        assert!(matches!(
            t.handle_drain(t0, a, "again".into(), Duration::from_secs(1)),
            Err(DrainError::Dead(..))
        ));
    }
}
