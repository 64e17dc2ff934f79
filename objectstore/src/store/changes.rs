//! What the store tells the rest of the cluster about its copies: a log of
//! sealed copies made and removed (freed, evicted, forgotten), in the order
//! they happened, for the raylet to forward to the head's object directory;
//! and [`Store::forget`], the owner's "this object is dead" reaching a copy.
//!
//! - **OS-7** while the log is on, every sealed copy that leaves the store
//!   (free, eviction, forget, a dead writer's reclaim excepted: it was never
//!   sealed) is logged after the seal that made it, so a directory that
//!   applies the log in order ends with exactly the copies the store holds.

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
