//! Borrow releases sent in batches. A value holding 10,000 refs that is
//! dropped releases 10,000 borrows; one message each cost the `get
//! object containing 10k refs` row of `prism microbenchmark` 30 ms a get.
//!
//! - **BR-5** the release of a dropped copy's registration is queued and
//!   sent with the others queued by then, one message per owner, soon and
//!   off the dropping thread; every release queued when this process
//!   registers a borrow again is sent before that registration. Owners
//!   and raylets count registrations, so a release that reaches them late
//!   only keeps an object a little longer; one never sent (its process
//!   gone, or its runtime shut down before the flush ran) is released by
//!   the raylet when the process's connection closes.

use super::core::Core;
use crate::proto::task::{LocalRequest, ReplyTo};
use prism_objectstore::ObjectId;
use std::sync::Arc;

impl Core {
    /// A deserialised copy of a borrowed ref was dropped: its release is
    /// queued and sent in a batch (BR-5).
    pub(crate) fn drop_borrow(self: &Arc<Self>, id: ObjectId) {
        if let Some(parent) = self.borrowed.drop_local(id) {
            let first = {
                let mut queued = self.lock_releases();
                queued.push((parent, id));
                queued.len() == 1
            };
            if first {
                // Sent off this thread, with whatever was queued meanwhile
                // (a dropped value's refs go in one message per owner).
                let me = self.clone();
                drop(self.handle.spawn_blocking(move || me.flush_releases()));
            }
        }
    }

    fn lock_releases(&self) -> std::sync::MutexGuard<'_, Vec<(ReplyTo, ObjectId)>> {
        self.releases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends the queued releases now (BR-5). The queue stays locked while
    /// they are written, so a registration that flushes first goes after
    /// them.
    pub(crate) fn flush_releases(&self) {
        let mut queued = self.lock_releases();
        if queued.is_empty() {
            return;
        }
        let mut by_owner: Vec<(ReplyTo, Vec<ObjectId>)> = Vec::new();
        for (to, id) in queued.drain(..) {
            match by_owner.iter_mut().find(|(t, _)| *t == to) {
                Some((_, ids)) => ids.push(id),
                None => by_owner.push((to, vec![id])),
            }
        }
        for (to, objects) in by_owner {
            let _ = self.send(&LocalRequest::Borrows {
                request_id: None,
                to,
                objects,
                release: true,
            });
        }
    }
}
