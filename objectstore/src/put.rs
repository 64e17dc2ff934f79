//! One-call helpers over create → write → seal and get → view.

use crate::alloc::SegmentAllocator;
use crate::id::{ClientId, ObjectId};
use crate::store::{Store, StoreError};
use crate::tensor::{TensorMeta, TensorView};

impl<A: SegmentAllocator> Store<A> {
    /// Makes a sealed copy here a primary one (a draining node handed it
    /// over): pinned, never evicted (spilled if room is needed).
    pub fn pin(&mut self, id: ObjectId) -> Result<(), StoreError> {
        let e = self.entry_mut(id)?;
        e.pinned = true;
        e.cached = false;
        Ok(())
    }

    /// Creates, writes and seals `data` as one object (one copy into the segment).
    pub fn put(
        &mut self,
        id: ObjectId,
        data: &[u8],
        client: ClientId,
        pinned: bool,
    ) -> Result<(), StoreError> {
        self.put_parts(id, &[data], client, pinned)
    }

    /// Stores a tensor: header, then `data` (whose length must match the meta).
    pub fn put_tensor(
        &mut self,
        id: ObjectId,
        meta: &TensorMeta,
        data: &[u8],
        client: ClientId,
        pinned: bool,
    ) -> Result<(), StoreError> {
        let want = meta.data_bytes()?;
        if data.len() != want {
            return Err(crate::tensor::TensorError::BadShape(format!(
                "{} data bytes for a shape that needs {want}",
                data.len()
            ))
            .into());
        }
        self.put_parts(id, &[&meta.encode_header(), data], client, pinned)
    }

    /// One object from consecutive parts; a failed write or seal reclaims it.
    fn put_parts(
        &mut self,
        id: ObjectId,
        parts: &[&[u8]],
        client: ClientId,
        pinned: bool,
    ) -> Result<(), StoreError> {
        self.create(id, parts.iter().map(|p| p.len()).sum(), client, pinned)?;
        let mut offset = 0;
        let mut written = Ok(());
        for part in parts {
            written = written.and_then(|_| self.write(id, client, offset, part));
            offset += part.len();
        }
        let written = written.and_then(|_| self.seal(id, client));
        if written.is_err() {
            // The half-written object was this client's to write.
            let _ = self.abort(id, client);
        }
        written
    }

    /// Gets a tensor in place; the caller holds a reference until `release`.
    pub fn get_tensor(
        &mut self,
        id: ObjectId,
        client: ClientId,
    ) -> Result<TensorView<'_>, StoreError> {
        let block = self.get(id, client)?;
        let view = TensorView::parse(self.bytes(block)?);
        match view {
            Ok(v) => Ok(v),
            Err(e) => Err(e.into()),
        }
    }

    /// Gets an object's bytes in place; the caller holds a reference until `release`.
    pub fn get_bytes(&mut self, id: ObjectId, client: ClientId) -> Result<&[u8], StoreError> {
        let block = self.get(id, client)?;
        self.bytes(block)
    }
}
