//! Borrows a raylet relayed (see `api/borrowing.rs`), by who borrows: a
//! local process (its connection) on the borrower's raylet, a peer node on
//! the submitter's. A process whose connection closes — it exited, or was
//! killed — before releasing its borrows has them released in its name by
//! its raylet; a node declared dead has its processes' borrows released by
//! the raylets of their submitters. Either way a submitter does not keep
//! an object for a borrower that is gone. A pure table: the raylet records
//! what it hands on and acts on what [`BorrowLedger::closed`] returns.
//!
//! - **BL-1** after `closed(who)`, every registration `who` started (and
//!   that reached its submitter) and did not release comes back exactly
//!   once, as many times as it was started.
//! - **BL-2** a release that matches no start (never handed on, or already
//!   released) changes nothing and is not handed on.

use crate::proto::task::ReplyTo;
use prism_objectstore::{IdHasher, ObjectId};
use std::collections::{BTreeMap, HashMap};

/// Registrations each borrower (`K`: a local connection, a peer node)
/// holds, by submitter and object.
#[derive(Debug)]
pub struct BorrowLedger<K = u64> {
    held: HashMap<K, HashMap<(ReplyTo, ObjectId), u32, IdHasher>>,
}

impl<K> Default for BorrowLedger<K> {
    fn default() -> Self {
        BorrowLedger {
            held: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> BorrowLedger<K> {
    /// Borrower `conn` registered as a borrower of `objects` with `to`,
    /// and `to` was told.
    pub fn started(&mut self, conn: K, to: ReplyTo, objects: &[ObjectId]) {
        let held = self.held.entry(conn).or_default();
        for id in objects {
            *held.entry((to, *id)).or_default() += 1;
        }
    }

    /// Borrower `conn` released its registrations of `objects` with `to`:
    /// those that matched a recorded start, the only ones to hand on (a
    /// release matching none — its start not yet acknowledged, or already
    /// released for a borrower declared gone — would take another
    /// borrower's count; BL-2).
    pub fn released(&mut self, conn: K, to: ReplyTo, objects: &[ObjectId]) -> Vec<ObjectId> {
        let Some(held) = self.held.get_mut(&conn) else {
            return Vec::new();
        };
        let mut matched = Vec::new();
        for id in objects {
            if let Some(n) = held.get_mut(&(to, *id)) {
                matched.push(*id);
                *n -= 1;
                if *n == 0 {
                    held.remove(&(to, *id));
                }
            }
        }
        if held.is_empty() {
            self.held.remove(&conn);
        }
        matched
    }

    /// Borrower `conn` is gone: what it still held, to release in its
    /// name, one list per submitter (BL-1).
    pub fn closed(&mut self, conn: K) -> Vec<(ReplyTo, Vec<ObjectId>)> {
        let mut out: BTreeMap<ReplyTo, Vec<ObjectId>> = BTreeMap::new();
        for ((to, id), n) in self.held.remove(&conn).unwrap_or_default() {
            out.entry(to)
                .or_default()
                .extend(std::iter::repeat_n(id, n as usize));
        }
        out.into_iter().collect()
    }

    /// Submitter `to` is gone: nothing is kept for it any more (its
    /// objects went with it).
    pub fn forget_submitter(&mut self, to: ReplyTo) {
        self.held.retain(|_, held| {
            held.retain(|(t, _), _| *t != to);
            !held.is_empty()
        });
    }

    /// Borrowers holding registrations.
    pub fn connections(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;
    use proptest::prelude::*;

    fn to(conn: u64) -> ReplyTo {
        ReplyTo {
            node: NodeId([7; 16]),
            conn,
        }
    }

    #[test]
    fn bl_1_a_closed_connection_gives_back_what_it_held() {
        let (a, b) = (ObjectId::random(), ObjectId::random());
        let mut l = BorrowLedger::<u64>::default();
        l.started(5, to(1), &[a, b]);
        l.started(5, to(1), &[a]);
        l.started(5, to(2), &[b]);
        l.started(6, to(1), &[a]);
        l.released(5, to(1), &[b]);
        let mut back = l.closed(5);
        back.iter_mut().for_each(|(_, ids)| ids.sort());
        assert_eq!(back, vec![(to(1), vec![a, a]), (to(2), vec![b])]);
        assert!(l.closed(5).is_empty(), "given back once");
        assert_eq!(l.connections(), 1);
        l.released(6, to(1), &[a]);
        assert_eq!(
            l.connections(),
            0,
            "nothing kept for a connection that released all"
        );
        l.started(6, to(1), &[a]);
        l.started(7, to(2), &[b]);
        l.forget_submitter(to(1));
        assert_eq!(l.connections(), 1);
        assert!(
            l.closed(6).is_empty(),
            "nothing released to a gone submitter"
        );
    }

    proptest! {
        /// BL-1/BL-2 against a count: what comes back is starts minus
        /// matched releases, per (submitter, object), never negative.
        #[test]
        fn bl_1_2_what_comes_back_is_what_was_not_released(
            ops in proptest::collection::vec((any::<bool>(), 0u64..3, 0usize..3), 0..60),
        ) {
            let ids: Vec<ObjectId> = (0..3).map(|_| ObjectId::random()).collect();
            let mut l = BorrowLedger::<u64>::default();
            let mut want: BTreeMap<(u64, usize), i64> = BTreeMap::new();
            for (start, sub, obj) in ops {
                if start {
                    l.started(9, to(sub), &[ids[obj]]);
                    *want.entry((sub, obj)).or_default() += 1;
                } else {
                    let matched = l.released(9, to(sub), &[ids[obj]]);
                    let n = want.entry((sub, obj)).or_default();
                    prop_assert_eq!(matched.len(), usize::from(*n > 0), "handed on only if matched");
                    *n = (*n - 1).max(0);
                }
            }
            let mut got: BTreeMap<(u64, usize), i64> = BTreeMap::new();
            for (t, objs) in l.closed(9) {
                for o in objs {
                    let i = ids.iter().position(|x| *x == o).unwrap();
                    *got.entry((t.conn, i)).or_default() += 1;
                }
            }
            want.retain(|_, n| *n > 0);
            prop_assert_eq!(got, want);
        }
    }
}
