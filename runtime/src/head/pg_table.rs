//! The head's placement-group table as a pure state machine (the I/O of
//! reserving bundles on raylets lives in `placement.rs`). Invariants:
//!
//! - **PG-1** a group is `Created` exactly when every bundle has a node;
//! - **PG-2** a removed group holds no node and never leaves `Removed`;
//! - **PG-3** under STRICT_SPREAD no two bundles share a node, and under
//!   STRICT_PACK all share one (the placer keeps it; the table checks it).

use crate::ids::{JobId, NodeId, PlacementGroupId};
use crate::proto::placement::{PgCreate, PgInfo, PgState, PgStrategyWire};
use prism_scheduler::ResourceSet;
use std::collections::BTreeMap;

/// The reason of a group no placement attempt has looked at yet.
pub const NOT_TRIED: &str = "not placed yet";

/// Removed groups kept for `prism list placement-groups`.
const KEEP_REMOVED: usize = 1000;

/// What the placer must reserve for one group.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaceWork {
    /// The group.
    pub pg: PlacementGroupId,
    /// Bundles without a node: (index, resources).
    pub bundles: Vec<(u32, ResourceSet)>,
    /// The layout.
    pub strategy: PgStrategyWire,
    /// Nodes holding the group's other bundles (STRICT_SPREAD must avoid
    /// them; STRICT_PACK must use that one node).
    pub holding: Vec<NodeId>,
}

/// Every placement group the head has seen.
#[derive(Debug, Default)]
pub struct PgTable {
    groups: BTreeMap<PlacementGroupId, PgInfo>,
    removed_order: std::collections::VecDeque<PlacementGroupId>,
    /// Removed before their creation arrived (requests travel unordered).
    tombstones: std::collections::VecDeque<PlacementGroupId>,
    /// The most recently created groups, newest last.
    created_order: std::collections::VecDeque<PlacementGroupId>,
    /// Groups whose durable row changed (or that were forgotten).
    dirty: std::collections::BTreeSet<PlacementGroupId>,
}

/// Recently created groups remembered for `recent_created`.
const KEEP_RECENT: usize = 256;

impl PgTable {
    /// A new pending group; the same request again is a no-op.
    pub fn create(&mut self, req: PgCreate) -> Result<(), String> {
        if req.bundles.is_empty() {
            return Err("a placement group needs at least one bundle".into());
        }
        if let Some((i, _)) = req
            .bundles
            .iter()
            .enumerate()
            .find(|(_, b)| b.to_set().is_empty())
        {
            return Err(format!("bundle {i} reserves nothing"));
        }
        if self.groups.contains_key(&req.pg) {
            return Ok(());
        }
        let n = req.bundles.len();
        self.dirty.insert(req.pg);
        let tombstoned = self.tombstones.contains(&req.pg);
        self.groups.insert(
            req.pg,
            PgInfo {
                pg: req.pg,
                name: req.name,
                strategy: req.strategy,
                state: PgState::Pending,
                reason: Some(NOT_TRIED.into()),
                bundles: req.bundles,
                nodes: vec![None; n],
                addresses: vec![String::new(); n],
                job: req.job,
                detached: req.detached,
                reschedules: 0,
            },
        );
        if tombstoned {
            self.tombstones.retain(|t| *t != req.pg);
            let _ = self.remove(req.pg, "removed before its creation reached the head");
        }
        Ok(())
    }

    /// One group.
    pub fn get(&self, pg: PlacementGroupId) -> Option<&PgInfo> {
        self.groups.get(&pg)
    }

    /// Every group, oldest id first.
    pub fn list(&self) -> Vec<PgInfo> {
        self.groups.values().cloned().collect()
    }

    /// Groups waiting for bundles, with what to reserve.
    pub fn work(&self) -> Vec<PlaceWork> {
        self.groups
            .values()
            .filter(|g| {
                matches!(
                    g.state,
                    PgState::Pending | PgState::Rescheduling | PgState::Infeasible
                )
            })
            .map(|g| PlaceWork {
                pg: g.pg,
                bundles: g
                    .nodes
                    .iter()
                    .zip(&g.bundles)
                    .enumerate()
                    .filter(|(_, (n, _))| n.is_none())
                    .map(|(i, (_, b))| (i as u32, b.to_set()))
                    .collect(),
                strategy: g.strategy,
                holding: g.nodes.iter().flatten().copied().collect(),
            })
            .collect()
    }

    /// Bundles reserved (PG-1: `Created` once all are). Ignored for a
    /// group removed meanwhile (the caller must give them back: returns false).
    pub fn placed(&mut self, pg: PlacementGroupId, at: &[(u32, NodeId, String)]) -> bool {
        let Some(g) = self.groups.get_mut(&pg) else {
            return false;
        };
        if g.state == PgState::Removed {
            return false;
        }
        self.dirty.insert(pg);
        for (i, node, addr) in at {
            if let Some(slot) = g.nodes.get_mut(*i as usize) {
                *slot = Some(*node);
                g.addresses[*i as usize] = addr.clone();
            }
        }
        if g.nodes.iter().all(Option::is_some) {
            g.state = PgState::Created;
            g.reason = None;
            self.created_order.push_back(pg);
            if self.created_order.len() > KEEP_RECENT {
                self.created_order.pop_front();
            }
        }
        true
    }

    /// A placement attempt failed: stay pending (or infeasible) with why.
    pub fn not_placed(&mut self, pg: PlacementGroupId, reason: String, infeasible: bool) {
        if let Some(g) = self.groups.get_mut(&pg) {
            if g.state == PgState::Removed {
                return;
            }
            self.dirty.insert(pg);
            if g.state != PgState::Rescheduling {
                g.state = if infeasible {
                    PgState::Infeasible
                } else {
                    PgState::Pending
                };
            }
            g.reason = Some(reason);
        }
    }

    /// Removes a group (PG-2); returns the nodes (and addresses) that hold
    /// its bundles, to give them back.
    pub fn remove(
        &mut self,
        pg: PlacementGroupId,
        reason: &str,
    ) -> Result<Vec<(NodeId, String)>, String> {
        let Some(g) = self.groups.get_mut(&pg) else {
            // Its creation may still be on the way: remember the removal.
            self.tombstones.push_back(pg);
            if self.tombstones.len() > KEEP_REMOVED {
                self.tombstones.pop_front();
            }
            return Ok(Vec::new());
        };
        if g.state == PgState::Removed {
            return Err(format!("placement group {pg} was already removed"));
        }
        let mut nodes: Vec<(NodeId, String)> = Vec::new();
        for (n, a) in g.nodes.iter().zip(&g.addresses) {
            if let Some(n) = n {
                if !nodes.iter().any(|(m, _)| m == n) {
                    nodes.push((*n, a.clone()));
                }
            }
        }
        g.state = PgState::Removed;
        self.dirty.insert(pg);
        g.reason = Some(reason.to_string());
        g.nodes.iter_mut().for_each(|n| *n = None);
        g.addresses.iter_mut().for_each(String::clear);
        self.removed_order.push_back(pg);
        while self.removed_order.len() > KEEP_REMOVED {
            if let Some(old) = self.removed_order.pop_front() {
                self.groups.remove(&old);
                self.dirty.insert(old);
            }
        }
        Ok(nodes)
    }

    /// A node died: its bundles need nodes again. Returns the groups hit.
    pub fn node_died(&mut self, node: NodeId) -> Vec<PlacementGroupId> {
        let mut hit = Vec::new();
        for g in self.groups.values_mut() {
            if g.state == PgState::Removed || !g.nodes.contains(&Some(node)) {
                continue;
            }
            for (n, a) in g.nodes.iter_mut().zip(g.addresses.iter_mut()) {
                if *n == Some(node) {
                    *n = None;
                    a.clear();
                }
            }
            g.state = PgState::Rescheduling;
            self.dirty.insert(g.pg);
            g.reschedules += 1;
            g.reason = Some(format!("node {node} died; placing its bundles again"));
            hit.push(g.pg);
        }
        hit
    }

    /// A table recovered from durable rows. A group that was not created
    /// may have bundles prepared on raylets by a reservation the head did not
    /// live to record: it starts again from no node (the core gives back
    /// whatever raylets hold for it before placing it again).
    pub fn restore(rows: Vec<PgInfo>) -> PgTable {
        let mut t = PgTable::default();
        for mut g in rows {
            match g.state {
                PgState::Removed => t.removed_order.push_back(g.pg),
                PgState::Created => t.created_order.push_back(g.pg),
                _ => {
                    g.nodes.iter_mut().for_each(|n| *n = None);
                    g.addresses.iter_mut().for_each(String::clear);
                }
            }
            t.groups.insert(g.pg, g);
        }
        t
    }

    /// Groups whose durable row changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<PlacementGroupId> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// Other groups of `pg`'s job created recently and still created.
    pub fn recent_created(&self, pg: PlacementGroupId) -> Vec<PgInfo> {
        let Some(job) = self.groups.get(&pg).map(|g| g.job) else {
            return Vec::new();
        };
        self.created_order
            .iter()
            .filter(|id| **id != pg)
            .filter_map(|id| self.groups.get(id))
            .filter(|g| g.job == job && g.state == PgState::Created)
            .cloned()
            .collect()
    }

    /// Groups a job created that must go when it ends (not detached).
    pub fn owned_by(&self, job: JobId) -> Vec<PlacementGroupId> {
        self.groups
            .values()
            .filter(|g| g.job == job && !g.detached && g.state != PgState::Removed)
            .map(|g| g.pg)
            .collect()
    }
}

#[cfg(test)]
#[path = "pg_table_tests.rs"]
mod tests;
