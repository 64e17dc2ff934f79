//! Reference counting in this process: the owner's side (a ref dropped,
//! freed or archived into a value, and an object's copies freed on every
//! node) and borrowers — refs that reach a process inside a task's argument
//! values or inside a `put` value it reads. Owner-based, in Ray's manner:
//!
//! - The submitter collects the refs archived into a task's argument values
//!   ([`track_args`]) and keeps them alive until the task ends (its
//!   keep-alive guards); their ids travel in the spec (`nested_refs`).
//!   A `put` collects the refs archived into its value the same way and
//!   keeps them alive as long as the value lives (`core.rs`).
//! - An archived ref carries its owner's address (`object_ref.rs`).
//! - A process that deserialises a ref it does not own from a task's
//!   argument, or from a value it `get`s, counts its local copies
//!   ([`Borrowed`]); refs deserialised anywhere else (a channel message)
//!   are not counted. When a task ends and refs from its arguments are
//!   still held here (kept in an actor's state, passed to a task still
//!   running), this process registers as their borrower with the task's
//!   submitter *before* reporting the task done, so the submitter's
//!   keep-alive outlives the hand-over; refs read out of a value are
//!   registered with their owners before the `get` returns.
//! - A borrower that drops its last copy (and whose own borrowers are done)
//!   tells whom it registered with; an owner frees an object once its own
//!   refs and every borrower are gone ([`super::ownership`]). A borrower
//!   that is itself a submitter counts its registered borrowers as copies
//!   of its own, so borrows nest.
//!
//! Invariants:
//!
//! - **BR-1** a registered borrower releases each registration exactly once,
//!   after its last local copy and its last own borrower are gone.
//! - **BR-2** a ref is registered with at most one holder at a time: a
//!   held ref already registered is not registered again (that registration
//!   keeps it alive).
//! - **BR-3** a ref read out of a value is registered with its owner while
//!   the value is still held, and so while the value's own holder (its
//!   `put`'s keep-alive) still keeps the ref alive.
//! - **BR-4** an owner that reads a ref to its own object out of a value
//!   counts that copy as a borrower of its own (no message), so the object
//!   outlives the value while the copy is held.
//! - **BR-5** releases are sent in batches (`releases.rs`).
//!
//! Refs archived into a task's result are held by the process that ran it
//! until the result goes (`result_refs.rs`). Refs archived into a channel
//! message mark their object as kept until its owner exits: see the
//! README's known gaps.

use super::core::Core;
use super::object_ref::OwnerGuard;
use super::ownership::Slot;
use crate::proto::task::{LocalRequest, ReplyTo, TaskSpec};
use prism_objectstore::{IdHasher, ObjectId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Live deserialised copies here.
    local: usize,
    /// Processes registered as borrowers with this one.
    children: usize,
    /// Whom this process registered with.
    parent: Option<ReplyTo>,
}

/// The refs this process holds but does not own.
#[derive(Debug, Default)]
pub(crate) struct Borrowed {
    map: Mutex<HashMap<ObjectId, Entry, IdHasher>>,
}

impl Borrowed {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectId, Entry, IdHasher>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ref to `id` was deserialised here.
    pub(crate) fn add(&self, id: ObjectId) {
        self.lock().entry(id).or_default().local += 1;
    }

    /// A borrowed ref was archived where nobody counts (a `put` value, a
    /// result): it is held here for good, so whoever it is registered
    /// with keeps it until this process exits (OW-2 for borrowers).
    pub(crate) fn keep_for_good(&self, id: ObjectId) {
        if let Some(e) = self.lock().get_mut(&id) {
            e.local += 1;
        }
    }

    /// A local copy was dropped: the registration to release, if that was
    /// the last hold (BR-1).
    pub(crate) fn drop_local(&self, id: ObjectId) -> Option<ReplyTo> {
        self.change(id, |e| e.local = e.local.saturating_sub(1))
    }

    /// A borrower of ours registered (or, with `release`, left): `None` if
    /// `id` is not borrowed here; else the registration to release, if that
    /// was the last hold.
    pub(crate) fn child(&self, id: ObjectId, release: bool) -> Option<Option<ReplyTo>> {
        if !self.lock().contains_key(&id) {
            return None;
        }
        Some(self.change(id, |e| {
            if release {
                e.children = e.children.saturating_sub(1);
            } else {
                e.children += 1;
            }
        }))
    }

    fn change(&self, id: ObjectId, f: impl FnOnce(&mut Entry)) -> Option<ReplyTo> {
        let mut map = self.lock();
        let e = map.get_mut(&id)?;
        f(e);
        if e.local == 0 && e.children == 0 {
            return map.remove(&id).and_then(|e| e.parent);
        }
        None
    }

    /// A task whose arguments held `ids` ended: the ones still held here
    /// and not yet registered are registered with `parent` (BR-2), and
    /// returned, to be announced to it.
    pub(crate) fn register(&self, ids: &[ObjectId], parent: ReplyTo) -> Vec<ObjectId> {
        let mut map = self.lock();
        let mut out = Vec::new();
        for id in ids {
            if let Some(e) = map.get_mut(id) {
                if e.parent.is_none() && (e.local > 0 || e.children > 0) {
                    e.parent = Some(parent);
                    out.push(*id);
                }
            }
        }
        out
    }

    /// The announcement did not reach `parent`: those refs are not
    /// registered after all.
    pub(crate) fn unregister(&self, ids: &[ObjectId]) {
        let mut map = self.lock();
        for id in ids {
            if let Some(e) = map.get_mut(id) {
                e.parent = None;
            }
        }
    }

    /// How many objects are borrowed here.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Core {
    /// The last local ref to an owned object was dropped (one archived
    /// where nobody counts stays, OW-2; a borrowed one stays until its
    /// borrowers are done, OW-3).
    pub(crate) fn release(&self, id: ObjectId) {
        if let Some(slot) = self.owned.release(id) {
            self.forget_owned(id, &slot);
        }
    }

    /// The owner frees an object now, even if refs to it were passed on
    /// (`prism::free`): every copy goes, here and on other nodes; readers
    /// holding a view keep theirs until they release it.
    pub(crate) fn free(&self, id: ObjectId) {
        if let Some(slot) = self.owned.free(id) {
            self.forget_owned(id, &slot);
        }
    }

    /// An owned object is gone from this process: its lineage and
    /// arguments go, and so do its copies in the stores, if it has any.
    pub(crate) fn forget_owned(&self, id: ObjectId, slot: &Slot) {
        self.keepalive.remove(&id);
        if let Some(h) = slot.set_holder(None) {
            self.release_holder(h, id);
        }
        self.rules.remove(&id);
        if slot.pinned() {
            self.free_copies(id);
        }
    }

    /// A ref is being archived into a value: make its object reachable by
    /// other processes (small inline values are copied into the store,
    /// OW-1); `counted`: into a task's arguments (OW-3).
    pub(crate) fn escape(&self, id: ObjectId, counted: bool) {
        if let Some(b) = self.owned.escape(id, counted) {
            self.store_copy(id, &b);
        }
    }

    /// Drops every copy of `id` this process owned: the raylet drops its
    /// own (one message, no round trip) and has the head tell the others.
    pub(crate) fn free_copies(&self, id: ObjectId) {
        let _ = self.send(&LocalRequest::Free(vec![id]));
    }

    /// This process is going (a driver's `Cluster` drops): every stored
    /// object it still owns is freed on every node, in one message (a
    /// borrower elsewhere then finds it gone, as in Ray when an owner dies).
    pub(crate) fn free_all_owned(&self) {
        self.flush_releases();
        let ids: Vec<ObjectId> = self
            .owned
            .all_ids()
            .into_iter()
            .filter(|(_, s)| s.pinned())
            .map(|(id, _)| id)
            .collect();
        if !ids.is_empty() {
            let _ = self.send(&LocalRequest::Free(ids));
        }
    }

    fn tell_released(&self, to: ReplyTo, id: ObjectId) {
        let _ = self.send(&LocalRequest::Borrows {
            request_id: None,
            to,
            objects: vec![id],
            release: true,
        });
    }

    /// Processes registered (or, with `release`, ended) borrows of objects
    /// this process owns or itself borrows.
    pub(crate) fn on_borrows(&self, objects: Vec<ObjectId>, release: bool) {
        for id in objects {
            match self.owned.borrow(id, release) {
                Some(Some(slot)) => self.forget_owned(id, &slot),
                Some(None) => {}
                None => match self.borrowed.child(id, release) {
                    Some(Some(parent)) => self.tell_released(parent, id),
                    Some(None) => {}
                    None => {
                        tracing::debug!(object = %id, "a borrow of an object this process neither owns nor borrows")
                    }
                },
            }
        }
    }

    /// Before a task is reported done: refs from its arguments still held
    /// here are registered with its submitter, and the hand-over is waited
    /// for (bounded), so the submitter's own hold outlives it.
    pub(crate) fn register_borrows(self: &Arc<Self>, task: &TaskSpec) {
        let read = take_arg_refs();
        if let Some(to) = task.reply_to.filter(|_| !task.nested_refs.is_empty()) {
            let ids = self.borrowed.register(&task.nested_refs, to);
            self.hand_borrows(to, ids, &task.name);
        }
        // Refs read out of a `put` value passed by ref (not listed in the
        // spec) and still held: registered with their owners, while the
        // submitter still holds the value (BR-3).
        if !read.is_empty() {
            self.register_decoded(read);
        }
    }

    /// After a `get` decoded refs it does not own out of a value (a `put`
    /// whose owner keeps them while it lives): they are registered with
    /// their owners before the value is handed over, so the owners' holds
    /// outlive the hand-over (BR-3).
    pub(crate) fn register_decoded(self: &Arc<Self>, refs: Vec<(ObjectId, ReplyTo)>) {
        let mut by_owner: HashMap<ReplyTo, Vec<ObjectId>, IdHasher> = HashMap::default();
        for (id, owner) in refs {
            by_owner.entry(owner).or_default().push(id);
        }
        for (owner, ids) in by_owner {
            let ids = self.borrowed.register(&ids, owner);
            self.hand_borrows(owner, ids, "get");
        }
    }

    /// Announces the borrows of `ids` (just registered with `to`) to it, and
    /// waits (bounded) until the raylet handed them on.
    fn hand_borrows(self: &Arc<Self>, to: ReplyTo, ids: Vec<ObjectId>, what: &str) {
        if ids.is_empty() {
            return;
        }
        // An earlier registration of one of these, released and queued,
        // must reach the owner before this one (BR-5).
        self.flush_releases();
        let handed: crate::Result<bool> =
            self.ask_raylet_quick("borrow", REGISTER_TIMEOUT, |request_id| {
                LocalRequest::Borrows {
                    request_id: Some(request_id),
                    to,
                    objects: ids.clone(),
                    release: false,
                }
            });
        if !matches!(handed, Ok(true)) {
            tracing::warn!(%what, "could not register borrowed refs with their holder ({handed:?}); they may be freed while held here");
            self.borrowed.unregister(&ids);
        }
    }
}

/// How long a task's end waits for its borrows to reach its submitter.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);

/// A ref archived while [`track_args`] runs: its id and the guard that keeps
/// it alive until the task ends.
pub(crate) type Tracked = (ObjectId, Option<Arc<OwnerGuard>>);

thread_local! {
    static TRACKING: RefCell<Option<Vec<Tracked>>> = const { RefCell::new(None) };
    /// What a ref deserialised on this thread now is in: [`NOT_COUNTED`],
    /// [`ARGS`] or [`VALUE`].
    static DECODING: std::cell::Cell<u8> = const { std::cell::Cell::new(NOT_COUNTED) };
    /// The refs borrowed from the `get` values being decoded, with their
    /// owners, to register there before the `get` returns.
    static DECODED: RefCell<Vec<(ObjectId, ReplyTo)>> = const { RefCell::new(Vec::new()) };
    /// The refs borrowed from task arguments that name their owner, to
    /// register there when the task ends if its submitter does not hold
    /// them (a `put` value passed by ref).
    static ARG_REFS: RefCell<Vec<(ObjectId, ReplyTo)>> = const { RefCell::new(Vec::new()) };
}

/// Puts back what a ref deserialised now is in, even if decoding panics.
struct Restore(u8);

impl Drop for Restore {
    fn drop(&mut self) {
        DECODING.with(|d| d.set(self.0));
    }
}

/// The refs read out of task arguments since the last call (see
/// `ARG_REFS`).
fn take_arg_refs() -> Vec<(ObjectId, ReplyTo)> {
    ARG_REFS.with(|r| std::mem::take(&mut *r.borrow_mut()))
}

/// A ref deserialised now is not counted.
pub(crate) const NOT_COUNTED: u8 = 0;
/// A ref deserialised now is in a task's arguments.
pub(crate) const ARGS: u8 = 1;
/// A ref deserialised now is in a value a `get` reads.
pub(crate) const VALUE: u8 = 2;

/// Runs `f` (decoding a task's argument): refs deserialised meanwhile are
/// borrowed and counted, and registered with the task's submitter when the
/// task ends ([`Core::register_borrows`]).
pub(crate) fn decoding_args<R>(f: impl FnOnce() -> R) -> R {
    let _restore = Restore(DECODING.with(|d| d.replace(ARGS)));
    f()
}

/// Runs `f` (a `get` decoding a value): refs deserialised meanwhile that
/// name their owner are borrowed and counted, and returned with it, to be
/// registered there ([`Core::register_decoded`]) before the value is
/// handed over. A value without such refs costs two thread-local writes.
pub(crate) fn decoding_value<R>(f: impl FnOnce() -> R) -> (R, Vec<(ObjectId, ReplyTo)>) {
    let restore = Restore(DECODING.with(|d| d.replace(VALUE)));
    let from = DECODED.with(|d| d.borrow().len());
    let r = f();
    drop(restore);
    let refs = DECODED.with(|d| {
        let mut d = d.borrow_mut();
        if d.len() == from {
            Vec::new()
        } else {
            d.split_off(from)
        }
    });
    (r, refs)
}

/// What a ref deserialised now is in ([`NOT_COUNTED`], [`ARGS`] or
/// [`VALUE`]).
#[inline]
pub(crate) fn decoding() -> u8 {
    DECODING.with(|d| d.get())
}

/// A ref to `id` (owned by `owner`, if known) is being deserialised while
/// [`decoding`] counts: whether to borrow it. In a task's arguments always
/// (its submitter holds it); in a `get`'s value only when its owner is
/// known, to be registered there.
pub(crate) fn decoded(id: ObjectId, owner: Option<ReplyTo>) -> bool {
    match (decoding(), owner) {
        (ARGS, owner) => {
            if let Some(owner) = owner {
                ARG_REFS.with(|r| r.borrow_mut().push((id, owner)));
            }
            true
        }
        (VALUE, Some(owner)) => {
            DECODED.with(|d| d.borrow_mut().push((id, owner)));
            true
        }
        _ => false,
    }
}

/// Runs `f` (archiving a task's argument) and returns, with its result, the
/// refs archived inside it.
pub(crate) fn track_args<R>(f: impl FnOnce() -> R) -> (R, Vec<Tracked>) {
    let outer = TRACKING.with(|t| t.borrow_mut().replace(Vec::new()));
    let r = f();
    let refs = TRACKING.with(|t| std::mem::replace(&mut *t.borrow_mut(), outer));
    (r, refs.unwrap_or_default())
}

/// While a task argument is archived: takes the ref being archived into it
/// (`true`), else leaves it to the caller (`false`).
pub(crate) fn tracked(id: ObjectId, guard: &Option<Arc<OwnerGuard>>) -> bool {
    TRACKING.with(|t| match t.borrow_mut().as_mut() {
        Some(v) => {
            v.push((id, guard.clone()));
            true
        }
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;

    fn at(conn: u64) -> ReplyTo {
        static NODE: std::sync::OnceLock<NodeId> = std::sync::OnceLock::new();
        ReplyTo {
            node: *NODE.get_or_init(NodeId::random),
            conn,
        }
    }

    #[test]
    fn br_1_released_once_after_the_last_copy_and_borrower() {
        let b = Borrowed::default();
        let (x, parent) = (ObjectId::random(), at(7));
        b.add(x);
        b.add(x);
        assert_eq!(b.register(&[x], parent), vec![x]);
        assert_eq!(b.child(x, false), Some(None));
        assert_eq!(b.drop_local(x), None);
        assert_eq!(b.drop_local(x), None, "a borrower of ours still holds it");
        assert_eq!(b.child(x, true), Some(Some(parent)), "released now, once");
        assert_eq!(b.len(), 0);
        assert_eq!(b.drop_local(x), None);
        assert_eq!(b.child(x, true), None, "not borrowed here any more");
    }

    #[test]
    fn br_2_a_held_ref_is_registered_with_one_submitter() {
        let b = Borrowed::default();
        let (x, y, gone) = (ObjectId::random(), ObjectId::random(), ObjectId::random());
        b.add(x);
        b.add(y);
        b.add(gone);
        assert_eq!(
            b.drop_local(gone),
            None,
            "never registered: nothing to tell"
        );
        assert_eq!(b.register(&[x, gone], at(1)), vec![x]);
        assert_eq!(b.register(&[x, y], at(2)), vec![y], "x stays with 1");
        b.unregister(&[y]);
        assert_eq!(b.register(&[y], at(3)), vec![y]);
        assert_eq!(b.drop_local(x), Some(at(1)));
        assert_eq!(b.drop_local(y), Some(at(3)));
    }

    #[test]
    fn a_borrowed_ref_archived_where_nobody_counts_is_held_for_good() {
        let b = Borrowed::default();
        let (x, unknown) = (ObjectId::random(), ObjectId::random());
        b.add(x);
        b.keep_for_good(x);
        b.keep_for_good(unknown);
        assert_eq!(b.len(), 1, "only refs borrowed from arguments are held");
        assert_eq!(b.register(&[x], at(5)), vec![x]);
        assert_eq!(b.drop_local(x), None, "never released: archived elsewhere");
    }

    #[test]
    fn refs_are_counted_only_while_arguments_are_decoded() {
        assert_eq!(decoding(), NOT_COUNTED);
        assert_eq!(decoding_args(decoding), ARGS);
        assert_eq!(decoding(), NOT_COUNTED);
    }

    #[test]
    fn refs_read_out_of_a_value_are_borrowed_only_from_a_known_owner_br3() {
        let (x, y) = (ObjectId::random(), ObjectId::random());
        assert!(!decoded(x, Some(at(1))), "outside a decode: not counted");
        let (inner, refs) =
            decoding_value(|| (decoding(), decoded(x, Some(at(1))), decoded(y, None)));
        assert_eq!(inner, (VALUE, true, false), "no owner: nowhere to register");
        assert_eq!(refs, vec![(x, at(1))]);
        assert_eq!(decoding(), NOT_COUNTED);
        // Nested: each decode takes back only its own.
        let ((_, inner), outer) = decoding_value(|| {
            decoded(x, Some(at(1)));
            decoding_value(|| decoded(y, Some(at(2))))
        });
        assert_eq!((inner, outer), (vec![(y, at(2))], vec![(x, at(1))]));
        // In a task's arguments the submitter holds them, owner or not.
        assert!(decoding_args(|| decoded(y, None)));
    }

    #[test]
    fn only_refs_archived_inside_track_args_are_taken() {
        let (x, y) = (ObjectId::random(), ObjectId::random());
        assert!(!tracked(x, &None));
        let ((), refs) = track_args(|| {
            assert!(tracked(x, &None));
            let ((), inner) = track_args(|| assert!(tracked(y, &None)));
            assert_eq!(inner.len(), 1);
        });
        assert_eq!(refs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![x]);
        assert!(!tracked(y, &None), "tracking ends with the call");
    }
}
