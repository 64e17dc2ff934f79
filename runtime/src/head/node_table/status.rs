//! The node table's status rows, whole or as the changes since a version,
//! part of the table's pure state machine.
//!
//! Every change to what a row shows (registration, state, free resources,
//! drain) takes the next version of the head process's run (`epoch`); a
//! raylet asks for what changed since the version it has (NT-6), so a
//! fetch costs the head in proportion to the changes, not to the cluster.
//!
//! - NT-6: applying to the rows of version `v` every delta answered since
//!   `v`, in order, gives the rows of the table, except heartbeat ages
//!   (as of the row's last change). A draining row's time left is sent
//!   when the row changes and counted down by the mirror's own clock, so
//!   a quiet draining node costs a delta nothing.

use super::{NodeEntry, NodeTable};
use crate::ids::NodeId;
use crate::proto::common::{NodeState, NodeStatus, Resources};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

/// Forgotten nodes remembered for deltas; older askers get every node.
const GONE_KEPT: usize = 4096;

/// Which version each node's row last changed at.
#[derive(Debug)]
pub(super) struct Versions {
    /// This run's id (never 0: 0 asks for everything).
    epoch: u64,
    /// The newest version handed out.
    version: u64,
    changed: HashMap<NodeId, u64>,
    by_version: BTreeMap<u64, NodeId>,
    /// Nodes forgotten, with the version of their forgetting.
    gone: VecDeque<(u64, NodeId)>,
    /// A delta from before this version may miss forgotten nodes.
    floor: u64,
}

impl Versions {
    pub(super) fn new() -> Versions {
        Versions {
            epoch: rand::random::<u64>() | 1,
            version: 0,
            changed: HashMap::new(),
            by_version: BTreeMap::new(),
            gone: VecDeque::new(),
            floor: 0,
        }
    }

    /// `id`'s row changed.
    pub(super) fn touch(&mut self, id: NodeId) {
        self.version += 1;
        if let Some(old) = self.changed.insert(id, self.version) {
            self.by_version.remove(&old);
        }
        self.by_version.insert(self.version, id);
    }

    /// `id`'s row is gone.
    pub(super) fn forget(&mut self, id: NodeId) {
        if let Some(old) = self.changed.remove(&id) {
            self.by_version.remove(&old);
        }
        self.version += 1;
        self.gone.push_back((self.version, id));
        while self.gone.len() > GONE_KEPT {
            if let Some((v, _)) = self.gone.pop_front() {
                self.floor = v;
            }
        }
    }
}

/// The rows changed since a version (see [`NodeTable::status_since`]).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDelta {
    /// The run of versions.
    pub epoch: u64,
    /// The newest version included.
    pub version: u64,
    /// `nodes` is every row.
    pub full: bool,
    /// Rows added or changed.
    pub nodes: Vec<NodeStatus>,
    /// Rows forgotten.
    pub gone: Vec<NodeId>,
}

fn row(n: &NodeEntry, now: Instant) -> NodeStatus {
    NodeStatus {
        node_id: n.id,
        name: n.reg.node_name.clone(),
        address: n.reg.address.clone(),
        state: n.state,
        death_reason: n.death_reason.clone(),
        incarnation: n.incarnation,
        is_head: n.reg.is_head,
        total: Resources::from(&n.total),
        // A dead node offers nothing (its last report is stale).
        available: if n.state == NodeState::Dead {
            Resources::default()
        } else {
            Resources::from(&n.available)
        },
        leased: if n.state == NodeState::Dead {
            Resources::default()
        } else {
            Resources::from(&n.leased)
        },
        labels: n.reg.labels.clone(),
        gpus: n.reg.gpus.clone(),
        last_heartbeat_ms_ago: now.saturating_duration_since(n.last_heartbeat).as_millis() as u64,
        pid: n.reg.pid,
        draining: n
            .drain
            .as_ref()
            .filter(|_| n.state != NodeState::Dead)
            .map(|d| crate::proto::common::DrainStatus {
                reason: d.reason.clone(),
                ms_left: d.ms_left(now),
                stopped_new_work: d.seen,
            }),
    }
}

impl NodeTable {
    /// The status report: every row.
    pub fn status(&self, now: Instant) -> Vec<NodeStatus> {
        self.nodes.values().map(|n| row(n, now)).collect()
    }

    /// The rows changed since `version` of run `epoch` (NT-6); every row
    /// when `epoch` is another run's (or 0) or the changes since are no
    /// longer all known.
    pub fn status_since(&self, now: Instant, epoch: u64, version: u64) -> NodeDelta {
        let v = &self.versions;
        if epoch != v.epoch || version < v.floor || version > v.version {
            return NodeDelta {
                epoch: v.epoch,
                version: v.version,
                full: true,
                nodes: self.status(now),
                gone: Vec::new(),
            };
        }
        let changed = v.by_version.range(version + 1..).map(|(_, id)| *id);
        NodeDelta {
            epoch: v.epoch,
            version: v.version,
            full: false,
            nodes: changed
                .filter_map(|id| self.nodes.get(&id))
                .map(|n| row(n, now))
                .collect(),
            gone: v
                .gone
                .iter()
                .filter(|(at, _)| *at > version)
                .map(|(_, id)| *id)
                .collect(),
        }
    }
}
