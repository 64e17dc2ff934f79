//! Putting values: into the object store (large ones archived straight
//! into shared memory, small ones also kept here inline), with the refs
//! archived inside a value kept alive as long as the value lives (BR-3 in
//! `borrowing.rs`).

use super::core::{Core, INLINE_MAX};
use super::error::{Error, Result};
use super::object_ref::ObjectRef;
use super::ownership::{Slot, SlotState};
use super::value::Value;
use prism_objectstore::ObjectId;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Core {
    /// Copies an inline value into the store (idempotent); its pin goes
    /// with the last ref.
    pub(crate) fn store_copy(&self, id: ObjectId, bytes: &[u8]) {
        if let Some(slot) = self.owned.get(id) {
            slot.stored.store(true, Ordering::SeqCst);
        }
        if matches!(self.store.info(id), Ok(Some(_))) {
            return;
        }
        if let Err(e) = self
            .store
            .put_parts(id, &[bytes], true, Duration::from_secs(60))
        {
            if !matches!(self.store.info(id), Ok(Some(_))) {
                tracing::warn!(object = %id, "cannot copy an escaped value into the store: {e}");
            }
        }
    }

    /// Puts a value in the object store. A small value is also kept here,
    /// so this process's own `get`s of it need no round trip to the store.
    pub(crate) fn put<T: Value>(self: &Arc<Self>, value: &T) -> Result<ObjectRef<T>> {
        self.put_as(ObjectId::random(), value, true)
    }

    /// [`Core::put`] under a chosen id; without `inline_ok` the value is
    /// never shipped inside a task's arguments (readers elsewhere pull it
    /// through their raylet, where the head can refuse, OD-3).
    pub(crate) fn put_as<T: Value>(
        self: &Arc<Self>,
        id: ObjectId,
        value: &T,
        inline_ok: bool,
    ) -> Result<ObjectRef<T>> {
        // The refs archived into the value live as long as it does (BR-3).
        let (slot, inside) =
            super::borrowing::track_args(|| self.store_value(id, value, inline_ok));
        self.owned.insert(id, slot?);
        let guards: Vec<_> = inside.into_iter().filter_map(|(_, g)| g).collect();
        if !guards.is_empty() {
            self.keepalive.insert(id, guards);
        }
        Ok(ObjectRef::owned(id, self.clone()))
    }

    fn store_value<T: Value>(&self, id: ObjectId, value: &T, inline_ok: bool) -> Result<Arc<Slot>> {
        let len = value.encoded_len()?;
        let slot = if len <= INLINE_MAX {
            let bytes = value.encode()?;
            self.store
                .put_parts(id, &[&bytes], true, Duration::from_secs(60))?;
            if inline_ok {
                let s = Slot::new("put", SlotState::Inline(Arc::new(bytes)));
                s.stored.store(true, Ordering::SeqCst);
                s
            } else {
                Slot::new("put", SlotState::Stored)
            }
        } else {
            // Large: archived straight into shared memory, one copy.
            let offset = self.store.create(id, len, true, Duration::from_secs(60))?;
            // SAFETY: this client just created the object: until it seals it,
            // the range is its alone (no reader can get an unsealed object,
            // OS-3), and it is exactly the object's `len` bytes.
            let out = unsafe { self.store.segment().bytes_mut(offset, len) };
            let written = out
                .map_err(|e| Error::Encode(e.to_string()))
                .and_then(|out| value.encode_into(out));
            if let Err(e) = written {
                let _ = self.store.abort(id);
                return Err(e);
            }
            self.store.seal(id)?;
            Slot::new("put", SlotState::Stored)
        };
        Ok(slot)
    }

    /// Takes ownership of an object this process just created and sealed
    /// in the store (its pin is dropped with the last ref).
    pub(crate) fn adopt_stored<T>(self: &Arc<Self>, id: ObjectId) -> ObjectRef<T> {
        self.owned.insert(id, Slot::new("put", SlotState::Stored));
        ObjectRef::owned(id, self.clone())
    }

    /// Makes sure an object this process owns is in the local store, for a
    /// view in place: waits for its task, and copies a small (inline) value
    /// into the store, unpinned again with the last ref.
    pub(crate) fn ensure_stored(&self, id: ObjectId, timeout: Option<Duration>) -> Result<()> {
        let Some(slot) = self.owned.get(id) else {
            return Ok(());
        };
        let mut state = slot.state();
        if matches!(state, SlotState::Pending) {
            let deadline = timeout.map(|t| Instant::now() + t);
            state = slot
                .settles_soon(deadline)
                .or_else(|| self.blocking(|| slot.wait(deadline)))
                .ok_or_else(|| Error::Timeout {
                    what: format!("task {} ({id})", slot.name),
                    ms: timeout.map_or(0, |t| t.as_millis() as u64),
                })?;
        }
        match state {
            SlotState::Inline(b) => {
                self.store_copy(id, &b);
                slot.stored.store(true, Ordering::SeqCst);
                Ok(())
            }
            SlotState::Failed(e) => Err(e.into()),
            SlotState::Stored | SlotState::Pending => Ok(()),
        }
    }
}
