//! The local object-store protocol: a worker or driver and the raylet of its
//! machine, over a Unix socket. On accept the raylet sends the segment's file
//! descriptor once (SCM_RIGHTS); after that each request is one frame and
//! one response frame, and the data itself never crosses the socket.

use rkyv::{Archive, Deserialize, Serialize};

/// A 16-byte object id on the wire.
pub type WireObjectId = prism_objectstore::ObjectId;

/// A request to the local store.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum StoreRequest {
    /// First request: who is connecting.
    Hello {
        /// The client's process id.
        pid: u32,
    },
    /// Reserve `size` bytes; waits up to `timeout_ms` for room.
    Create {
        /// The object.
        id: WireObjectId,
        /// Bytes.
        size: u64,
        /// Primary copy: spilled, never evicted.
        pinned: bool,
        /// Owned by this client: freed when it disconnects.
        owned: bool,
        /// How long to wait for room when the store is full.
        timeout_ms: u64,
    },
    /// Seal a created object.
    Seal {
        /// The object.
        id: WireObjectId,
    },
    /// Abandon a created object.
    Abort {
        /// The object.
        id: WireObjectId,
    },
    /// Get a sealed object; waits up to `timeout_ms` for it to appear.
    Get {
        /// The object.
        id: WireObjectId,
        /// How long to wait.
        timeout_ms: u64,
    },
    /// Drop one reference.
    Release {
        /// The object.
        id: WireObjectId,
    },
    /// The owner is done with the primary copy.
    Unpin {
        /// The object.
        id: WireObjectId,
    },
    /// One object's state.
    Info {
        /// The object.
        id: WireObjectId,
    },
    /// Store counters.
    Stats,
    /// Create, fill with `data` and seal in one round trip (objects of at
    /// most [`SMALL_PUT_MAX`] bytes); waits up to `timeout_ms` for room.
    PutSmall {
        /// The object.
        id: WireObjectId,
        /// Primary copy: spilled, never evicted.
        pinned: bool,
        /// Owned by this client: freed when it disconnects.
        owned: bool,
        /// How long to wait for room when the store is full.
        timeout_ms: u64,
        /// The object's bytes.
        data: Vec<u8>,
    },
}

/// The largest object a client sends inside its put request
/// ([`StoreRequest::PutSmall`]); larger ones are written into shared
/// memory between a create and a seal.
pub const SMALL_PUT_MAX: usize = 32 << 10;

/// One object's state.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireObjectInfo {
    /// Bytes.
    pub size: u64,
    /// Sealed.
    pub sealed: bool,
    /// On disk.
    pub spilled: bool,
    /// Pinned.
    pub pinned: bool,
    /// References held.
    pub refs: u32,
}

/// Store counters.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireStoreStats {
    /// Segment bytes.
    pub capacity: u64,
    /// Free bytes.
    pub free: u64,
    /// Objects.
    pub objects: u64,
    /// Objects on disk now.
    pub spilled: u64,
    /// Spills so far.
    pub spills: u64,
    /// Restores so far.
    pub restores: u64,
    /// Evictions so far.
    pub evictions: u64,
}

/// Why the store refused.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// No such object.
    NotFound,
    /// The id exists.
    AlreadyExists,
    /// Not sealed yet.
    NotSealed,
    /// Already sealed.
    AlreadySealed,
    /// Nothing could be evicted or spilled in time.
    Full {
        /// Bytes asked.
        requested: u64,
        /// Largest free region.
        available: u64,
    },
    /// Larger than the store.
    TooLarge,
    /// Spilling or restoring failed.
    Spill,
    /// The object lives elsewhere and no copy could be fetched.
    TransferFailed,
    /// The object's last copy died with its node.
    Lost,
    /// The raylet serves as many local clients as it may; this one is refused.
    TooManyClients,
    /// Any other refusal.
    BadRequest,
}

/// The store's answer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum StoreResponse {
    /// Hello accepted.
    Welcome {
        /// This connection's client id.
        client_id: u64,
        /// The segment's size (the fd came with the accept).
        segment_len: u64,
    },
    /// Space reserved at this segment offset.
    Created {
        /// Offset.
        offset: u64,
    },
    /// A sealed object at this range.
    Object {
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// Done.
    Ok,
    /// One object's state (`None`: not in the store).
    Info(Option<WireObjectInfo>),
    /// Counters.
    Stats(WireStoreStats),
    /// Refused.
    Error {
        /// Category.
        kind: StoreErrorKind,
        /// A sentence naming the cause.
        message: String,
    },
}
