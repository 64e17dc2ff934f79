//! What the store tells the rest of the cluster about its copies: a log of
//! sealed copies made and removed (freed, evicted, forgotten), in the order
//! they happened, for the raylet to forward to the head's object directory;
//! and [`Store::forget`], the owner's "this object is dead" reaching a copy.
//!
//! - **OS-7** while the log is on, every sealed copy that leaves the store
//!   (free, eviction, forget, a dead writer's reclaim excepted: it was never
//!   sealed) is logged after the seal that made it, so a directory that
//!   applies the log in order ends with exactly the copies the store holds.
//! - **OS-8** an object a client created as its owner ([`Store::own`]) is
//!   freed when that client disconnects ([`Store::release_client`]), once
//!   its readers are done.

use super::Store;
use crate::alloc::SegmentAllocator;
use crate::id::ObjectId;

/// One change of the copies a store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyChange {
    /// A copy was sealed here (readable).
    Sealed {
        /// The object.
        id: ObjectId,
        /// Its bytes.
        size: usize,
    },
    /// The copy here is gone.
    Removed {
        /// The object.
        id: ObjectId,
    },
}

impl<A: SegmentAllocator> Store<A> {
    /// Starts logging copy changes (OS-7); [`Store::take_changes`] drains them.
    pub fn log_changes(&mut self) {
        self.log.get_or_insert_with(Vec::new);
    }

    /// The copy changes since the last call, oldest first.
    pub fn take_changes(&mut self) -> Vec<CopyChange> {
        self.log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub(super) fn logged(&mut self, change: CopyChange) {
        if let Some(log) = self.log.as_mut() {
            log.push(change);
        }
    }

    /// `client`, which created `id`, owns it: it is freed when that client
    /// disconnects (OS-8).
    pub fn own(&mut self, id: ObjectId, client: crate::id::ClientId) {
        if let Ok(e) = self.entry_mut(id) {
            e.owner = Some(client);
        }
    }

    /// Its owner freed `id`: the copy here goes now, or when its last
    /// reader releases it (a primary copy is unpinned, a cached one is no
    /// longer kept). `false` if there is no copy here.
    pub fn forget(&mut self, id: ObjectId) -> bool {
        let Ok(e) = self.entry_mut(id) else {
            return false;
        };
        e.pinned = false;
        e.cached = false;
        self.free_if_unreferenced(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::{ClientId, CopyChange, ObjectId, Store};

    fn store() -> Store {
        Store::new(&format!("/prism-chg-{}", std::process::id()), 1 << 20, None).unwrap()
    }

    #[test]
    fn os_7_seals_and_removals_are_logged_in_order() {
        let mut s = store();
        let c = ClientId(1);
        let (a, b) = (ObjectId::random(), ObjectId::random());
        s.put(a, &[1u8; 100], c, true).unwrap();
        assert!(s.take_changes().is_empty(), "nothing is logged until asked");
        s.log_changes();
        s.put(b, &[2u8; 64], c, true).unwrap();
        s.unpin(b).unwrap();
        s.unpin(a).unwrap();
        // An unsealed object that is aborted was never a copy.
        let u = ObjectId::random();
        s.create(u, 10, c, true).unwrap();
        s.abort(u, c).unwrap();
        assert_eq!(
            s.take_changes(),
            vec![
                CopyChange::Sealed { id: b, size: 64 },
                CopyChange::Removed { id: b },
                CopyChange::Removed { id: a },
            ]
        );
        assert!(s.take_changes().is_empty());
    }

    #[test]
    fn os_8_an_owned_object_goes_with_its_owner_once_its_readers_are_done() {
        let mut s = store();
        let (owner, reader, other) = (ClientId(1), ClientId(2), ClientId(3));
        let (mine, read, theirs) = (ObjectId::random(), ObjectId::random(), ObjectId::random());
        s.put(mine, &[1u8; 10], owner, true).unwrap();
        s.put(read, &[2u8; 10], owner, true).unwrap();
        s.put(theirs, &[3u8; 10], other, true).unwrap();
        s.own(mine, owner);
        s.own(read, owner);
        s.get(read, reader).unwrap();
        let cleanup = s.release_client(owner);
        let mut freed = cleanup.freed.clone();
        freed.sort();
        let mut want = vec![mine, read];
        want.sort();
        assert_eq!(freed, want);
        assert!(s.info(mine).is_none());
        assert!(s.info(read).is_some(), "a reader still holds it");
        s.release(read, reader).unwrap();
        assert!(s.info(read).is_none());
        assert!(
            s.info(theirs).is_some(),
            "pinned, not owned by a client: stays"
        );
    }

    #[test]
    fn forget_frees_a_pinned_or_cached_copy_once_its_readers_are_done() {
        let mut s = store();
        s.log_changes();
        let c = ClientId(1);
        let (primary, cached) = (ObjectId::random(), ObjectId::random());
        s.put(primary, &[1u8; 100], c, true).unwrap();
        s.put(cached, &[2u8; 100], c, false).unwrap();
        let _ = s.take_changes();
        assert!(s.info(cached).is_some(), "an unpinned copy stays cached");
        s.get(primary, c).unwrap();
        assert!(s.forget(primary));
        assert!(s.forget(cached));
        assert!(s.info(cached).is_none());
        assert!(s.info(primary).is_some(), "a reader still holds it");
        s.release(primary, c).unwrap();
        assert!(s.info(primary).is_none());
        assert!(!s.forget(primary), "no copy left to forget");
        assert_eq!(
            s.take_changes(),
            vec![
                CopyChange::Removed { id: cached },
                CopyChange::Removed { id: primary },
            ]
        );
    }
}
