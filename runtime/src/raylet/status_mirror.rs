//! A raylet's copy of the head's node rows, kept by the changes the head
//! sends (`GetStatusSince`, NT-6): a fetch moves what changed, not the
//! whole cluster. Pure: deltas in, the cluster's status out.

use crate::ids::NodeId;
use crate::proto::common::{ClusterStatus, NodeStatus, StatusDelta};
use std::collections::BTreeMap;

/// The rows as of the last delta applied.
#[derive(Debug, Default)]
pub struct StatusMirror {
    /// The head run the rows are from (0: none yet).
    epoch: u64,
    version: u64,
    nodes: BTreeMap<NodeId, NodeStatus>,
}

impl StatusMirror {
    /// What to ask the head for: `(epoch, version)`.
    pub fn cursor(&self) -> (u64, u64) {
        (self.epoch, self.version)
    }

    /// Applies `d` and returns the cluster as it now stands (without the
    /// demand, which raylets do not use). A delta older than what the
    /// mirror has (two fetches answered out of order) changes nothing.
    pub fn apply(&mut self, d: StatusDelta) -> ClusterStatus {
        let same_run = d.epoch == self.epoch;
        if !(same_run && d.version < self.version) {
            if d.full || !same_run {
                self.nodes.clear();
            }
            for id in &d.gone {
                self.nodes.remove(id);
            }
            for n in d.nodes {
                self.nodes.insert(n.node_id, n);
            }
            self.epoch = d.epoch;
            self.version = d.version;
        }
        ClusterStatus {
            cluster_id: d.cluster_id,
            head_address: d.head_address,
            nodes: self.nodes.values().cloned().collect(),
            demand: Vec::new(),
            ended_jobs: d.ended_jobs,
        }
    }
}
