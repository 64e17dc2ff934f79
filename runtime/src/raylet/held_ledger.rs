//! Results whose refs another process holds for their owner (RR-1 in
//! `api/result_refs.rs`), by who owns them: a local connection on the
//! owner's raylet, a peer node on the holder's. An owner that goes — it
//! exited, was killed, or its node was declared dead — before releasing a
//! result has it released in its name, so the holder does not keep the
//! refs inside for the dead. A pure table: the raylet records what it
//! learns and acts on what [`HeldLedger::closed`] returns.
//!
//! The hold and its release come by different paths (the holder's note
//! through its raylet, the owner's release through its own), so either
//! may arrive first:
//!
//! - **HL-1** after `closed(owner)`, every result held for `owner` and not
//!   released comes back exactly once, whichever order its hold and its
//!   release came in; a result whose release came first is not returned.
//! - **HL-2** a result held twice by the same holder (run again there) is
//!   one hold: one release ends it.

use crate::proto::task::ReplyTo;
use prism_objectstore::ObjectId;
use std::collections::{BTreeMap, HashMap};

/// Which of a result's two messages came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// Held, not yet released.
    Held,
    /// Released before its hold was noted here (the hold then ends it).
    ReleasedFirst,
}

/// Results held for each owner (`K`: a local connection, a peer node), by
/// holder and result.
#[derive(Debug)]
pub struct HeldLedger<K = u64> {
    by_owner: HashMap<K, HashMap<(ReplyTo, ObjectId), Mark>>,
}

impl<K> Default for HeldLedger<K> {
    fn default() -> Self {
        HeldLedger {
            by_owner: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> HeldLedger<K> {
    /// `holder` holds the refs inside `results` for `owner`.
    pub fn held(&mut self, owner: K, holder: ReplyTo, results: &[ObjectId]) {
        self.meet(owner, holder, results, Mark::Held);
    }

    /// `owner` released `results`, held by `holder`.
    pub fn released(&mut self, owner: K, holder: ReplyTo, results: &[ObjectId]) {
        self.meet(owner, holder, results, Mark::ReleasedFirst);
    }

    /// `holder` no longer holds `results` for `owner` (it was told to let
    /// them go): a hold is forgotten; nothing waits for a later one.
    pub fn unhold(&mut self, owner: K, holder: ReplyTo, results: &[ObjectId]) {
        if let Some(marks) = self.by_owner.get_mut(&owner) {
            for id in results {
                if marks.get(&(holder, *id)) == Some(&Mark::Held) {
                    marks.remove(&(holder, *id));
                }
            }
            if marks.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
    }

    /// One of a result's two messages came: it ends the other if that came
    /// first, and waits for it otherwise (a second hold is the same hold).
    fn meet(&mut self, owner: K, holder: ReplyTo, results: &[ObjectId], came: Mark) {
        let marks = self.by_owner.entry(owner).or_default();
        for id in results {
            match marks.get(&(holder, *id)) {
                Some(m) if *m != came => {
                    marks.remove(&(holder, *id));
                }
                _ => {
                    marks.insert((holder, *id), came);
                }
            }
        }
        if marks.is_empty() {
            self.by_owner.remove(&owner);
        }
    }

    /// `owner` is gone: what was still held for it, to release in its
    /// name, one list per holder (HL-1).
    pub fn closed(&mut self, owner: K) -> Vec<(ReplyTo, Vec<ObjectId>)> {
        let mut out: BTreeMap<ReplyTo, Vec<ObjectId>> = BTreeMap::new();
        for ((holder, id), mark) in self.by_owner.remove(&owner).unwrap_or_default() {
            if mark == Mark::Held {
                out.entry(holder).or_default().push(id);
            }
        }
        out.into_iter().collect()
    }

    /// Holders that are gone (what they held went with them): nothing is
    /// kept for them any more.
    pub fn forget_holders(&mut self, gone: impl Fn(&ReplyTo) -> bool) {
        if self.by_owner.is_empty() {
            return;
        }
        self.by_owner.retain(|_, marks| {
            marks.retain(|(holder, _), _| !gone(holder));
            !marks.is_empty()
        });
    }

    /// Entries kept, for every owner.
    pub fn len(&self) -> usize {
        self.by_owner.values().map(HashMap::len).sum()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.by_owner.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
    use proptest::prelude::*;

    fn at(conn: u64) -> ReplyTo {
        ReplyTo {
            node: NodeId([7; 16]),
            conn,
        }
    }

    #[test]
    fn hl_1_a_gone_owner_releases_what_is_held_for_it() {
        let (x, y, z) = (ObjectId::random(), ObjectId::random(), ObjectId::random());
        let mut l = HeldLedger::<u64>::default();
        l.held(1, at(10), &[x, y]);
        l.held(1, at(11), &[z]);
        l.held(2, at(10), &[z]);
        l.released(1, at(10), &[y]);
        let mut out = l.closed(1);
        out.sort();
        assert_eq!(out, vec![(at(10), vec![x]), (at(11), vec![z])]);
        assert!(l.closed(1).is_empty(), "exactly once");
        assert_eq!(l.closed(2), vec![(at(10), vec![z])]);
        assert!(l.is_empty());
    }

    #[test]
    fn hl_1_a_release_that_came_first_ends_the_later_hold() {
        let x = ObjectId::random();
        let mut l = HeldLedger::<u64>::default();
        l.released(1, at(10), &[x]);
        l.held(1, at(10), &[x]);
        assert!(l.is_empty());
        assert!(l.closed(1).is_empty());
    }

    #[test]
    fn hl_2_a_result_held_twice_by_its_holder_is_one_hold() {
        let x = ObjectId::random();
        let mut l = HeldLedger::<u64>::default();
        l.held(1, at(10), &[x]);
        l.held(1, at(10), &[x]);
        l.released(1, at(10), &[x]);
        assert!(l.is_empty());
    }

    #[test]
    fn unhold_forgets_a_hold_and_leaves_no_mark() {
        let x = ObjectId::random();
        let mut l = HeldLedger::<u64>::default();
        l.unhold(1, at(10), &[x]);
        assert!(l.is_empty());
        l.held(1, at(10), &[x]);
        l.unhold(1, at(10), &[x]);
        assert!(l.is_empty());
    }

    #[test]
    fn a_gone_holder_is_forgotten() {
        let (x, y) = (ObjectId::random(), ObjectId::random());
        let mut l = HeldLedger::<u64>::default();
        l.held(1, at(10), &[x]);
        l.held(1, at(11), &[y]);
        l.forget_holders(|h| h.conn == 10);
        assert_eq!(l.closed(1), vec![(at(11), vec![y])]);
    }

    proptest! {
        /// HL-1 for any interleaving: each result's hold and release come
        /// in either order (or the release never does); what `closed`
        /// returns is exactly the results not released.
        #[test]
        fn hl_1_any_order(events in proptest::collection::vec((0u8..4, 0u64..3, any::<bool>(), any::<bool>()), 0..40)) {
            let ids: Vec<ObjectId> = (0..4).map(|_| ObjectId::random()).collect();
            let mut l = HeldLedger::<u64>::default();
            let mut expect: std::collections::BTreeSet<(u64, ObjectId)> = Default::default();
            let mut seen: std::collections::HashSet<(u8, u64)> = Default::default();
            for (i, holder, release, release_first) in events {
                // One hold (and at most one release) per result and holder.
                if !seen.insert((i, holder)) {
                    continue;
                }
                let id = ids[i as usize];
                match (release, release_first) {
                    (true, true) => {
                        l.released(0, at(holder), &[id]);
                        l.held(0, at(holder), &[id]);
                    }
                    (true, false) => {
                        l.held(0, at(holder), &[id]);
                        l.released(0, at(holder), &[id]);
                    }
                    (false, _) => {
                        l.held(0, at(holder), &[id]);
                        expect.insert((holder, id));
                    }
                }
            }
            let got: std::collections::BTreeSet<(u64, ObjectId)> = l
                .closed(0)
                .into_iter()
                .flat_map(|(h, ids)| ids.into_iter().map(move |id| (h.conn, id)))
                .collect();
            prop_assert_eq!(got, expect);
            prop_assert!(l.is_empty());
        }
    }
}
