//! When the segment is full: evicting unpinned copies (least recently used
//! first), spilling pinned objects to disk (sealed with the spill key when
//! the cluster encrypts at rest) and restoring them on demand (OS-2, OS-3,
//! OS-5). A child of `store`, so it works on the store's own fields.

use super::{Location, Store, StoreError};
use crate::alloc::{Block, SegmentAllocator};
use crate::id::ObjectId;
use crate::spill::{self, SpillError};
use std::path::{Path, PathBuf};

impl<A: SegmentAllocator> Store<A> {
    /// Writes an object to the spill directory and frees its memory. Only a
    /// sealed object nobody is using can move (OS-3).
    pub fn spill(&mut self, id: ObjectId) -> Result<(), StoreError> {
        let e = self.entry(id)?;
        let Location::Memory(block) = e.loc else {
            return Ok(());
        };
        if e.writer.is_some() {
            return Err(StoreError::NotSealed(id));
        }
        if e.in_use() {
            return Err(StoreError::InUse(id));
        }
        let dir = self.spill_dir.clone().ok_or(StoreError::Spill {
            id,
            source: SpillError::Missing(PathBuf::from("<no spill directory configured>")),
        })?;
        let data = self.seg.bytes(block.offset, block.len)?;
        let path = spill::write(&dir, id, data, self.spill_key.as_ref())
            .map_err(|source| StoreError::Spill { id, source })?;
        self.alloc.free(block);
        self.entry_mut(id)?.loc = Location::Spilled(path);
        self.stats.spills += 1;
        Ok(())
    }

    pub(super) fn restore(&mut self, id: ObjectId, path: &Path) -> Result<(), StoreError> {
        let size = self.entry(id)?.size;
        let block = self.make_room(size)?;
        // SAFETY: `block` was just allocated and is recorded nowhere yet, so
        // this process is its only writer and nobody reads it.
        let dst = unsafe { self.seg.bytes_mut(block.offset, block.len) };
        let read = dst.map_err(StoreError::from).and_then(|dst| {
            spill::read(path, id, dst, self.spill_key.as_ref())
                .map_err(|source| StoreError::Spill { id, source })
        });
        if let Err(e) = read {
            self.alloc.free(block);
            return Err(e);
        }
        spill::remove(path);
        self.entry_mut(id)?.loc = Location::Memory(block);
        self.stats.restores += 1;
        Ok(())
    }

    /// Finds room for `size` bytes: evict unpinned, unused objects (least
    /// recently used first), then spill pinned ones, else fail (OS-2, OS-3).
    pub(super) fn make_room(&mut self, size: usize) -> Result<Block, StoreError> {
        loop {
            if let Some(b) = self.alloc.allocate(size) {
                return Ok(b);
            }
            let can_spill = self.spill_dir.is_some();
            let victim = self
                .objects
                .iter()
                .filter(|(_, e)| {
                    matches!(e.loc, Location::Memory(_)) && !e.in_use() && (!e.pinned || can_spill)
                })
                .min_by_key(|(_, e)| (e.pinned, e.last_used))
                .map(|(id, e)| (*id, e.pinned));
            match victim {
                Some((id, false)) => {
                    self.remove(id);
                    self.stats.evictions += 1;
                }
                Some((id, true)) => self.spill(id)?,
                None => {
                    let stuck = self
                        .objects
                        .values()
                        .filter_map(|e| match e.loc {
                            Location::Memory(b) => Some(b.len),
                            Location::Spilled(_) => None,
                        })
                        .sum();
                    return Err(StoreError::StoreFull {
                        requested: size,
                        available: self.alloc.largest_free(),
                        pinned_in_use: stuck,
                    });
                }
            }
        }
    }
}
