//! The store: the segment, its allocator, the object table and the spill
//! directory. Synchronous and clock-free; the raylet's shell serialises
//! requests into it and does any waiting (back-pressure) itself.

use crate::alloc::{Block, OffsetAlloc, SegmentAllocator, ALIGN};
use crate::id::{ClientId, ObjectId};
use crate::shm::Segment;
use crate::spill::{self, SpillError};
use std::collections::HashMap;
use std::path::PathBuf;

mod changes;
mod pressure;

pub use changes::CopyChange;

/// A store operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `create` of an id that exists.
    #[error("object {0} already exists")]
    AlreadyExists(ObjectId),
    /// No such object (never created, freed, or evicted).
    #[error("object {0} is not in this store")]
    NotFound(ObjectId),
    /// The object is still being written.
    #[error("object {0} is not sealed yet")]
    NotSealed(ObjectId),
    /// A write or seal after seal.
    #[error("object {0} is already sealed; sealed objects never change")]
    AlreadySealed(ObjectId),
    /// Only the creator may write or seal.
    #[error("client {client:?} did not create object {id}")]
    NotWriter {
        /// The object.
        id: ObjectId,
        /// Who tried.
        client: ClientId,
    },
    /// The client holds no reference to release.
    #[error("client {client:?} holds no reference to {id}")]
    NotReferenced {
        /// The object.
        id: ObjectId,
        /// Who tried.
        client: ClientId,
    },
    /// The object is being written or read, so it cannot move (OS-3).
    #[error("object {0} is in use and cannot be spilled")]
    InUse(ObjectId),
    /// A write past the object's end.
    #[error("write of {len} bytes at {offset} overflows object {id} of {size} bytes")]
    OutOfBounds {
        /// The object.
        id: ObjectId,
        /// Where.
        offset: usize,
        /// How much.
        len: usize,
        /// The object's size.
        size: usize,
    },
    /// Larger than the whole segment.
    #[error("object {id} of {requested} bytes is larger than the store ({capacity} bytes)")]
    ObjectTooLarge {
        /// The object.
        id: ObjectId,
        /// Its size.
        requested: usize,
        /// The segment's size.
        capacity: usize,
    },
    /// Nothing more can be evicted or spilled to make room.
    #[error("object store full: {requested} bytes requested, {available} bytes available ({pinned_in_use} bytes pinned or in use)")]
    StoreFull {
        /// Bytes asked.
        requested: usize,
        /// Largest free region after evicting and spilling all that could be.
        available: usize,
        /// Bytes that cannot move: in use by readers/writers, or pinned with nowhere to spill.
        pinned_in_use: usize,
    },
    /// Spilling or restoring failed.
    #[error("object {id}: {source}")]
    Spill {
        /// The object.
        id: ObjectId,
        /// What failed.
        source: SpillError,
    },
    /// A tensor object is malformed or read as the wrong type.
    #[error(transparent)]
    Tensor(#[from] crate::tensor::TensorError),
    /// The segment could not be created or accessed.
    #[error("shared memory: {0}")]
    Segment(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
enum Location {
    Memory(Block),
    Spilled(PathBuf),
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    size: usize,
    loc: Location,
    /// `Some(writer)` until sealed.
    writer: Option<ClientId>,
    /// The tag of the client that created this copy, as it was then.
    tag: Option<[u8; 16]>,
    refs: HashMap<ClientId, u32>,
    pub(crate) pinned: bool,
    /// A secondary copy kept after its last reader, until evicted (OS-4).
    pub(crate) cached: bool,
    /// The client whose object this is: when it disconnects, the object
    /// goes (OS-8, `changes.rs`).
    pub(crate) owner: Option<ClientId>,
    last_used: u64,
}

impl Entry {
    fn in_use(&self) -> bool {
        self.writer.is_some() || !self.refs.is_empty()
    }
}

/// What the store knows of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Bytes.
    pub size: usize,
    /// Sealed (readable, immutable).
    pub sealed: bool,
    /// On disk rather than in the segment.
    pub spilled: bool,
    /// Pinned: never evicted (OS-2).
    pub pinned: bool,
    /// References held, over all clients.
    pub refs: u32,
    /// The tag its creating client had ([`Store::tag_client`]; the raylet
    /// tags a process with its job), kept after that client goes.
    pub tag: Option<[u8; 16]>,
}

/// Counters for status pages and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Segment bytes.
    pub capacity: usize,
    /// Free segment bytes.
    pub free: usize,
    /// Objects, in memory or spilled.
    pub objects: usize,
    /// Objects on disk.
    pub spilled: usize,
    /// Bytes of the objects on disk.
    pub spilled_bytes: usize,
    /// Objects ever spilled.
    pub spills: u64,
    /// Objects ever restored.
    pub restores: u64,
    /// Objects ever evicted.
    pub evictions: u64,
}

/// What [`Store::release_client`] cleaned up for a dead client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCleanup {
    /// References dropped.
    pub released: u32,
    /// Unsealed objects it was writing, now reclaimed.
    pub reclaimed: Vec<ObjectId>,
    /// Sealed objects it owned, now freed here (their copies elsewhere
    /// must go too).
    pub freed: Vec<ObjectId>,
}

/// The object store of one machine.
#[derive(Debug)]
pub struct Store<A: SegmentAllocator = OffsetAlloc> {
    seg: Segment,
    alloc: A,
    objects: HashMap<ObjectId, Entry, crate::IdHasher>,
    spill_dir: Option<PathBuf>,
    /// Seals spill files when set (encryption at rest).
    spill_key: Option<spill::SpillKey>,
    clock: u64,
    stats: StoreStats,
    /// Sealed copies made and removed, in order, while tracked (the raylet
    /// tells the head's object directory).
    log: Option<Vec<CopyChange>>,
    /// Each connected client's tag, copied into the copies it creates.
    tags: HashMap<ClientId, [u8; 16]>,
}

impl Store<OffsetAlloc> {
    /// A store over a new segment of `capacity` bytes; spills into `spill_dir` if given.
    pub fn new(
        name: &str,
        capacity: usize,
        spill_dir: Option<PathBuf>,
    ) -> Result<Store, StoreError> {
        let capacity = capacity / ALIGN * ALIGN;
        Ok(Store::with_allocator(
            Segment::create(name, capacity)?,
            OffsetAlloc::new(capacity),
            spill_dir,
        ))
    }
}

impl<A: SegmentAllocator> Store<A> {
    /// A store over an existing segment and allocator (tests use a failing one).
    pub fn with_allocator(seg: Segment, alloc: A, spill_dir: Option<PathBuf>) -> Store<A> {
        Store {
            stats: StoreStats {
                capacity: alloc.capacity(),
                ..Default::default()
            },
            seg,
            alloc,
            objects: HashMap::default(),
            spill_dir,
            spill_key: None,
            clock: 0,
            log: None,
            tags: HashMap::new(),
        }
    }

    /// Seals spill files written from now on with `key` (AES-256-GCM); a
    /// store with no key writes them plain. Files sealed before stay
    /// readable only with the same key.
    pub fn set_spill_key(&mut self, key: Option<&[u8; 32]>) {
        self.spill_key = key.map(spill::SpillKey::new);
    }

    /// The segment, to map in other processes or read blocks.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn entry(&self, id: ObjectId) -> Result<&Entry, StoreError> {
        self.objects.get(&id).ok_or(StoreError::NotFound(id))
    }

    pub(crate) fn entry_mut(&mut self, id: ObjectId) -> Result<&mut Entry, StoreError> {
        self.objects.get_mut(&id).ok_or(StoreError::NotFound(id))
    }

    /// Reserves `size` bytes for a new object written by `client`, who holds
    /// it until [`Store::seal`]. A pinned object is a primary copy: spilled,
    /// never evicted, under pressure (OS-2).
    pub fn create(
        &mut self,
        id: ObjectId,
        size: usize,
        client: ClientId,
        pinned: bool,
    ) -> Result<Block, StoreError> {
        self.create_with(id, size, client, pinned, false)
    }

    /// Like [`Store::create`] for a cached secondary copy (one pulled from
    /// another machine): unpinned, and kept after its last reader lets go
    /// until eviction needs the room (OS-4).
    pub fn create_cached(
        &mut self,
        id: ObjectId,
        size: usize,
        client: ClientId,
    ) -> Result<Block, StoreError> {
        self.create_with(id, size, client, false, true)
    }

    fn create_with(
        &mut self,
        id: ObjectId,
        size: usize,
        client: ClientId,
        pinned: bool,
        cached: bool,
    ) -> Result<Block, StoreError> {
        if self.objects.contains_key(&id) {
            return Err(StoreError::AlreadyExists(id));
        }
        if size > self.alloc.capacity() {
            return Err(StoreError::ObjectTooLarge {
                id,
                requested: size,
                capacity: self.alloc.capacity(),
            });
        }
        let block = self.make_room(size)?;
        let last_used = self.tick();
        self.objects.insert(
            id,
            Entry {
                size,
                loc: Location::Memory(block),
                writer: Some(client),
                tag: self.tags.get(&client).copied(),
                refs: HashMap::new(),
                pinned,
                cached,
                owner: None,
                last_used,
            },
        );
        Ok(block)
    }

    /// Copies `data` into an unsealed object at `offset` (for in-process writers).
    pub fn write(
        &self,
        id: ObjectId,
        client: ClientId,
        offset: usize,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let e = self.entry(id)?;
        match (e.writer, &e.loc) {
            (None, _) => Err(StoreError::AlreadySealed(id)),
            (Some(w), _) if w != client => Err(StoreError::NotWriter { id, client }),
            (Some(_), _)
                if offset
                    .checked_add(data.len())
                    .is_none_or(|end| end > e.size) =>
            {
                Err(StoreError::OutOfBounds {
                    id,
                    offset,
                    len: data.len(),
                    size: e.size,
                })
            }
            (Some(_), Location::Memory(b)) => Ok(self.seg.write(b.offset + offset, data)?),
            (Some(_), Location::Spilled(_)) => Err(StoreError::NotSealed(id)),
        }
    }

    /// Seals an object: from now on its bytes never change (OS-1) and readers may get it.
    pub fn seal(&mut self, id: ObjectId, client: ClientId) -> Result<(), StoreError> {
        let e = self.entry_mut(id)?;
        match e.writer {
            None => Err(StoreError::AlreadySealed(id)),
            Some(w) if w != client => Err(StoreError::NotWriter { id, client }),
            Some(_) => {
                e.writer = None;
                let size = e.size;
                self.logged(CopyChange::Sealed { id, size });
                Ok(())
            }
        }
    }

    /// Abandons an unsealed object its writer will not finish.
    pub fn abort(&mut self, id: ObjectId, client: ClientId) -> Result<(), StoreError> {
        match self.entry(id)?.writer {
            None => Err(StoreError::AlreadySealed(id)),
            Some(w) if w != client => Err(StoreError::NotWriter { id, client }),
            Some(_) => {
                self.remove(id);
                Ok(())
            }
        }
    }

    /// Gets a sealed object for `client`, restoring it from disk if spilled;
    /// the client holds a reference until [`Store::release`] (OS-3).
    pub fn get(&mut self, id: ObjectId, client: ClientId) -> Result<Block, StoreError> {
        let e = self.entry(id)?;
        if e.writer.is_some() {
            return Err(StoreError::NotSealed(id));
        }
        if let Location::Spilled(path) = e.loc.clone() {
            self.restore(id, &path)?;
        }
        let now = self.tick();
        let e = self.entry_mut(id)?;
        *e.refs.entry(client).or_insert(0) += 1;
        e.last_used = now;
        match e.loc {
            Location::Memory(b) => Ok(b),
            Location::Spilled(_) => Err(StoreError::NotFound(id)),
        }
    }

    /// The bytes of a block returned by `create` or `get`.
    pub fn bytes(&self, block: Block) -> Result<&[u8], StoreError> {
        Ok(self.seg.bytes(block.offset, block.len)?)
    }

    /// Drops one of `client`'s references; frees the object if it is now
    /// unreferenced and unpinned (OS-4).
    pub fn release(&mut self, id: ObjectId, client: ClientId) -> Result<(), StoreError> {
        let e = self.entry_mut(id)?;
        match e.refs.get_mut(&client) {
            None => return Err(StoreError::NotReferenced { id, client }),
            Some(1) => {
                e.refs.remove(&client);
            }
            Some(n) => *n -= 1,
        }
        self.free_if_unreferenced(id);
        Ok(())
    }

    /// The owner no longer needs the primary copy: unpin it and free it once
    /// nobody reads it (OS-4).
    pub fn unpin(&mut self, id: ObjectId) -> Result<(), StoreError> {
        self.entry_mut(id)?.pinned = false;
        self.free_if_unreferenced(id);
        Ok(())
    }

    pub(crate) fn free_if_unreferenced(&mut self, id: ObjectId) {
        if self
            .objects
            .get(&id)
            .is_some_and(|e| !e.pinned && !e.cached && !e.in_use())
        {
            self.remove(id);
        }
    }

    fn remove(&mut self, id: ObjectId) {
        let Some(e) = self.objects.remove(&id) else {
            return;
        };
        if e.writer.is_none() {
            self.logged(CopyChange::Removed { id });
        }
        match e.loc {
            Location::Memory(b) => self.alloc.free(b),
            Location::Spilled(path) => spill::remove(&path),
        }
    }

    /// Tags `client`: the copies it creates from now on carry `tag`.
    pub fn tag_client(&mut self, client: ClientId, tag: [u8; 16]) {
        self.tags.insert(client, tag);
    }

    /// Whether `client` has a tag.
    pub fn is_tagged(&self, client: ClientId) -> bool {
        self.tags.contains_key(&client)
    }

    /// Releases everything a dead client held and reclaims what it was
    /// writing (OS-6).
    pub fn release_client(&mut self, client: ClientId) -> ClientCleanup {
        self.tags.remove(&client);
        let mut out = ClientCleanup::default();
        let ids: Vec<ObjectId> = self.objects.keys().copied().collect();
        for id in ids {
            let Some(e) = self.objects.get_mut(&id) else {
                continue;
            };
            out.released += e.refs.remove(&client).unwrap_or(0);
            if e.writer == Some(client) {
                out.reclaimed.push(id);
                self.remove(id);
            } else {
                if e.owner == Some(client) {
                    // OS-8: its owner is gone.
                    e.pinned = false;
                    e.cached = false;
                    out.freed.push(id);
                }
                self.free_if_unreferenced(id);
            }
        }
        out
    }

    /// One object's state.
    pub fn info(&self, id: ObjectId) -> Option<ObjectInfo> {
        self.objects.get(&id).map(|e| ObjectInfo {
            size: e.size,
            sealed: e.writer.is_none(),
            spilled: matches!(e.loc, Location::Spilled(_)),
            pinned: e.pinned,
            refs: e.refs.values().sum(),
            tag: e.tag,
        })
    }

    /// Every object's id (sealed or not, in memory or spilled).
    pub fn ids(&self) -> Vec<ObjectId> {
        self.objects.keys().copied().collect()
    }

    /// Counters.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            free: self.alloc.free_bytes(),
            objects: self.objects.len(),
            spilled: self
                .objects
                .values()
                .filter(|e| matches!(e.loc, Location::Spilled(_)))
                .count(),
            spilled_bytes: self
                .objects
                .values()
                .filter(|e| matches!(e.loc, Location::Spilled(_)))
                .map(|e| e.size)
                .sum(),
            ..self.stats
        }
    }
}
