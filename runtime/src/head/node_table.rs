//! The head's node table: a pure state machine, time passed in.
//!
//! `handle_*(now, input)` change the table and queue [`NodeEvent`]s that
//! the shell drains with [`NodeTable::poll_event`]; [`NodeTable::tick`]
//! runs the failure detector.
//!
//! Invariants:
//! - NT-1: a node declared dead never becomes alive again; its heartbeats
//!   are answered with "register again", which gives a new node id and the
//!   next incarnation under the same name.
//! - NT-2: a node that missed `suspect_after` heartbeat intervals is
//!   suspect (slow); one that missed `dead_after` is dead. A heartbeat from
//!   a suspect node makes it alive again.
//! - NT-3: registering a name whose previous incarnation is still alive
//!   declares that incarnation dead (replaced).
//! - NT-4: a head recovered from its durable rows counts every node that was
//!   live as alive from the moment of recovery: it has the recovery grace
//!   (at least a dead timeout) to heartbeat again, its id still known,
//!   before it is declared dead.
//! - NT-5: while recovered nodes are still coming back (one rejoined less
//!   than a dead timeout ago), no node is declared dead or suspect for its
//!   silence: thousands of nodes re-handshaking with a restarted head may
//!   take longer than the grace, and while they do the head is too busy
//!   to tell a silent node from one whose heartbeats it is late to hear
//!   (Kubernetes stops evicting when a whole zone is unready at once, for
//!   the same reason). When the arrivals stop, silence counts again from
//!   the last one.
//! - NT-6 (in `status`): the changes since a version, applied in order,
//!   give the table's rows.
//! - NT-7: time the head itself did not run is no node's silence: when
//!   its ticks (every half interval) stop for a whole dead timeout (the
//!   head stopped, paused, or starved), that gap, less one interval, is
//!   not counted against any node. Else one stall of the head would
//!   declare every node dead at once, and each would fence its actors
//!   when it heard of it.

use crate::ids::NodeId;
use crate::proto::common::NodeState;
use crate::proto::head::RegisterNode;
use prism_scheduler::ResourceSet;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

mod drain;
mod status;
pub use drain::{Drain, DrainError};
pub use status::NodeDelta;

/// When slow becomes suspect and suspect becomes dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureDetector {
    /// Expected time between heartbeats.
    pub interval: Duration,
    /// Missed intervals before a node is suspect.
    pub suspect_after: u32,
    /// Missed intervals before a node is dead.
    pub dead_after: u32,
}

impl FailureDetector {
    /// How long a node may be silent before it is declared dead.
    pub fn dead_timeout(&self) -> Duration {
        self.interval * self.dead_after.max(1)
    }
}

/// What the table knows of one node.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    /// Its id.
    pub id: NodeId,
    /// Its registration.
    pub reg: RegisterNode,
    /// 1, 2, … under `reg.node_name`.
    pub incarnation: u64,
    /// Everything it has.
    pub total: ResourceSet,
    /// What it last reported free.
    pub available: ResourceSet,
    /// What worker leases held there at its last heartbeat (L-3).
    pub leased: ResourceSet,
    /// Alive, suspect or dead.
    pub state: NodeState,
    /// Why it died.
    pub death_reason: Option<String>,
    /// Its last heartbeat (or registration).
    pub last_heartbeat: Instant,
    /// The SHA-256 of the certificate it registered with: only a connection
    /// presenting that certificate may speak for this node id.
    pub cert: Option<[u8; 32]>,
    /// Recovered from durable rows and not heard from since.
    pub recovered: bool,
    /// Being drained (kept in memory only: a recovered head forgets it).
    pub drain: Option<drain::Drain>,
}

/// Something the shell should log or act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A node registered.
    Registered {
        /// The node.
        id: NodeId,
        /// Its incarnation.
        incarnation: u64,
    },
    /// A node missed heartbeats.
    Suspected(NodeId),
    /// A suspect node heartbeat again.
    Recovered(NodeId),
    /// A node the head recovered from its durable rows heartbeat again.
    Rejoined(NodeId),
    /// A node died.
    Died {
        /// The node.
        id: NodeId,
        /// Why.
        reason: String,
    },
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// Recorded.
    Ack,
    /// Unknown or dead: register again (NT-1).
    ReRegister(String),
    /// Drained: stop (DR-2).
    Leave(String),
}

/// Every node the head has seen, live or dead.
#[derive(Debug)]
pub struct NodeTable {
    detector: FailureDetector,
    nodes: BTreeMap<NodeId, NodeEntry>,
    incarnations: HashMap<String, u64>,
    events: VecDeque<NodeEvent>,
    max_dead: usize,
    dead_order: VecDeque<NodeId>,
    /// Nodes whose durable row changed (registration, death, eviction).
    dirty: std::collections::BTreeSet<NodeId>,
    /// When a recovered node last heartbeat again (NT-5).
    last_rejoin: Option<Instant>,
    /// When the failure detector last ran (NT-7).
    last_tick: Option<Instant>,
    /// Which version each row last changed at (NT-6).
    versions: status::Versions,
    /// Live nodes being drained.
    draining: std::collections::BTreeSet<NodeId>,
}

impl NodeTable {
    /// An empty table.
    pub fn new(detector: FailureDetector) -> NodeTable {
        NodeTable {
            detector,
            nodes: BTreeMap::new(),
            incarnations: HashMap::new(),
            events: VecDeque::new(),
            max_dead: 1000,
            dead_order: VecDeque::new(),
            dirty: Default::default(),
            last_rejoin: None,
            last_tick: None,
            versions: status::Versions::new(),
            draining: Default::default(),
        }
    }

    /// A table recovered from durable rows: every node that was live is
    /// alive again as of `now`, with `grace` (at least a dead timeout) to
    /// heartbeat (NT-4); dead ones stay dead.
    pub fn restore(
        detector: FailureDetector,
        now: Instant,
        grace: std::time::Duration,
        rows: Vec<NodeEntry>,
    ) -> NodeTable {
        // Silence is counted from `last_heartbeat`: a grace longer than the
        // dead timeout starts the count later.
        let extra = grace.saturating_sub(detector.dead_timeout());
        let mut t = NodeTable::new(detector);
        for mut n in rows {
            let inc = t.incarnations.entry(n.reg.node_name.clone()).or_insert(0);
            *inc = (*inc).max(n.incarnation);
            if n.state == NodeState::Dead {
                t.dead_order.push_back(n.id);
            } else {
                n.state = NodeState::Alive;
                n.last_heartbeat = now + extra;
                n.recovered = true;
            }
            t.versions.touch(n.id);
            t.nodes.insert(n.id, n);
        }
        t
    }

    /// Binds node `id` to the certificate it registered with.
    pub fn bind_cert(&mut self, id: NodeId, cert: [u8; 32]) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.cert = Some(cert);
            self.dirty.insert(id);
        }
    }

    /// Nodes whose durable row changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<NodeId> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// The detector settings.
    pub fn detector(&self) -> FailureDetector {
        self.detector
    }

    /// Registers a node under the id the shell chose; returns its incarnation.
    pub fn handle_register(&mut self, now: Instant, id: NodeId, reg: RegisterNode) -> u64 {
        let previous: Vec<NodeId> = self
            .nodes
            .values()
            .filter(|n| n.reg.node_name == reg.node_name && n.state != NodeState::Dead)
            .map(|n| n.id)
            .collect();
        let incarnation = {
            let n = self.incarnations.entry(reg.node_name.clone()).or_insert(0);
            *n += 1;
            *n
        };
        for old in previous {
            self.kill(
                old,
                format!("replaced by incarnation {incarnation} of the same node"),
            );
        }
        let total = reg.resources.to_set();
        self.nodes.insert(
            id,
            NodeEntry {
                id,
                available: total.clone(),
                leased: ResourceSet::new(),
                total,
                reg,
                incarnation,
                state: NodeState::Alive,
                death_reason: None,
                last_heartbeat: now,
                cert: None,
                recovered: false,
                drain: None,
            },
        );
        // A new incarnation starts undrained.
        self.draining.remove(&id);
        self.events
            .push_back(NodeEvent::Registered { id, incarnation });
        self.dirty.insert(id);
        self.versions.touch(id);
        incarnation
    }

    /// Records a heartbeat and the node's free resources.
    pub fn handle_heartbeat(
        &mut self,
        now: Instant,
        id: NodeId,
        available: ResourceSet,
    ) -> HeartbeatOutcome {
        let Some(n) = self.nodes.get_mut(&id) else {
            return HeartbeatOutcome::ReRegister(format!("node {id} is not known to this head"));
        };
        if n.state == NodeState::Dead && n.drain.is_some() {
            return HeartbeatOutcome::Leave(
                n.death_reason.clone().unwrap_or_else(|| "drained".into()),
            );
        }
        match n.state {
            NodeState::Dead => HeartbeatOutcome::ReRegister(format!(
                "node {id} was declared dead ({}); register again",
                n.death_reason.as_deref().unwrap_or("unknown")
            )),
            state => {
                n.last_heartbeat = now;
                if n.available != available || state == NodeState::Suspect {
                    self.versions.touch(id);
                }
                n.available = available;
                if std::mem::take(&mut n.recovered) {
                    self.events.push_back(NodeEvent::Rejoined(id));
                    self.last_rejoin = Some(now);
                }
                if state == NodeState::Suspect {
                    n.state = NodeState::Alive;
                    self.events.push_back(NodeEvent::Recovered(id));
                }
                HeartbeatOutcome::Ack
            }
        }
    }

    /// What worker leases hold on a live node, as its heartbeat said.
    pub fn set_leased(&mut self, id: NodeId, leased: ResourceSet) {
        if let Some(n) = self.nodes.get_mut(&id) {
            if n.state != NodeState::Dead && n.leased != leased {
                n.leased = leased;
                self.versions.touch(id);
            }
        }
    }

    /// What a live node has free, as a raylet reported it outside a
    /// heartbeat (after a bundle operation).
    pub fn set_available(&mut self, id: NodeId, available: ResourceSet) {
        if let Some(n) = self.nodes.get_mut(&id) {
            if n.state != NodeState::Dead && n.available != available {
                n.available = available;
                self.versions.touch(id);
            }
        }
    }

    /// A node leaving cleanly.
    pub fn handle_unregister(&mut self, id: NodeId) -> bool {
        let live = self
            .nodes
            .get(&id)
            .is_some_and(|n| n.state != NodeState::Dead);
        if live {
            self.kill(id, "stopped by its raylet".to_string());
        }
        live
    }

    /// Runs the failure detector (NT-2).
    pub fn tick(&mut self, now: Instant) {
        let d = self.detector;
        // NT-7: a stall of the head is no node's silence.
        let gap = self
            .last_tick
            .replace(now)
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        if gap >= d.dead_timeout() {
            let credit = gap - d.interval;
            for n in self.nodes.values_mut() {
                n.last_heartbeat = (n.last_heartbeat + credit).min(now);
            }
        }
        let mut to_kill = Vec::new();
        let rejoin = self.last_rejoin;
        for n in self.nodes.values_mut() {
            // NT-5: while the herd arrives, silence counts from the last
            // arrival at the earliest.
            let since = match rejoin {
                Some(r) => n.last_heartbeat.max(r),
                None => n.last_heartbeat,
            };
            let silent = now.saturating_duration_since(since);
            match n.state {
                NodeState::Dead => {}
                _ if silent >= d.dead_timeout() => to_kill.push((n.id, silent)),
                NodeState::Alive if silent >= d.interval * d.suspect_after.max(1) => {
                    n.state = NodeState::Suspect;
                    self.events.push_back(NodeEvent::Suspected(n.id));
                    self.versions.touch(n.id);
                }
                _ => {}
            }
        }
        for (id, silent) in to_kill {
            self.kill(id, format!("no heartbeat for {} ms", silent.as_millis()));
        }
        self.drain_deadlines(now);
    }

    fn kill(&mut self, id: NodeId, reason: String) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.state = NodeState::Dead;
            n.death_reason = Some(reason.clone());
            n.available = ResourceSet::new();
            self.events.push_back(NodeEvent::Died { id, reason });
            self.dead_order.push_back(id);
            self.dirty.insert(id);
            self.draining.remove(&id);
            self.versions.touch(id);
        }
        while self.dead_order.len() > self.max_dead {
            if let Some(old) = self.dead_order.pop_front() {
                self.nodes.remove(&old);
                self.dirty.insert(old);
                self.versions.forget(old);
            }
        }
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// One node.
    pub fn node(&self, id: NodeId) -> Option<&NodeEntry> {
        self.nodes.get(&id)
    }

    /// All nodes, by id.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeEntry> {
        self.nodes.values()
    }
}

#[cfg(test)]
mod status_tests;
#[cfg(test)]
mod tests;
