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

    /// A driver on `node` is about to put `object` with `rule` (OD-3: the
    /// node itself must be inside it).
    pub(super) fn set_residency(
        &mut self,
        node: NodeId,
        object: ObjectId,
        rule: Residency,
    ) -> HeadResponse {
        if rule.label.is_empty() || rule.allowed.is_empty() {
            return bad(format!("the residency rule {rule} names no place"));
        }
        let labels = self
            .nodes
            .node(node)
            .map(|n| n.reg.labels.as_slice())
            .unwrap_or(&[]);
        if !rule.permits(labels) {
            return HeadResponse::Error {
                kind: ErrorKind::Forbidden,
                message: format!(
                    "cannot put object {object} with the residency rule {rule} on node {node}, which has {}",
                    rule.place_of(labels)
                ),
            };
        }
        match self.objects.set_rule(object, rule) {
            Ok(()) => HeadResponse::Ok,
            Err(message) => bad(message),
        }
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
        let lost = self.objects.lost(object).map(str::to_string);
        HeadResponse::ObjectLocations { size, nodes, lost }
    }
}
