//! The object directory in the head core: where copies are (HC-1: a dead
//! node holds none), what a `get` of a lost object is told, and where an
//! object with a residency rule may go (OD-3).

use super::{bad, Caller, HeadCore};
use crate::ids::NodeId;
use crate::proto::common::{NodeState, Residency};
use crate::proto::head::{ErrorKind, HeadResponse};
use prism_objectstore::ObjectId;

impl HeadCore {
    pub(super) fn add_location(
        &mut self,
        node: NodeId,
        object: ObjectId,
        size: u64,
    ) -> HeadResponse {
        if !self.is_live(node) {
            // HC-1: a dead node holds nothing.
            return bad(format!("node {node} is not alive; it cannot hold objects"));
        }
        if let Some(refusal) = self.outside_rule(node, &object) {
            return refusal;
        }
        self.objects.add(object, node, size);
        HeadResponse::Ok
    }

    /// Copies `node` sealed and lost, applied in order. A copy refused by a
    /// residency rule (OD-3) is left out and named in the answer.
    pub(super) fn update_locations(
        &mut self,
        node: NodeId,
        changes: Vec<(ObjectId, Option<u64>)>,
    ) -> HeadResponse {
        let mut refused = Vec::new();
        let mut stale = Vec::new();
        for (object, size) in changes {
            match size {
                // OD-4: a pull that raced the free.
                Some(_) if self.objects.was_freed(&object) => stale.push(object),
                Some(size) => {
                    if let HeadResponse::Error { message, .. } =
                        self.add_location(node, object, size)
                    {
                        refused.push(message);
                    }
                }
                None => self.objects.remove_copy(object, node),
            }
        }
        if !stale.is_empty() {
            self.tell_to_free(node, stale);
        }
        if refused.is_empty() {
            HeadResponse::Ok
        } else {
            bad(refused.join("; "))
        }
    }

    /// Their owner freed `objects` (through `node`, which dropped its own
    /// copies): every other live holder is told to drop its copy.
    pub(super) fn free_objects(&mut self, node: NodeId, objects: Vec<ObjectId>) -> HeadResponse {
        let mut by_node: std::collections::BTreeMap<NodeId, Vec<ObjectId>> = Default::default();
        for object in objects {
            for holder in self.objects.free(object) {
                if holder != node {
                    by_node.entry(holder).or_default().push(object);
                }
            }
        }
        for (holder, objects) in by_node {
            self.tell_to_free(holder, objects);
        }
        HeadResponse::Ok
    }

    fn tell_to_free(&mut self, node: NodeId, objects: Vec<ObjectId>) {
        if let Some(n) = self.nodes.node(node).filter(|n| n.state != NodeState::Dead) {
            let addr = n.reg.address.clone();
            self.push(super::Effect::FreeCopies {
                node,
                addr,
                objects,
            });
        }
    }

    /// OD-3: the refusal when `node` is outside `object`'s residency rule.
    fn outside_rule(&self, node: NodeId, object: &ObjectId) -> Option<HeadResponse> {
        let rule = self.objects.rule(object)?;
        let labels = self
            .nodes
            .node(node)
            .map(|n| n.reg.labels.as_slice())
            .unwrap_or(&[]);
        (!rule.permits(labels)).then(|| HeadResponse::Error {
            kind: ErrorKind::Forbidden,
            message: format!(
                "object {object} may only be on nodes with {rule}; node {node} has {}, so the object may not be moved there",
                rule.place_of(labels)
            ),
        })
    }

    /// `object` on `node` may only be where `rule` allows (OD-3: the node
    /// itself must be inside it); else why not.
    pub(super) fn set_residency(
        &mut self,
        node: NodeId,
        object: ObjectId,
        rule: Residency,
    ) -> Result<(), String> {
        let labels = self
            .nodes
            .node(node)
            .map(|n| n.reg.labels.as_slice())
            .unwrap_or(&[]);
        rule.check_put(object, node, labels)?;
        self.objects.set_rule(object, rule)
    }

    /// A raylet asks where `object` is, to pull it: refused when that
    /// raylet's node is outside the object's residency rule (OD-3).
    pub(super) fn locations(&self, caller: Caller, object: &ObjectId) -> HeadResponse {
        if let (Some(_), Caller::Node { cert }) = (self.objects.rule(object), caller) {
            let asker = self
                .nodes
                .nodes()
                .find(|n| n.cert == Some(cert) && n.state != NodeState::Dead)
                .map(|n| n.id);
            if let Some(refusal) = asker.and_then(|node| self.outside_rule(node, object)) {
                return refusal;
            }
        }
        let (size, holders) = self.objects.locations(object).unwrap_or((0, Vec::new()));
        let nodes = holders
            .into_iter()
            .filter_map(|id| {
                let n = self.nodes.node(id)?;
                (n.state != NodeState::Dead).then(|| (id, n.reg.address.clone()))
            })
            .collect();
        // A borrower reading what its owner freed (or its owner's exit
        // freed) is told so at once, not left waiting for a copy (OD-4).
        let lost = self.objects.lost(object).map(str::to_string).or_else(|| {
            self.objects.was_freed(object).then(|| {
                "its owner freed it (its owner dropped its last ref, or exited)".to_string()
            })
        });
        HeadResponse::ObjectLocations { size, nodes, lost }
    }
}
