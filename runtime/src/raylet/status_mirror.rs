//! A raylet's copy of the head's node rows, kept by the changes the head
//! sends (`GetStatusSince`, NT-6): a fetch moves what changed, not the
//! whole cluster. A draining row's time left counts down from when the
//! row came (the head sends it only when the row changes). Pure: deltas
//! and the time in, the cluster's status out.

use crate::ids::NodeId;
use crate::proto::common::{ClusterStatus, NodeStatus, StatusDelta};
use std::collections::BTreeMap;
use std::time::Instant;

/// The rows as of the last delta applied.
#[derive(Debug, Default)]
pub struct StatusMirror {
    /// The head run the rows are from (0: none yet).
    epoch: u64,
    version: u64,
    /// Each row, with when it came.
    nodes: BTreeMap<NodeId, (NodeStatus, Instant)>,
}

impl StatusMirror {
    /// What to ask the head for: `(epoch, version)`.
    pub fn cursor(&self) -> (u64, u64) {
        (self.epoch, self.version)
    }

    /// Applies `d`, received at `now`, and returns the cluster as it now
    /// stands (draining nodes' time left as of `now`; without the
    /// demand, which raylets do not use). A delta older than what the
    /// mirror has (two fetches answered out of order), or a partial one
    /// from another head run (a late answer from a head since restarted),
    /// changes nothing.
    pub fn apply(&mut self, d: StatusDelta, now: Instant) -> ClusterStatus {
        let same_run = d.epoch == self.epoch;
        let stale = if same_run {
            d.version < self.version
        } else {
            !d.full
        };
        if !stale {
            if d.full {
                self.nodes.clear();
            }
            for id in &d.gone {
                self.nodes.remove(id);
            }
            for n in d.nodes {
                self.nodes.insert(n.node_id, (n, now));
            }
            self.epoch = d.epoch;
            self.version = d.version;
        }
        ClusterStatus {
            cluster_id: d.cluster_id,
            head_address: d.head_address,
            nodes: self.nodes.values().map(|r| aged(r, now)).collect(),
            demand: Vec::new(),
            ended_jobs: d.ended_jobs,
        }
    }
}

/// A row as of `now`: its drain deadline nearer by the time since it came.
fn aged((row, came): &(NodeStatus, Instant), now: Instant) -> NodeStatus {
    let mut row = row.clone();
    if let Some(d) = row.draining.as_mut() {
        let since = now.saturating_duration_since(*came).as_millis() as u64;
        d.ms_left = d.ms_left.saturating_sub(since);
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::common::{NodeState, Resources};

    fn row(id: NodeId) -> NodeStatus {
        NodeStatus {
            node_id: id,
            name: "n".into(),
            address: "127.0.0.1:1".into(),
            state: NodeState::Alive,
            death_reason: None,
            incarnation: 1,
            is_head: false,
            total: Resources::default(),
            available: Resources::default(),
            leased: Resources::default(),
            labels: vec![],
            gpus: vec![],
            last_heartbeat_ms_ago: 0,
            pid: 1,
            draining: None,
        }
    }

    fn delta(epoch: u64, version: u64, full: bool, nodes: Vec<NodeStatus>) -> StatusDelta {
        StatusDelta {
            cluster_id: crate::ids::ClusterId::random(),
            head_address: String::new(),
            epoch,
            version,
            full,
            nodes,
            gone: vec![],
            ended_jobs: vec![],
        }
    }

    #[test]
    fn late_answers_from_this_run_or_an_old_one_change_nothing() {
        let (a, b, c) = (NodeId::random(), NodeId::random(), NodeId::random());
        let mut m = StatusMirror::default();
        let t = Instant::now();
        m.apply(delta(7, 5, true, vec![row(a), row(b)]), t);
        // A restarted head's whole table replaces the old run's.
        let s = m.apply(delta(9, 2, true, vec![row(a), row(c)]), t);
        assert_eq!(s.nodes.len(), 2);
        assert_eq!(m.cursor(), (9, 2));
        // A late partial answer from the old run, then an older one from
        // this run: neither touches the rows.
        m.apply(delta(7, 6, false, vec![row(b)]), t);
        let s = m.apply(delta(9, 1, false, vec![row(b)]), t);
        let ids: Vec<NodeId> = s.nodes.iter().map(|n| n.node_id).collect();
        assert!(ids.contains(&a) && ids.contains(&c) && !ids.contains(&b));
        assert_eq!(m.cursor(), (9, 2));
    }
}
