//! Prism's per-machine object store: one shared-memory segment, mapped by the
//! raylet and every worker on the machine, holding immutable objects that
//! readers use in place.
//!
//! # The lifecycle
//!
//! 1. **create** — [`Store::create`] reserves a 64-byte-aligned block for an
//!    id; the creating client is its only writer.
//! 2. **write** — the writer fills the block in place (in another process,
//!    through its own mapping of the segment; in this one, [`Store::write`]).
//! 3. **seal** — [`Store::seal`]: the bytes never change again.
//! 4. **get** — [`Store::get`] returns the block (restoring it from disk if it
//!    was spilled) and counts a reference for the reader; the reader views
//!    the bytes in place, no copy, in time independent of size.
//! 5. **release** — [`Store::release`] drops the reference; [`Store::unpin`]
//!    drops the owner's pin. When neither remains, the object is freed.
//! 6. **evict / spill** — when `create` or a restore needs room, unused
//!    unpinned objects are evicted (least recently used first) and unused
//!    pinned ones are written to the spill directory; if nothing can move,
//!    `create` fails with [`StoreError::StoreFull`] naming the bytes asked and
//!    available. Waiting for room (back-pressure) is the caller's choice.
//!
//! ```
//! use prism_objectstore::{ClientId, ObjectId, Store, DType, TensorMeta};
//!
//! let mut store = Store::new("doc", 1 << 20, None).unwrap();
//! let (writer, reader) = (ClientId(1), ClientId(2));
//! let id = ObjectId::random();
//! let meta = TensorMeta::contiguous(DType::F32, &[2, 2]);
//! let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|x| x.to_le_bytes()).collect();
//! store.put_tensor(id, &meta, &data, writer, true).unwrap();
//! let t = store.get_tensor(id, reader).unwrap();
//! assert_eq!(t.as_slice::<f32>().unwrap(), &[1.0, 2.0, 3.0, 4.0]);
//! store.release(id, reader).unwrap();
//! store.unpin(id).unwrap(); // owner done: freed
//! assert!(store.info(id).is_none());
//! ```
//!
//! # Invariants
//!
//! - OS-1: a sealed object's bytes never change.
//! - OS-2: a pinned object is never evicted; under pressure it is spilled.
//! - OS-3: an object being written or held by a reader is never moved,
//!   spilled or evicted.
//! - OS-4: an unpinned object is freed when its last reference is released,
//!   except a cached secondary copy ([`Store::create_cached`]), which stays
//!   until eviction needs its room.
//! - OS-5: a spilled object comes back byte-identical, or the read fails
//!   (missing or corrupt file), never with wrong data.
//! - OS-6: a dead client's references are released and the objects it was
//!   writing are reclaimed.
//! - OS-7: every object starts on a 64-byte boundary.
//!
//! # Where this sits in Prism
//!
//! This crate knows nothing of networking. Each **raylet** owns one
//! [`Store`] and serves it to the workers and drivers of its machine over a
//! Unix socket, passing the segment's file descriptor once so every local
//! process maps the same pages; a client process that disconnects has its
//! references released ([`Store::release_client`]).
//!
//! Between machines, the **head** keeps an object directory (object → nodes
//! holding a sealed copy), fed by raylets on seal and on pull and pruned when
//! a node dies. A raylet whose local client asks for an object it lacks asks
//! the head where copies are and **pulls** from a peer raylet over QUIC: it
//! creates a cached secondary copy ([`Store::create_cached`]), fetches 8 MiB
//! chunks on parallel streams straight into its segment, and seals it;
//! concurrent requests share one pull, and a source that stops making
//! progress is abandoned for the next copy, or the request fails naming each
//! source. The shell lives in `prism::raylet::{store_server, transfer}`.

#![deny(missing_docs)]

mod alloc;
mod id;
mod put;
mod shm;
mod spill;
mod store;
mod tensor;

pub use alloc::{Block, FailingAlloc, OffsetAlloc, SegmentAllocator, ALIGN};
pub use id::{ClientId, IdHasher, ObjectId};
pub use shm::Segment;
pub use spill::{SpillError, SpillKey};
pub use store::{ClientCleanup, CopyChange, ObjectInfo, Store, StoreError, StoreStats};
pub use tensor::{DType, Element, TensorError, TensorMeta, TensorView, MAX_DIMS};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_spill_key;
