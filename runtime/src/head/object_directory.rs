//! Where sealed copies of objects live: a pure table, fed by raylets and
//! pruned when a node dies (OD-1: a dead node is never named as a location;
//! OD-2: an object whose last copy died with its node is known as lost, so
//! a reader is told at once and its owner can rebuild it; OD-3: an object
//! with a residency rule is never recorded on, nor named to, a node outside
//! it — the core checks nodes' labels against [`ObjectDirectory::rule`];
//! OD-4: a copy of a freed object that is reported after the free is not
//! recorded, and its node is told to drop it).

use crate::ids::NodeId;
use crate::proto::common::Residency;
use std::collections::{BTreeSet, HashMap};

/// Object id → (size, nodes holding a copy).
#[derive(Debug, Default)]
pub struct ObjectDirectory {
    objects: HashMap<prism_objectstore::ObjectId, (u64, BTreeSet<NodeId>)>,
    /// Objects whose durable row changed.
    dirty: BTreeSet<prism_objectstore::ObjectId>,
    /// Objects whose last copy died with its node, and why (OD-2), oldest
    /// first, at most [`KEEP_LOST`].
    lost: HashMap<prism_objectstore::ObjectId, String>,
    lost_order: std::collections::VecDeque<prism_objectstore::ObjectId>,
    /// Where objects with a residency rule may be (OD-3).
    rules: HashMap<prism_objectstore::ObjectId, Residency>,
    /// Objects their owners freed, newest last, at most [`KEEP_FREED`]: a
    /// copy reported after the free (a pull that raced it) is dropped (OD-4).
    freed: std::collections::HashSet<prism_objectstore::ObjectId>,
    freed_order: std::collections::VecDeque<prism_objectstore::ObjectId>,
}

/// Freed objects remembered.
const KEEP_FREED: usize = 100_000;

/// Lost objects remembered (so a `get` says lost, not "not yet").
const KEEP_LOST: usize = 100_000;

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
        // Rebuilt (or copied back): no longer lost.
        self.lost.remove(&object);
    }

    /// The copy on `node` is gone (freed or evicted); an object with no
    /// copy left is forgotten (not lost: nobody needs it).
    pub fn remove_copy(&mut self, object: prism_objectstore::ObjectId, node: NodeId) {
        if let Some((_, nodes)) = self.objects.get_mut(&object) {
            if nodes.remove(&node) {
                self.dirty.insert(object);
                if nodes.is_empty() {
                    self.objects.remove(&object);
                }
            }
        }
    }

    /// Whether its owner freed `object` (recently: the last 100,000 frees).
    pub fn was_freed(&self, object: &prism_objectstore::ObjectId) -> bool {
        self.freed.contains(object)
    }

    /// Its owner freed `object`: forgets it, with its rule, and returns the
    /// nodes that still hold a copy (to be told).
    pub fn free(&mut self, object: prism_objectstore::ObjectId) -> Vec<NodeId> {
        if self.freed.insert(object) {
            self.freed_order.push_back(object);
            while self.freed_order.len() > KEEP_FREED {
                if let Some(old) = self.freed_order.pop_front() {
                    self.freed.remove(&old);
                }
            }
        }
        let holders: Vec<NodeId> = self
            .objects
            .remove(&object)
            .map(|(_, nodes)| nodes.into_iter().collect())
            .unwrap_or_default();
        if self.rules.remove(&object).is_some() || !holders.is_empty() {
            self.dirty.insert(object);
        }
        holders
    }

    /// How many objects have a known copy.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether no object has a known copy.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Forgets every copy on a dead node (OD-1).
    pub fn remove_node(&mut self, node: NodeId, why: &str) {
        let dirty = &mut self.dirty;
        let mut gone = Vec::new();
        self.objects.retain(|id, (_, nodes)| {
            if nodes.remove(&node) {
                dirty.insert(*id);
                if nodes.is_empty() {
                    gone.push(*id);
                }
            }
            !nodes.is_empty()
        });
        for id in gone {
            self.lost.insert(
                id,
                format!("its only copy was on node {node}, which died ({why})"),
            );
            self.lost_order.push_back(id);
        }
        while self.lost_order.len() > KEEP_LOST {
            if let Some(old) = self.lost_order.pop_front() {
                self.lost.remove(&old);
            }
        }
    }

    /// Sets where `object` may be (once: a second rule is refused).
    pub fn set_rule(
        &mut self,
        object: prism_objectstore::ObjectId,
        rule: Residency,
    ) -> Result<(), String> {
        match self.rules.get(&object) {
            Some(r) if *r != rule => Err(format!(
                "object {object} already has the residency rule {r}"
            )),
            Some(_) => Ok(()),
            None => {
                self.rules.insert(object, rule);
                self.dirty.insert(object);
                Ok(())
            }
        }
    }

    /// Where `object` may be, if it has a rule.
    pub fn rule(&self, object: &prism_objectstore::ObjectId) -> Option<&Residency> {
        self.rules.get(object)
    }

    /// Why `object` has no copy left, if its last one died with its node.
    pub fn lost(&self, object: &prism_objectstore::ObjectId) -> Option<&str> {
        self.lost.get(object).map(String::as_str)
    }

    /// A directory recovered from durable rows.
    pub fn restore(
        rows: Vec<(
            prism_objectstore::ObjectId,
            u64,
            Vec<NodeId>,
            Option<Residency>,
        )>,
    ) -> ObjectDirectory {
        let rules = rows
            .iter()
            .filter_map(|(id, _, _, r)| r.clone().map(|r| (*id, r)))
            .collect();
        ObjectDirectory {
            rules,
            objects: rows
                .into_iter()
                .filter(|(_, _, nodes, _)| !nodes.is_empty())
                .map(|(id, size, nodes, _)| (id, (size, nodes.into_iter().collect())))
                .collect(),
            dirty: BTreeSet::new(),
            lost: HashMap::new(),
            lost_order: Default::default(),
            freed: Default::default(),
            freed_order: Default::default(),
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
        d.remove_node(a, "no heartbeat");
        assert_eq!(d.locations(&ObjectId([1; 16])), Some((10, vec![b])));
        assert_eq!(d.locations(&ObjectId([2; 16])), None);
        // OD-2: an object whose last copy died is known as lost, until a
        // copy is back.
        assert!(d
            .lost(&ObjectId([2; 16]))
            .is_some_and(|w| w.contains("only copy")));
        assert_eq!(d.lost(&ObjectId([1; 16])), None);
        d.add(ObjectId([2; 16]), b, 5);
        assert_eq!(d.lost(&ObjectId([2; 16])), None);
    }

    #[test]
    fn removed_and_freed_copies_are_forgotten_not_lost() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let (x, y) = (ObjectId([1; 16]), ObjectId([2; 16]));
        let mut d = ObjectDirectory::default();
        d.add(x, a, 10);
        d.add(x, b, 10);
        d.add(y, a, 5);
        let _ = d.take_dirty();
        d.remove_copy(x, a);
        assert_eq!(d.locations(&x), Some((10, vec![b])));
        d.remove_copy(x, b);
        d.remove_copy(x, b);
        assert_eq!(d.locations(&x), None);
        assert_eq!(d.lost(&x), None, "evicted or freed is not lost");
        assert_eq!(d.take_dirty(), vec![x]);
        assert_eq!(d.free(y), vec![a]);
        assert_eq!(d.free(y), Vec::<NodeId>::new(), "freed once");
        assert!(d.is_empty());
        assert_eq!(d.take_dirty(), vec![y], "its durable row goes");
    }
}
