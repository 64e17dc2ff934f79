//! Placement-group bundles on this node, part of the pure dispatcher.
//!
//! A bundle takes its resources from the node's ledger when the head
//! prepares it, and becomes a small ledger of its own: tasks and actors
//! placed "in bundle i of group g" allocate from it, never from the node.
//! Invariants:
//!
//! - **B-1** a bundle holds its node resources from prepare until return,
//!   and gives them back exactly once;
//! - **B-2** nothing runs in a bundle before it is committed;
//! - **B-3** returning a group kills what runs in its bundles and fails what
//!   waits for them, each with [`Failure::PlacementGroupGone`]; the fence
//!   (DF-4) gives back every bundle here, failing that work with
//!   [`Failure::NodeDied`] (its owner may retry it where the bundle went).
//!   What a killed task held comes back with its bundle, never again.

use super::{Action, Dispatcher, Queued};
use crate::ids::PlacementGroupId;
use crate::proto::task::{Failure, Outcome, TaskKind, WireStrategy};
use prism_scheduler::{NodeResources, Quantity, ResourceSet};

/// One reserved bundle.
#[derive(Debug, Clone)]
pub(crate) struct Bundle {
    /// What it took from the node.
    pub(super) held: ResourceSet,
    /// The node's GPU instances it took; bundle instance `i` is `node_gpus[i]`.
    pub(super) node_gpus: Vec<(u32, Quantity)>,
    /// Its own ledger.
    pub(super) ledger: NodeResources,
    pub(super) committed: bool,
}

pub(super) fn bundle_of(s: &WireStrategy) -> Option<(PlacementGroupId, u32)> {
    match s {
        WireStrategy::Bundle { pg, index, .. } => Some((*pg, *index)),
        _ => None,
    }
}

impl Dispatcher {
    /// Reserves bundles of `pg` (all or none); with `commit` they are usable
    /// at once. Re-preparing a bundle already held is a no-op (idempotent).
    pub fn prepare_bundles(
        &mut self,
        pg: PlacementGroupId,
        bundles: Vec<(u32, ResourceSet)>,
        commit: bool,
    ) -> Result<Vec<Action>, String> {
        let mut taken: Vec<u32> = Vec::new();
        for (index, request) in bundles {
            if self.bundles.contains_key(&(pg, index)) {
                continue;
            }
            match self.local.allocate(&request) {
                Ok(node_gpus) => {
                    let slices = node_gpus.iter().map(|g| g.1).collect();
                    let ledger = NodeResources::with_gpu_slices(request.clone(), slices);
                    self.bundles.insert(
                        (pg, index),
                        Bundle {
                            held: request,
                            node_gpus,
                            ledger,
                            committed: false,
                        },
                    );
                    taken.push(index);
                }
                Err(e) => {
                    for i in taken {
                        self.drop_bundle(pg, i);
                    }
                    return Err(format!("bundle {index} does not fit on this node now: {e}"));
                }
            }
        }
        if !taken.is_empty() {
            self.bundles_placed(pg);
        }
        if commit {
            return self.commit_bundles(pg);
        }
        Ok(Vec::new())
    }

    /// Makes the prepared bundles of `pg` usable (B-2).
    pub fn commit_bundles(&mut self, pg: PlacementGroupId) -> Result<Vec<Action>, String> {
        let mut any = false;
        for ((g, _), b) in self.bundles.iter_mut() {
            if *g == pg {
                b.committed = true;
                any = true;
            }
        }
        if !any {
            return Err(format!("no prepared bundle of {pg} on this node"));
        }
        let mut out = Vec::new();
        self.pump(&mut out);
        Ok(out)
    }

    pub(super) fn drop_bundle(&mut self, pg: PlacementGroupId, index: u32) {
        if let Some(b) = self.bundles.remove(&(pg, index)) {
            if let Err(e) = self.local.release(&b.held, &b.node_gpus) {
                tracing::error!("resource ledger: {e}");
            }
            // What still runs in it (killed, its exit not seen yet) took
            // from the bundle, which gave its resources back whole: its
            // end gives nothing back, not even to a bundle placed here
            // again under the same index.
            for r in self.running.values_mut() {
                if bundle_of(&r.task.spec.strategy) == Some((pg, index)) {
                    r.held = ResourceSet::new();
                    r.gpus.clear();
                }
            }
        }
    }

    /// Gives back what `pg` holds here (B-1, B-3): the bundles in `only`,
    /// or all of them when `only` is empty.
    pub fn return_bundles(
        &mut self,
        pg: PlacementGroupId,
        only: &[u32],
        reason: &str,
    ) -> Vec<Action> {
        self.give_back_group(pg, only, reason, false)
    }

    /// DF-4: this node was declared dead, and the head places its bundles
    /// again elsewhere: what they hold here is given back, and the work
    /// in them ends as on a lost node (`NodeDied`, which its owner may
    /// retry), not as for a removed group.
    pub(super) fn fence_bundles(&mut self, reason: &str) -> Vec<Action> {
        let groups: std::collections::BTreeSet<PlacementGroupId> =
            self.bundles.keys().map(|(g, _)| *g).collect();
        let mut out = Vec::new();
        for pg in groups {
            out.extend(self.give_back_group(pg, &[], reason, true));
        }
        out
    }

    /// Gives back `pg`'s bundles in `only` (all when empty); the work in
    /// them fails as on a lost node where `lost`, else as for a removed
    /// group.
    fn give_back_group(
        &mut self,
        pg: PlacementGroupId,
        only: &[u32],
        reason: &str,
        lost: bool,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let me = self.me;
        let gone = |detail: String| match lost {
            true => Outcome::Failed(Failure::NodeDied { node: me, detail }),
            false => Outcome::Failed(Failure::PlacementGroupGone { pg, detail }),
        };
        let picked = |i: u32| only.is_empty() || only.contains(&i);
        let mine = |s: &WireStrategy| bundle_of(s).is_some_and(|(g, i)| g == pg && picked(i));
        // Waiting tasks and actor creations fail at once.
        while let Some(q) = self.queue.remove_first(|q| mine(&q.spec.strategy)) {
            if let TaskKind::CreateActor(c) = &q.spec.kind {
                match lost {
                    // DF-1, DF-3: not dead; its calls follow it to wherever
                    // its creator places it now.
                    true => self.calls_follow_actor(c.actor_id, &mut out),
                    false => {
                        out.extend(self.actor_registration_failed(c.actor_id, reason.to_string()))
                    }
                }
            }
            out.push(Action::Reply {
                owner: q.owner,
                task_id: q.spec.task_id,
                outcome: gone(reason.to_string()),
            });
        }
        // Running tasks are killed and answered now.
        let running: Vec<crate::ids::TaskId> = self
            .running
            .iter()
            .filter(|(_, r)| !r.cancelled && mine(&r.task.spec.strategy))
            .map(|(id, _)| *id)
            .collect();
        for id in running {
            let creation = self
                .running
                .get(&id)
                .is_some_and(|r| matches!(r.task.spec.kind, TaskKind::CreateActor(_)));
            if !creation {
                self.kill_running(id, gone(format!("{reason}; the task was killed")), &mut out);
            }
        }
        // Actors in the group die for good, with the reason.
        out.extend(self.kill_actors_where(
            |spec| mine(&spec.strategy),
            &format!("its placement group {pg} was removed ({reason})"),
        ));
        let indices: Vec<u32> = self
            .bundles
            .keys()
            .filter(|(g, i)| *g == pg && picked(*i))
            .map(|(_, i)| *i)
            .collect();
        for i in indices {
            self.drop_bundle(pg, i);
        }
        self.pump(&mut out);
        out
    }

    /// Where a task placed in a bundle must go, or why it cannot run.
    pub(super) fn bundle_check(&self, q: &Queued) -> Result<(), String> {
        let Some((pg, index)) = bundle_of(&q.spec.strategy) else {
            return Ok(());
        };
        match self.bundles.get(&(pg, index)) {
            Some(b) if b.committed => {
                if b.ledger.feasible(&q.request) {
                    Ok(())
                } else {
                    Err(format!(
                        "bundle {index} reserves {} but the task asks for {}",
                        b.held, q.request
                    ))
                }
            }
            _ => Err(format!(
                "no committed bundle {index} of it on node {} (removed, not ready yet, \
                 or moved after a node died: call ready() again)",
                self.me
            )),
        }
    }

    /// Placement groups with bundles here (tests check returns by it).
    #[cfg(test)]
    pub fn bundle_count(&self) -> usize {
        self.bundles.len()
    }
}
