//! One-call helpers over create → write → seal and get → view.

use crate::alloc::SegmentAllocator;
use crate::id::{ClientId, ObjectId};
use crate::store::{Store, StoreError};
use crate::tensor::{TensorMeta, TensorView};

impl<A: SegmentAllocator> Store<A> {
    /// Creates, writes and seals `data` as one object (one copy into the segment).
    pub fn put(
        &mut self,
        id: ObjectId,
        data: &[u8],
        client: ClientId,
        pinned: bool,
    ) -> Result<(), StoreError> {
        self.create(id, data.len(), client, pinned)?;
        let written = self
            .write(id, client, 0, data)
            .and_then(|_| self.seal(id, client));
        if written.is_err() {
            self.release_client_object(id, client);
        }
        written
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
        let header = meta.encode_header();
        self.create(id, header.len() + data.len(), client, pinned)?;
        let written = self
            .write(id, client, 0, &header)
            .and_then(|_| self.write(id, client, header.len(), data))
            .and_then(|_| self.seal(id, client));
        if written.is_err() {
            self.release_client_object(id, client);
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

    fn release_client_object(&mut self, id: ObjectId, client: ClientId) {
        if self.info(id).is_some_and(|i| !i.sealed) {
            // Reclaims the half-written object; it was this client's to write.
            let _ = self.abort(id, client);
        }
    }
}
