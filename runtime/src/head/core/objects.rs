//! The object directory in the head core: where copies are (HC-1: a dead
//! node holds none) and what a `get` of a lost object is told.

use super::{bad, HeadCore};
use crate::ids::NodeId;
use crate::proto::common::NodeState;
use crate::proto::head::HeadResponse;

impl HeadCore {
    pub(super) fn add_location(
        &mut self,
        node: NodeId,
        object: prism_objectstore::ObjectId,
        size: u64,
    ) -> HeadResponse {
        if !self.is_live(node) {
            // HC-1: a dead node holds nothing.
            return bad(format!("node {node} is not alive; it cannot hold objects"));
        }
        self.objects.add(object, node, size);
        HeadResponse::Ok
    }

    pub(super) fn locations(&self, object: &prism_objectstore::ObjectId) -> HeadResponse {
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
