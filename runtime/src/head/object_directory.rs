//! Where sealed copies of objects live: a pure table, fed by raylets and
//! pruned when a node dies (OD-1: a dead node is never named as a location).

use crate::ids::NodeId;
use std::collections::{BTreeSet, HashMap};

/// Object id → (size, nodes holding a copy).
#[derive(Debug, Default)]
pub struct ObjectDirectory {
    objects: HashMap<prism_objectstore::ObjectId, (u64, BTreeSet<NodeId>)>,
    /// Objects whose durable row changed.
    dirty: BTreeSet<prism_objectstore::ObjectId>,
}

impl ObjectDirectory {
    /// Records a copy.
    pub fn add(&mut self, object: prism_objectstore::ObjectId, node: NodeId, size: u64) {
        let e = self
            .objects
            .entry(object)
            .or_insert((size, BTreeSet::new()));
        e.0 = size;
        e.1.insert(node);
        self.dirty.insert(object);
    }

    /// Forgets every copy on a dead node (OD-1).
    pub fn remove_node(&mut self, node: NodeId) {
        let dirty = &mut self.dirty;
        self.objects.retain(|id, (_, nodes)| {
            if nodes.remove(&node) {
                dirty.insert(*id);
            }
            !nodes.is_empty()
        });
    }

    /// A directory recovered from durable rows.
    pub fn restore(rows: Vec<(prism_objectstore::ObjectId, u64, Vec<NodeId>)>) -> ObjectDirectory {
        ObjectDirectory {
            objects: rows
                .into_iter()
                .map(|(id, size, nodes)| (id, (size, nodes.into_iter().collect())))
                .collect(),
            dirty: BTreeSet::new(),
        }
    }

    /// Objects whose durable row changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<prism_objectstore::ObjectId> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// The object's size and holders.
    pub fn locations(&self, object: &prism_objectstore::ObjectId) -> Option<(u64, Vec<NodeId>)> {
        self.objects
            .get(object)
            .map(|(size, nodes)| (*size, nodes.iter().copied().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_objectstore::ObjectId;

    #[test]
    fn od_1_dead_nodes_are_never_locations() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let mut d = ObjectDirectory::default();
        d.add(ObjectId([1; 16]), a, 10);
        d.add(ObjectId([1; 16]), b, 10);
        d.add(ObjectId([2; 16]), a, 5);
        d.remove_node(a);
        assert_eq!(d.locations(&ObjectId([1; 16])), Some((10, vec![b])));
        assert_eq!(d.locations(&ObjectId([2; 16])), None);
    }
}
