//! The raylet's object store as a shared service: the pure
//! [`prism_objectstore::Store`] behind a lock, a second mapping of its
//! segment for transfers that must not hold the lock, a change counter that
//! waiters sleep on (a `Create` in a full store and a `Get` of an unsealed
//! object wait, bounded, for it to change), and the [`Remote`] side of the
//! cluster (pulls from peers, copies reported to the head). Its local door
//! is `store_door`; a client that disconnects (exit, crash, kill -9) has its
//! references released and its unsealed objects reclaimed (OS-6).

use prism_objectstore::{Block, ClientId, ObjectId, Segment, Store, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The raylet's own client id in its store (pulls and sends); local
/// connections count from 1.
pub(super) const RAYLET_CLIENT: ClientId = ClientId(0);

/// A store shared by every local connection.
#[derive(Debug)]
pub struct StoreServer {
    pub(super) store: Mutex<Store>,
    /// A second mapping of the same segment, for sends and pulls that must
    /// not hold the store lock while they wait on the network.
    pub(super) seg: Segment,
    /// Bumped on every change that may unblock a waiter.
    generation: Mutex<u64>,
    changed: Condvar,
    pub(super) next_client: AtomicU64,
    pub(super) transfer: OnceLock<Arc<dyn Remote>>,
    /// The raylet's runtime, on which client threads run pulls.
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) stopping: std::sync::atomic::AtomicBool,
    /// The job of a local process (by pid): a client's copies carry it.
    pub(super) job_of_pid: OnceLock<JobOfPid>,
    /// Local clients connected now, and the most allowed (one thread each).
    pub(super) clients: std::sync::atomic::AtomicUsize,
    pub(super) max_clients: std::sync::atomic::AtomicUsize,
    /// Object bytes sent to peers.
    pub bytes_sent: AtomicU64,
    /// Object bytes pulled from peers.
    pub bytes_received: AtomicU64,
    /// The cluster's at-rest key, handed to local processes in their
    /// welcome (they seal checkpoints with it, `prism::at_rest`).
    at_rest_key: Mutex<Option<[u8; 32]>>,
}

/// The job of a local process, by pid (the raylet's records).
pub struct JobOfPid(pub Box<dyn Fn(u32) -> Option<crate::ids::JobId> + Send + Sync>);

impl std::fmt::Debug for JobOfPid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobOfPid")
    }
}

/// What the store needs from the rest of the cluster (the raylet's
/// `Transfer` provides it): objects it does not hold, pulled from peers, and
/// the head told of the copies it holds.
pub trait Remote: Send + Sync + std::fmt::Debug {
    /// Makes `id` local by pulling a copy from a peer before `deadline`.
    fn pull<'a>(
        &'a self,
        server: &'a Arc<StoreServer>,
        id: ObjectId,
        deadline: Instant,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PullError>> + Send + 'a>>;
    /// Tells the head this node holds a sealed copy of `id` (in the background).
    fn report(&self, id: ObjectId, size: u64);
    /// Their owner is gone: the copies of `ids` on other nodes must go too.
    fn freed(&self, ids: &[ObjectId]);
}

/// A pull did not produce the object.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The head knows no live copy (yet).
    #[error("no live copy of {0} is known to the head")]
    NoLocation(ObjectId),
    /// Its last copy died with its node (only its owner can rebuild it).
    #[error("object {id} is lost: {why}")]
    Lost {
        /// The object.
        id: ObjectId,
        /// Which node held the last copy, and how it died.
        why: String,
    },
    /// Every known copy failed.
    #[error("could not fetch {id} from any copy: {}", tried.join("; "))]
    Failed {
        /// The object.
        id: ObjectId,
        /// Each source and why it failed.
        tried: Vec<String>,
    },
}

/// A sealed object held (referenced) while its bytes are sent to a peer.
#[derive(Debug)]
pub struct SendHold {
    pub(super) server: Arc<StoreServer>,
    pub(super) id: ObjectId,
    pub(super) block: Block,
}

impl SendHold {
    /// The object's size.
    pub fn len(&self) -> usize {
        self.block.len
    }

    /// True for an empty object.
    pub fn is_empty(&self) -> bool {
        self.block.len == 0
    }

    /// The object's bytes, in the segment.
    pub fn bytes(&self) -> &[u8] {
        self.server
            .seg
            .bytes(self.block.offset, self.block.len)
            .unwrap_or_default()
    }

    /// Bytes `offset..offset + len` of the object, or why not (a peer
    /// asked for a range outside it).
    pub fn range(&self, offset: u64, len: u64) -> Result<&[u8], String> {
        usize::try_from(offset)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(o, l)| self.bytes().get(o..o.checked_add(l)?))
            .ok_or_else(|| {
                let (id, size) = (self.id, self.len());
                format!("range {offset}+{len} is outside {id} ({size} bytes)")
            })
    }
}

impl Drop for SendHold {
    fn drop(&mut self) {
        let _ = self.server.lock().release(self.id, RAYLET_CLIENT);
        self.server.notify();
    }
}

impl StoreServer {
    /// Serves `store`; must be called inside the raylet's tokio runtime.
    pub fn new(store: Store) -> std::io::Result<Arc<StoreServer>> {
        let seg = Segment::from_fd(store.segment().fd().try_clone_to_owned()?)?;
        Ok(Arc::new(StoreServer {
            store: Mutex::new(store),
            seg,
            generation: Mutex::new(0),
            changed: Condvar::new(),
            runtime: tokio::runtime::Handle::current(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            next_client: AtomicU64::new(1),
            transfer: OnceLock::new(),
            job_of_pid: OnceLock::new(),
            clients: Default::default(),
            max_clients: std::sync::atomic::AtomicUsize::new(usize::MAX),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            at_rest_key: Mutex::new(None),
        }))
    }

    /// At most `n` local clients at once; more are refused at the door with
    /// a clear error instead of costing a thread each.
    pub fn set_max_clients(&self, n: usize) {
        self.max_clients.store(n.max(1), Ordering::Relaxed);
    }

    /// Wakes every waiter: the store changed.
    pub(super) fn notify(&self) {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
    }

    pub(super) fn generation(&self) -> u64 {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the store changes after `seen`, or `timeout` passes.
    pub(super) fn wait_change(&self, seen: u64, timeout: Duration) {
        let g = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self.changed.wait_timeout_while(g, timeout, |g| *g == seen);
    }

    /// Enables pulls from and location reports to the cluster (every copy
    /// change is logged from now on, OS-7).
    pub fn set_transfer(&self, t: Arc<dyn Remote>) {
        self.lock().log_changes();
        let _ = self.transfer.set(t);
    }

    /// Its owner freed `id`: the copy here goes (once unread).
    pub fn forget(&self, id: ObjectId) {
        self.lock().forget(id);
        self.notify();
    }

    /// Seals spill files with the cluster's key from now on (encryption at
    /// rest); `None` writes them plain.
    pub fn set_spill_key(&self, key: Option<&[u8; 32]>) {
        *self.at_rest_key.lock().unwrap_or_else(|p| p.into_inner()) = key.copied();
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_spill_key(key);
    }

    /// The cluster's at-rest key, if it encrypts at rest.
    pub fn at_rest_key(&self) -> Option<[u8; 32]> {
        *self.at_rest_key.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The segment (a mapping private to the server, not behind the lock).
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// Every object here with its state, for `prism list objects`.
    pub fn list(&self) -> Vec<(ObjectId, prism_objectstore::ObjectInfo)> {
        let store = self.lock();
        store
            .ids()
            .into_iter()
            .filter_map(|id| store.info(id).map(|i| (id, i)))
            .collect()
    }

    /// True if a sealed copy is here (in memory or spilled).
    pub fn contains(&self, id: ObjectId) -> bool {
        self.lock().info(id).is_some_and(|i| i.sealed)
    }

    /// Creates a secondary (unpinned) copy to pull into; returns its offset.
    pub fn create_for_pull(&self, id: ObjectId, size: u64) -> Result<usize, StoreError> {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        Ok(self.lock().create_cached(id, size, RAYLET_CLIENT)?.offset)
    }

    /// Seals a pulled copy, which readers can now get.
    pub fn seal_pull(&self, id: ObjectId) -> Result<(), StoreError> {
        let r = self.lock().seal(id, RAYLET_CLIENT);
        self.notify();
        r
    }

    /// Makes a sealed copy here a primary one (DR-4).
    pub fn pin(&self, id: ObjectId) -> Result<(), StoreError> {
        self.lock().pin(id)
    }

    /// Drops a pull that failed.
    pub fn abort_pull(&self, id: ObjectId) {
        let _ = self.lock().abort(id, RAYLET_CLIENT);
        self.notify();
    }

    /// References a sealed object while it is sent to a peer.
    pub fn hold_for_send(self: &Arc<Self>, id: ObjectId) -> Result<SendHold, StoreError> {
        let block = self.lock().get(id, RAYLET_CLIENT)?;
        Ok(SendHold {
            server: self.clone(),
            id,
            block,
        })
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock leaves the table as it was before
        // that call (every mutation completes or returns early), so go on.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counters, for heartbeats and status.
    pub fn stats(&self) -> prism_objectstore::StoreStats {
        self.lock().stats()
    }
}
