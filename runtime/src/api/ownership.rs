//! The objects this process owns: one [`Slot`] per task it submitted (or
//! value it put), pending until the outcome arrives, and the protocol that
//! makes an owned value reachable by other processes once a ref to it
//! escapes inside another value. Pure bookkeeping: the store copies it asks
//! for are made by the caller ([`super::core::Core`]).
//!
//! Invariants:
//!
//! - **OW-1** an escaped object whose value is inline (small, held only
//!   here) is copied into the object store at least once, whichever comes
//!   first: the escape or the outcome. [`Owned::finish`] sets the state and
//!   then reads the escape flag; [`Owned::escape`] sets the flag and then
//!   reads the state; a SeqCst fence between the write and the read on both
//!   sides means at least one of the two sees the other's write
//!   (`ow_1_an_escaped_inline_value_is_copied_whatever_the_order`).
//! - **OW-2** an object whose ref was archived into a value other than a
//!   task's arguments, a task's result or a `put` (a channel message) is
//!   never released by its last local ref (other processes may read it
//!   through the refs it was archived in, and nobody counts them).
//! - **OW-3** an object whose refs only went into task arguments, task
//!   results and `put` values is freed once its last local ref (a `put`
//!   value holds one while it lives, a result's holder while the result
//!   lives, RR-1 in `result_refs.rs`) and its last registered borrower are
//!   gone, whichever goes last (`api/borrowing.rs`); never before either.
//! - **LN-1** a task's result whose last copy died with its node is made
//!   again by its owner, by running the task again (up to its
//!   `max_retries`), when a `get` finds it lost; a put's value and an actor
//!   call's result cannot be, and their loss is a typed `ObjectLost` saying
//!   so. The task is kept (its lineage) as long as its object, no longer.
//! - **LN-2** a task that failed because an argument its owner can rebuild
//!   was lost runs again once that argument is rebuilt (recursively).

use super::error::TaskError;
use super::value::Encoded;
use dashmap::DashMap;
use prism_objectstore::{IdHasher, ObjectId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;
use tokio::sync::Notify;

/// Where an owned object's value is.
#[derive(Debug, Clone)]
pub(crate) enum SlotState {
    /// Its task has not ended.
    Pending,
    /// Small: held here.
    Inline(Arc<Encoded>),
    /// In the object store.
    Stored,
    /// Its task failed.
    Failed(TaskError),
}

/// One owned object.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) name: String,
    state: Mutex<SlotState>,
    cv: Condvar,
    notify: Notify,
    escaped: AtomicBool,
    /// Archived somewhere nobody counts: kept until the owner exits (OW-2).
    uncounted: AtomicBool,
    /// The last local ref is gone, and how many processes borrow it (OW-3).
    refs: Mutex<(bool, usize)>,
    /// This process holds a pinned copy in the store (unpinned on release).
    pub(crate) stored: AtomicBool,
    /// What made it.
    pub(crate) origin: Origin,
    /// For a task's result: the task, kept while the object lives, to run
    /// again if the object is lost (LN-1).
    pub(crate) lineage: Mutex<Option<crate::proto::task::TaskSpec>>,
    /// For a task's result with refs inside: the process holding them
    /// until this object goes (RR-1 in `result_refs.rs`).
    held_by: Mutex<Option<crate::proto::task::ReplyTo>>,
}

/// What made an owned object (whether it can be made again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `prism::put`, or an argument this process stored.
    Put,
    /// A task: it can run again.
    Task,
    /// An actor call (its actor's state moved on: it cannot run again).
    ActorCall,
    /// An actor's creation.
    ActorCreation,
    /// A request answered by the raylet.
    Request,
}

impl Origin {
    /// For error messages: `a put`, `an actor call`...
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Origin::Put => "a put",
            Origin::Task => "a task",
            Origin::ActorCall => "an actor call",
            Origin::ActorCreation => "an actor's creation",
            Origin::Request => "a request to the raylet",
        }
    }

    /// What a spec of `kind` makes.
    pub(crate) fn of(kind: &crate::proto::task::TaskKind) -> Origin {
        use crate::proto::task::TaskKind;
        match kind {
            TaskKind::Task => Origin::Task,
            TaskKind::ActorCall(_) => Origin::ActorCall,
            TaskKind::CreateActor(_) => Origin::ActorCreation,
        }
    }
}

impl Slot {
    pub(crate) fn new(name: &str, state: SlotState) -> Arc<Slot> {
        Arc::new(Slot {
            name: name.to_string(),
            state: Mutex::new(state),
            cv: Condvar::new(),
            notify: Notify::new(),
            escaped: AtomicBool::new(false),
            uncounted: AtomicBool::new(false),
            refs: Mutex::new((false, 0)),
            stored: AtomicBool::new(false),
            origin: Origin::Put,
            lineage: Mutex::new(None),
            held_by: Mutex::new(None),
        })
    }

    /// A slot for what `spec` makes.
    pub(crate) fn for_spec(spec: &crate::proto::task::TaskSpec) -> Arc<Slot> {
        let mut s = Slot::new(&spec.name, SlotState::Pending);
        if let Some(slot) = Arc::get_mut(&mut s) {
            slot.origin = Origin::of(&spec.kind);
        }
        s
    }

    /// A slot for a request the raylet answers.
    pub(crate) fn for_request(name: &str) -> Arc<Slot> {
        let mut s = Slot::new(name, SlotState::Pending);
        if let Some(slot) = Arc::get_mut(&mut s) {
            slot.origin = Origin::Request;
        }
        s
    }

    /// Whether the task that made it is kept.
    pub(crate) fn has_lineage(&self) -> bool {
        self.lineage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Keeps the task that makes this object, with its arguments as sent,
    /// so that it can run again (only a plain task's).
    pub(crate) fn keep_lineage(&self, spec: &crate::proto::task::TaskSpec) {
        if self.origin == Origin::Task {
            *self.lineage.lock().unwrap_or_else(|p| p.into_inner()) = Some(spec.clone());
        }
    }

    /// Sets who holds the refs inside this result (RR-1); the earlier
    /// holder, to be released.
    pub(crate) fn set_holder(
        &self,
        to: Option<crate::proto::task::ReplyTo>,
    ) -> Option<crate::proto::task::ReplyTo> {
        std::mem::replace(
            &mut *self.held_by.lock().unwrap_or_else(|p| p.into_inner()),
            to,
        )
    }

    pub(crate) fn state(&self) -> SlotState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether its task has not ended (no clone of the state).
    pub(crate) fn is_pending(&self) -> bool {
        matches!(
            *self.state.lock().unwrap_or_else(|p| p.into_inner()),
            SlotState::Pending
        )
    }

    pub(crate) fn set(&self, s: SlotState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
        self.cv.notify_all();
        self.notify.notify_waiters();
    }

    /// Whether the store holds (or must hold) a pinned copy to drop.
    pub(crate) fn pinned(&self) -> bool {
        matches!(self.state(), SlotState::Stored) || self.stored.load(Ordering::SeqCst)
    }

    /// Its state once not pending, looked for briefly (`spin.rs`) and
    /// never past `deadline`; `None`: still pending. Callers spin here
    /// before they tell the raylet they block, so an answer that comes
    /// within the spin costs the raylet nothing.
    pub(crate) fn settles_soon(&self, deadline: Option<Instant>) -> Option<SlotState> {
        let until = Instant::now() + super::spin::SPIN;
        let until = deadline.map_or(until, |d| d.min(until));
        super::spin::briefly(until, || {
            let g = match self.state.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return None,
            };
            (!matches!(*g, SlotState::Pending)).then(|| g.clone())
        })
    }

    /// Waits until not pending; `None` on timeout.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Option<SlotState> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if !matches!(*g, SlotState::Pending) {
                return Some(g.clone());
            }
            match deadline {
                None => g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    g = self
                        .cv
                        .wait_timeout(g, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }

    /// Resolves once not pending (async `get`).
    pub(crate) async fn ready(&self) {
        loop {
            let n = self.notify.notified();
            if !matches!(self.state(), SlotState::Pending) {
                return;
            }
            n.await;
        }
    }
}

/// Every object this process owns.
#[derive(Debug, Default)]
pub(crate) struct Owned {
    slots: DashMap<ObjectId, Arc<Slot>, IdHasher>,
}

impl Owned {
    /// Starts owning `id`.
    pub(crate) fn insert(&self, id: ObjectId, slot: Arc<Slot>) {
        self.slots.insert(id, slot);
    }

    /// The slot of `id`, if this process owns it.
    pub(crate) fn get(&self, id: ObjectId) -> Option<Arc<Slot>> {
        self.slots.get(&id).map(|s| s.clone())
    }

    /// Every object with its slot.
    pub(crate) fn all_ids(&self) -> Vec<(ObjectId, Arc<Slot>)> {
        self.slots.iter().map(|s| (*s.key(), s.clone())).collect()
    }

    /// Every slot (to fail the pending ones when the raylet is lost).
    pub(crate) fn all(&self) -> Vec<Arc<Slot>> {
        self.slots.iter().map(|s| s.clone()).collect()
    }

    /// The outcome of `id` arrived. `None` if this process no longer owns
    /// it; else the inline value to copy into the store now, if the object
    /// escaped first (OW-1).
    pub(crate) fn finish(&self, id: ObjectId, state: SlotState) -> Option<Option<Arc<Encoded>>> {
        let slot = self.get(id)?;
        let inline = match &state {
            SlotState::Inline(b) => Some(b.clone()),
            _ => None,
        };
        slot.set(state);
        // OW-1: write the state, fence, then read the escape flag.
        std::sync::atomic::fence(Ordering::SeqCst);
        Some(inline.filter(|_| slot.escaped.load(Ordering::SeqCst)))
    }

    /// A ref to `id` is being archived into a value (`counted`: a task's
    /// arguments, whose borrowers register, OW-3; else OW-2): returns the
    /// inline value to copy into the store now, if the outcome came first
    /// (OW-1).
    pub(crate) fn escape(&self, id: ObjectId, counted: bool) -> Option<Arc<Encoded>> {
        let slot = self.get(id)?;
        if !counted {
            slot.uncounted.store(true, Ordering::SeqCst);
        }
        if slot.escaped.swap(true, Ordering::SeqCst) {
            return None;
        }
        // OW-1: write the escape flag, fence, then read the state.
        std::sync::atomic::fence(Ordering::SeqCst);
        match slot.state() {
            SlotState::Inline(b) => Some(b),
            _ => None,
        }
    }

    /// The last local ref to `id` was dropped: forgets it unless it is
    /// uncounted (OW-2) or borrowed (OW-3). Returns the slot if it was
    /// forgotten (its copies must go).
    pub(crate) fn release(&self, id: ObjectId) -> Option<Arc<Slot>> {
        let slot = self.get(id)?;
        if slot.uncounted.load(Ordering::SeqCst) {
            return None;
        }
        let mut refs = slot.refs.lock().unwrap_or_else(|p| p.into_inner());
        refs.0 = true;
        if refs.1 > 0 {
            return None;
        }
        drop(refs);
        self.slots.remove(&id).map(|(_, s)| s)
    }

    /// A process started (or, with `release`, stopped) borrowing `id`:
    /// `None` if this process does not own it; else the slot if that was
    /// the last hold (OW-3), forgotten now (its copies must go).
    pub(crate) fn borrow(&self, id: ObjectId, release: bool) -> Option<Option<Arc<Slot>>> {
        let slot = self.get(id)?;
        let mut refs = slot.refs.lock().unwrap_or_else(|p| p.into_inner());
        if !release {
            refs.1 += 1;
            return Some(None);
        }
        refs.1 = refs.1.saturating_sub(1);
        if refs.1 > 0 || !refs.0 || slot.uncounted.load(Ordering::SeqCst) {
            return Some(None);
        }
        drop(refs);
        Some(self.slots.remove(&id).map(|(_, s)| s))
    }

    /// How many objects this process owns.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Forgets `id` even if it escaped (`prism::free`).
    pub(crate) fn free(&self, id: ObjectId) -> Option<Arc<Slot>> {
        self.slots.remove(&id).map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    fn value() -> Arc<Encoded> {
        let mut b = Encoded::with_capacity(4);
        b.extend_from_slice(&[1, 2, 3, 4]);
        Arc::new(b)
    }

    #[test]
    fn ow_1_an_escaped_inline_value_is_copied_whatever_the_order() {
        // Race the outcome against the escape on two threads, many times:
        // every round must ask for at least one copy.
        const ROUNDS: usize = 20_000;
        let owned = Arc::new(Owned::default());
        let ids: Vec<ObjectId> = (0..ROUNDS).map(|_| ObjectId::random()).collect();
        for id in &ids {
            owned.insert(*id, Slot::new("t", SlotState::Pending));
        }
        let start = Arc::new(Barrier::new(2));
        let (o, i, s) = (owned.clone(), ids.clone(), start.clone());
        let finisher = std::thread::spawn(move || {
            s.wait();
            i.iter()
                .map(|id| {
                    o.finish(*id, SlotState::Inline(value()))
                        .expect("owned")
                        .is_some()
                })
                .collect::<Vec<bool>>()
        });
        start.wait();
        let escaped: Vec<bool> = ids
            .iter()
            .map(|id| owned.escape(*id, false).is_some())
            .collect();
        let finished = finisher.join().unwrap();
        for (r, (e, f)) in escaped.iter().zip(&finished).enumerate() {
            assert!(*e || *f, "round {r}: the escaped value was never copied");
        }
    }

    #[test]
    fn ow_1_in_either_order_on_one_thread() {
        let owned = Owned::default();
        let (a, b) = (ObjectId::random(), ObjectId::random());
        owned.insert(a, Slot::new("a", SlotState::Pending));
        owned.insert(b, Slot::new("b", SlotState::Pending));
        // Escape first: the outcome copies.
        assert!(owned.escape(a, false).is_none());
        assert!(owned
            .finish(a, SlotState::Inline(value()))
            .unwrap()
            .is_some());
        // Outcome first: the escape copies, once.
        assert!(owned
            .finish(b, SlotState::Inline(value()))
            .unwrap()
            .is_none());
        assert!(owned.escape(b, false).is_some());
        assert!(
            owned.escape(b, false).is_none(),
            "a second escape asks for nothing"
        );
        // A stored outcome never needs a copy.
        let c = ObjectId::random();
        owned.insert(c, Slot::new("c", SlotState::Pending));
        owned.escape(c, false);
        assert_eq!(
            owned.finish(c, SlotState::Stored).unwrap().map(|_| ()),
            None
        );
    }

    #[test]
    fn ow_2_an_escaped_object_outlives_its_last_local_ref() {
        let owned = Owned::default();
        let (kept, gone) = (ObjectId::random(), ObjectId::random());
        owned.insert(kept, Slot::new("kept", SlotState::Stored));
        owned.insert(gone, Slot::new("gone", SlotState::Stored));
        owned.escape(kept, false);
        assert!(owned.release(kept).is_none());
        assert!(owned.get(kept).is_some());
        assert!(owned.release(gone).is_some_and(|s| s.pinned()));
        assert!(owned.get(gone).is_none());
        assert!(owned.free(kept).is_some(), "free forgets it anyway");
        assert!(owned.borrow(kept, false).is_none(), "not owned any more");
        assert!(
            owned.finish(kept, SlotState::Stored).is_none(),
            "not owned any more"
        );
    }

    #[test]
    fn ow_3_freed_when_the_last_local_ref_and_borrower_are_gone() {
        let owned = Owned::default();
        let (a, b) = (ObjectId::random(), ObjectId::random());
        owned.insert(a, Slot::new("a", SlotState::Stored));
        owned.insert(b, Slot::new("b", SlotState::Stored));
        // a: borrowed twice, local refs go first, then the borrowers.
        owned.escape(a, true);
        assert!(matches!(owned.borrow(a, false), Some(None)));
        assert!(matches!(owned.borrow(a, false), Some(None)));
        assert!(owned.release(a).is_none(), "borrowed: kept");
        assert!(matches!(owned.borrow(a, true), Some(None)));
        assert!(
            matches!(owned.borrow(a, true), Some(Some(_))),
            "freed by the last borrower"
        );
        assert!(owned.get(a).is_none());
        // b: the borrower leaves first, then the local refs go.
        owned.escape(b, true);
        assert!(matches!(owned.borrow(b, false), Some(None)));
        assert!(
            matches!(owned.borrow(b, true), Some(None)),
            "local refs remain"
        );
        assert!(owned.get(b).is_some());
        assert!(owned.release(b).is_some(), "freed by the last local ref");
        // An uncounted escape keeps it whatever borrowers do (OW-2).
        let c = ObjectId::random();
        owned.insert(c, Slot::new("c", SlotState::Stored));
        owned.escape(c, true);
        owned.escape(c, false);
        assert!(matches!(owned.borrow(c, false), Some(None)));
        assert!(owned.release(c).is_none());
        assert!(matches!(owned.borrow(c, true), Some(None)));
        assert_eq!(owned.len(), 1);
    }
}
