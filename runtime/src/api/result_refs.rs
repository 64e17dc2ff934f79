//! Refs archived inside a task's result (or an actor call's) are counted,
//! as those inside arguments and `put` values are (`borrowing.rs`). The
//! process that ran the task holds them (its owner guards: its own objects,
//! and its borrows) from the moment it encodes the result until the
//! result's owner, the task's submitter, releases the result; the refs are
//! archived with their owners' addresses, so that whoever reads the result
//! registers with those owners while the result is held (BR-3), as a reader
//! of a `put` value does. Invariants:
//!
//! - **RR-1** a successful outcome whose result has refs inside is sent as
//!   [`Outcome::Holding`], naming the process that holds them; the refs are
//!   held there until the result's owner releases the result (its last
//!   ref and borrower gone, or freed) or, if the owner had dropped it
//!   before the outcome came, at once. A result that is made again (lineage,
//!   LN-1) releases its earlier holder.
//! - **RR-2** the refs a result encoded on a thread are found again by the
//!   address of the result's buffer, on that thread, when its outcome is
//!   made: interleaved async actor calls on one thread keep theirs apart.
//!
//! An owner that goes without releasing (it exits, is killed, or its node
//! is declared dead) has its results released in its name by the raylets
//! (HL-1 in `raylet/held_ledger.rs`). A hold that cannot be sent to the
//! owner's raylet is sent again until it is, or that node is declared dead
//! (HR-1 in `raylet/held_results.rs`); one that got no answer, or that
//! could not be sent for minutes, leaves the refs held until their holder
//! exits: kept, never freed early.

use super::core::Core;
use super::object_ref::OwnerGuard;
use super::value::{Encoded, Value};
use crate::proto::task::{LocalRequest, Outcome, ReplyTo};
use prism_objectstore::ObjectId;
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    /// Encoded results' refs, by the address of the result's buffer (RR-2).
    static RESULT_REFS: RefCell<Vec<(usize, Vec<Arc<OwnerGuard>>)>> =
        const { RefCell::new(Vec::new()) };
}

/// Encodes a task's result, keeping the refs archived inside it for
/// [`held_by`] (RR-2).
pub(crate) fn encode<T: Value>(v: &T) -> Result<Encoded, String> {
    let (bytes, refs) = super::borrowing::track_args(|| v.encode());
    let bytes = bytes.map_err(|e| e.to_string())?;
    let guards: Vec<_> = refs.into_iter().filter_map(|(_, g)| g).collect();
    if !guards.is_empty() {
        RESULT_REFS.with(|r| r.borrow_mut().push((bytes.as_ptr() as usize, guards)));
    }
    Ok(bytes)
}

/// Drops what earlier results left on this thread (a result encoded and
/// then never made into an outcome: a panic after encoding). Called where
/// one task at a time runs, before each.
pub(crate) fn clear() {
    RESULT_REFS.with(|r| r.borrow_mut().clear());
}

/// The refs [`encode`] kept for the result in `bytes`, taken.
pub(crate) fn take(bytes: &[u8]) -> Vec<Arc<OwnerGuard>> {
    let at = bytes.as_ptr() as usize;
    RESULT_REFS.with(|r| {
        let mut r = r.borrow_mut();
        match r.iter().position(|(a, _)| *a == at) {
            Some(i) => r.swap_remove(i).1,
            None => Vec::new(),
        }
    })
}

impl Core {
    /// A task's result (`id`) with refs inside succeeded here: they are
    /// held until its owner releases it, and the outcome says by whom
    /// (RR-1).
    pub(crate) fn hold_result(
        &self,
        id: ObjectId,
        owner: Option<ReplyTo>,
        guards: Vec<Arc<OwnerGuard>>,
        outcome: Outcome,
    ) -> Outcome {
        let ok = matches!(outcome, Outcome::Inline(_) | Outcome::Stored { .. });
        match self.direct.reply_to.filter(|_| ok && !guards.is_empty()) {
            Some(me) => {
                self.held.insert(id, guards);
                // Noted with the raylet before the outcome leaves, so that
                // an owner that goes first releases it (HL-1).
                if let Some(owner) = owner.filter(|o| *o != me) {
                    let _ = self.send(&LocalRequest::HeldFor {
                        owner,
                        results: vec![id],
                    });
                }
                outcome.held_by(me)
            }
            None => outcome,
        }
    }

    /// The owner of result `id` released it: what was held for it goes.
    pub(crate) fn result_released(&self, id: ObjectId) {
        self.held.remove(&id);
    }

    /// Tells the process holding result `id`'s refs that they may go.
    pub(crate) fn release_holder(&self, holder: ReplyTo, id: ObjectId) {
        let _ = self.send(&LocalRequest::ReleaseHeld {
            to: holder,
            results: vec![id],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rr_2_refs_are_found_by_their_results_buffer() {
        // No core here, so no guards: only the lookup is exercised.
        let a: Encoded = 7u64.encode().unwrap();
        let b: Encoded = 8u64.encode().unwrap();
        RESULT_REFS.with(|r| {
            r.borrow_mut().push((a.as_ptr() as usize, Vec::new()));
            r.borrow_mut().push((b.as_ptr() as usize, Vec::new()));
        });
        assert!(take(&b).is_empty());
        assert_eq!(RESULT_REFS.with(|r| r.borrow().len()), 1);
        assert!(take(&a).is_empty());
        assert_eq!(RESULT_REFS.with(|r| r.borrow().len()), 0);
        // A result that kept nothing finds nothing, and takes nothing.
        assert!(take(&a).is_empty());
    }

    #[test]
    fn rr_1_an_outcome_names_its_holder_and_splits_back() {
        let by = ReplyTo {
            node: crate::ids::NodeId([3; 16]),
            conn: 9,
        };
        let inline = Outcome::Inline(vec![1, 2, 3]).held_by(by);
        assert_eq!(
            inline.take_holder(),
            (Outcome::Inline(vec![1, 2, 3]), Some(by))
        );
        let node = crate::ids::NodeId([5; 16]);
        let stored = Outcome::Stored { size: 10, node }.held_by(by);
        assert_eq!(
            stored.take_holder(),
            (Outcome::Stored { size: 10, node }, Some(by))
        );
        let failed = Outcome::Failed(crate::proto::task::Failure::Cancelled);
        assert_eq!(failed.clone().held_by(by).take_holder(), (failed, None));
    }
}
