//! The raylet's object store, served to the processes of its machine over a
//! Unix socket. On accept the segment's fd goes to the client once; then
//! requests are frames. A client that disconnects (exit, crash, kill -9) has
//! its references released and its unsealed objects reclaimed (OS-6).
//!
//! Waiting lives here, not in the store: a `Create` that finds the store
//! full and a `Get` for an object not yet sealed wait (bounded) for the store
//! to change.

use super::transfer::{PullError, Transfer};
use crate::proto::store::{
    StoreErrorKind, StoreRequest, StoreResponse, WireObjectInfo, WireStoreStats,
};
use crate::transport::rpc::{read_msg, write_frame, RpcError};
use prism_objectstore::{Block, ClientId, ObjectId, Segment, Store, StoreError};
use sendfd::SendWithFd;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

/// The largest local request frame (requests are small; data never travels here).
const MAX_LOCAL_FRAME: usize = 64 << 10;

/// The raylet's own client id in its store (pulls and sends); local
/// connections count from 1.
const RAYLET_CLIENT: ClientId = ClientId(0);

/// A store shared by every local connection.
#[derive(Debug)]
pub struct StoreServer {
    store: Mutex<Store>,
    /// A second mapping of the same segment, for sends and pulls that must
    /// not hold the store lock while they wait on the network.
    seg: Segment,
    changed: Notify,
    next_client: AtomicU64,
    transfer: OnceLock<Arc<Transfer>>,
}

/// A sealed object held (referenced) while its bytes are sent to a peer.
#[derive(Debug)]
pub struct SendHold {
    server: Arc<StoreServer>,
    id: ObjectId,
    block: Block,
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
}

impl Drop for SendHold {
    fn drop(&mut self) {
        let _ = self.server.lock().release(self.id, RAYLET_CLIENT);
        self.server.changed.notify_waiters();
    }
}

impl StoreServer {
    /// Serves `store`.
    pub fn new(store: Store) -> std::io::Result<Arc<StoreServer>> {
        let seg = Segment::from_fd(store.segment().fd().try_clone_to_owned()?)?;
        Ok(Arc::new(StoreServer {
            store: Mutex::new(store),
            seg,
            changed: Notify::new(),
            next_client: AtomicU64::new(1),
            transfer: OnceLock::new(),
        }))
    }

    /// Enables pulls from and location reports to the cluster.
    pub fn set_transfer(&self, t: Arc<Transfer>) {
        let _ = self.transfer.set(t);
    }

    /// The segment (a mapping private to the server, not behind the lock).
    pub fn segment(&self) -> &Segment {
        &self.seg
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
        self.changed.notify_waiters();
        r
    }

    /// Drops a pull that failed.
    pub fn abort_pull(&self, id: ObjectId) {
        let _ = self.lock().abort(id, RAYLET_CLIENT);
        self.changed.notify_waiters();
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock leaves the table as it was before
        // that call (every mutation completes or returns early), so go on.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counters, for heartbeats and status.
    pub fn stats(&self) -> prism_objectstore::StoreStats {
        self.lock().stats()
    }
}

/// Binds the socket and serves until the task is dropped.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

/// Accepts local clients forever.
pub async fn serve(listener: UnixListener, server: Arc<StoreServer>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let server = server.clone();
                tokio::spawn(async move { serve_client(stream, server).await });
            }
            Err(e) => {
                warn!("object store socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn send_fd(stream: &UnixStream, server: &StoreServer) -> std::io::Result<()> {
    let fd = server.lock().segment().fd().as_raw_fd();
    loop {
        stream.writable().await?;
        match stream.send_with_fd(&[1u8], &[fd]) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn serve_client(mut stream: UnixStream, server: Arc<StoreServer>) {
    let client = ClientId(server.next_client.fetch_add(1, Ordering::Relaxed));
    if let Err(e) = send_fd(&stream, &server).await {
        warn!("cannot pass the object store segment to a client: {e}");
        return;
    }
    let mut pid = 0;
    let end = loop {
        let req = match read_msg::<StoreRequest, _>(&mut stream, MAX_LOCAL_FRAME).await {
            Ok(Some(req)) => req,
            Ok(None) => break None,
            Err(e) => break Some(e),
        };
        if let StoreRequest::Hello { pid: p } = req {
            pid = p;
        }
        let resp = handle(&server, client, req).await;
        if let Err(e) = write_frame(&mut stream, &resp).await {
            break Some(e);
        }
    };
    if let Some(e @ RpcError::Codec(_)) = &end {
        warn!(client = client.0, pid, error = %e, "malformed object store request; dropping the client");
    }
    let cleanup = server.lock().release_client(client);
    server.changed.notify_waiters();
    if cleanup.released > 0 || !cleanup.reclaimed.is_empty() {
        info!(
            client = client.0,
            pid,
            released = cleanup.released,
            reclaimed = cleanup.reclaimed.len(),
            "object store client gone; released its references"
        );
    } else {
        debug!(client = client.0, pid, "object store client gone");
    }
}

fn error(e: StoreError) -> StoreResponse {
    let kind = match &e {
        StoreError::NotFound(_) => StoreErrorKind::NotFound,
        StoreError::AlreadyExists(_) => StoreErrorKind::AlreadyExists,
        StoreError::NotSealed(_) => StoreErrorKind::NotSealed,
        StoreError::AlreadySealed(_) => StoreErrorKind::AlreadySealed,
        StoreError::StoreFull {
            requested,
            available,
            ..
        } => StoreErrorKind::Full {
            requested: *requested as u64,
            available: *available as u64,
        },
        StoreError::ObjectTooLarge { .. } => StoreErrorKind::TooLarge,
        StoreError::Spill { .. } => StoreErrorKind::Spill,
        _ => StoreErrorKind::BadRequest,
    };
    StoreResponse::Error {
        kind,
        message: e.to_string(),
    }
}

fn done(r: Result<(), StoreError>) -> StoreResponse {
    r.map_or_else(error, |_| StoreResponse::Ok)
}

/// Retries `attempt` until it succeeds, fails for a reason waiting cannot
/// fix, or the deadline passes; woken whenever the store changes.
async fn wait_for<T>(
    server: &StoreServer,
    timeout_ms: u64,
    retry_on: fn(&StoreError) -> bool,
    mut attempt: impl FnMut(&mut Store) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        // Registered before the attempt, so a change in between still wakes us.
        let changed = server.changed.notified();
        let result = attempt(&mut server.lock());
        match result {
            Err(e) if retry_on(&e) && Instant::now() < deadline => {
                let _ = tokio::time::timeout(
                    deadline.saturating_duration_since(Instant::now()),
                    changed,
                )
                .await;
            }
            other => return other,
        }
    }
}

/// A local get; on a miss, pulls from a peer holding a copy, and otherwise
/// waits (bounded) for the object to appear here or anywhere.
async fn get_or_pull(
    server: &Arc<StoreServer>,
    client: ClientId,
    id: ObjectId,
    timeout_ms: u64,
) -> StoreResponse {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let changed = server.changed.notified();
        let result = server.lock().get(id, client);
        match result {
            Ok(b) => {
                return StoreResponse::Object {
                    offset: b.offset as u64,
                    len: b.len as u64,
                }
            }
            Err(StoreError::NotFound(_)) => {
                if let Some(t) = server.transfer.get() {
                    match t.pull(server, id, deadline).await {
                        Ok(()) => continue,
                        Err(PullError::NoLocation(_)) => {}
                        Err(e @ PullError::Failed { .. }) => {
                            return StoreResponse::Error {
                                kind: StoreErrorKind::TransferFailed,
                                message: e.to_string(),
                            }
                        }
                    }
                }
            }
            Err(StoreError::NotSealed(_) | StoreError::StoreFull { .. }) => {}
            Err(e) => return error(e),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return error(StoreError::NotFound(id));
        }
        // Local changes wake us at once; other nodes are asked again shortly.
        let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), changed).await;
    }
}

async fn handle(server: &Arc<StoreServer>, client: ClientId, req: StoreRequest) -> StoreResponse {
    let resp = match req {
        StoreRequest::Hello { .. } => StoreResponse::Welcome {
            client_id: client.0,
            segment_len: server.lock().segment().len() as u64,
        },
        StoreRequest::Create {
            id,
            size,
            pinned,
            timeout_ms,
        } => {
            let full = |e: &StoreError| matches!(e, StoreError::StoreFull { .. });
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            wait_for(server, timeout_ms, full, |s| {
                s.create(ObjectId(id), size, client, pinned)
            })
            .await
            .map_or_else(error, |b| StoreResponse::Created {
                offset: b.offset as u64,
            })
        }
        StoreRequest::Get { id, timeout_ms } => {
            get_or_pull(server, client, ObjectId(id), timeout_ms).await
        }
        StoreRequest::Seal { id } => {
            let sealed = server.lock().seal(ObjectId(id), client);
            if let (Ok(()), Some(t)) = (&sealed, server.transfer.get()) {
                let size = server
                    .lock()
                    .info(ObjectId(id))
                    .map_or(0, |i| i.size as u64);
                t.report(ObjectId(id), size);
            }
            done(sealed)
        }
        StoreRequest::Abort { id } => done(server.lock().abort(ObjectId(id), client)),
        StoreRequest::Release { id } => done(server.lock().release(ObjectId(id), client)),
        StoreRequest::Unpin { id } => done(server.lock().unpin(ObjectId(id))),
        StoreRequest::Info { id } => {
            StoreResponse::Info(server.lock().info(ObjectId(id)).map(|i| WireObjectInfo {
                size: i.size as u64,
                sealed: i.sealed,
                spilled: i.spilled,
                pinned: i.pinned,
                refs: i.refs,
            }))
        }
        StoreRequest::Stats => {
            let s = server.stats();
            StoreResponse::Stats(WireStoreStats {
                capacity: s.capacity as u64,
                free: s.free as u64,
                objects: s.objects as u64,
                spilled: s.spilled as u64,
                spills: s.spills,
                restores: s.restores,
                evictions: s.evictions,
            })
        }
    };
    // Seal, release, unpin and abort can unblock waiters.
    server.changed.notify_waiters();
    resp
}
