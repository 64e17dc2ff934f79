//! The object store's door for local processes: the Unix socket
//! (`store.sock`), a blocking thread per client (store calls are short and
//! synchronous, so a thread blocked on its socket answers in microseconds,
//! with no async wake-ups on the path — Plasma's shape), at most
//! `PRISM_MAX_LOCAL_CLIENTS` of them; and what it answers: create (waiting,
//! bounded, for room in a full store), get (waiting for a seal, or pulling
//! a copy from a peer), seal (and tell the head), a small put (create,
//! write and seal in one request), abort, release, unpin; plus the
//! raylet's own puts and fetches (job binaries).

use super::store_server::{PullError, SendHold, StoreServer, RAYLET_CLIENT};
use crate::proto::codec::{self, ReadError};
use crate::proto::store::{
    StoreErrorKind, StoreRequest, StoreResponse, WireObjectInfo, WireStoreStats, SMALL_PUT_MAX,
};
use prism_objectstore::{Block, ClientId, ObjectId, StoreError};
use sendfd::SendWithFd;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The largest local request frame (requests are small: object bytes
/// travel here only in a small put, at most `SMALL_PUT_MAX`).
const MAX_LOCAL_FRAME: usize = 64 << 10;
/// Binds the socket.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

/// Accepts local clients, one blocking thread each: store calls are short
/// and synchronous, so a thread blocked on its socket answers in
/// microseconds, with no async wake-ups on the path (Plasma's shape).
pub fn serve(
    listener: UnixListener,
    server: Arc<StoreServer>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("store-accept".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if server.stopping.load(Ordering::Relaxed) {
                    return;
                }
                match stream {
                    Ok(stream) => {
                        let max = server.max_clients.load(Ordering::Relaxed);
                        if server.clients.fetch_add(1, Ordering::AcqRel) >= max {
                            server.clients.fetch_sub(1, Ordering::AcqRel);
                            refuse(stream, max);
                            continue;
                        }
                        let s = server.clone();
                        let spawned = std::thread::Builder::new()
                            .name("store-client".into())
                            // Requests are small: a small stack keeps many
                            // clients cheap.
                            .stack_size(256 << 10)
                            .spawn(move || {
                                serve_client(stream, s.clone());
                                s.clients.fetch_sub(1, Ordering::AcqRel);
                            });
                        if let Err(e) = spawned {
                            server.clients.fetch_sub(1, Ordering::AcqRel);
                            warn!("cannot start an object store client thread: {e}");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => return,
                    Err(e) => {
                        warn!("object store socket accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })
}

/// Stops accepting new clients and removes the socket; connected clients
/// keep their threads until they disconnect or the process exits.
pub fn stop(path: &Path, server: &StoreServer) {
    server.stopping.store(true, Ordering::Relaxed);
    // Wake the blocked accept so it sees the flag.
    let _ = UnixStream::connect(path);
    let _ = std::fs::remove_file(path);
}

/// Turns a client away: a zero byte with no descriptor, then the reason.
fn refuse(mut stream: UnixStream, max: usize) {
    warn!(
        max,
        "refused an object store client: too many local clients"
    );
    let why = StoreResponse::Error {
        kind: StoreErrorKind::TooManyClients,
        message: format!(
            "this raylet already serves {max} local object store clients (PRISM_MAX_LOCAL_CLIENTS); close some connections or raise the limit"
        ),
    };
    let _ = stream.send_with_fd(&[0u8], &[]);
    if let Ok(frame) = codec::encode(&why) {
        let _ = stream.write_all(&frame);
    }
}

/// Tags `client` with its process's job before it creates a copy, once
/// the raylet knows that job: the copies keep it after the process goes
/// (`prism list objects` is scoped by it).
fn tag_with_job(server: &StoreServer, client: ClientId, pid: Option<u32>) {
    let (Some(pid), Some(resolve)) = (pid, server.job_of_pid.get()) else {
        return;
    };
    if server.lock().is_tagged(client) {
        return;
    }
    if let Some(job) = (resolve.0)(pid) {
        server.lock().tag_client(client, job.0);
    }
}

/// The pid of the process at the other end of a Unix socket, as the
/// kernel names it (SO_PEERCRED), not as it says.
pub(super) fn peer_pid(fd: std::os::fd::BorrowedFd<'_>) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `fd` is borrowed, so open for the call; `cred` and `len` are
    // valid for writes of the size passed.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    let whole = len as usize == std::mem::size_of::<libc::ucred>();
    u32::try_from(cred.pid)
        .ok()
        .filter(|p| rc == 0 && whole && *p > 0)
}

fn read_request(stream: &mut UnixStream) -> Result<Option<StoreRequest>, ReadError> {
    codec::read_frame(stream, MAX_LOCAL_FRAME)
}

fn serve_client(mut stream: UnixStream, server: Arc<StoreServer>) {
    let client = ClientId(server.next_client.fetch_add(1, Ordering::Relaxed));
    let fd = server.seg.fd().as_raw_fd();
    if let Err(e) = stream.send_with_fd(&[1u8], &[fd]) {
        warn!("cannot pass the object store segment to a client: {e}");
        return;
    }
    let mut pid = 0;
    // The kernel's word for the process, not the client's.
    let kernel_pid = peer_pid(std::os::fd::AsFd::as_fd(&stream));
    loop {
        let req = match read_request(&mut stream) {
            Ok(Some(req)) => req,
            Ok(None) => break,
            Err(ReadError::Io(e)) => {
                debug!(client = client.0, pid, error = %e, "object store client connection failed");
                break;
            }
            Err(ReadError::Codec(e)) => {
                warn!(client = client.0, pid, error = %e, "malformed object store request; dropping the client");
                break;
            }
        };
        if let StoreRequest::Hello { pid: p } = req {
            pid = p;
        }
        if matches!(
            req,
            StoreRequest::Create { .. } | StoreRequest::PutSmall { .. }
        ) {
            tag_with_job(&server, client, kernel_pid);
        }
        let resp = handle(&server, client, req);
        let written = codec::encode(&resp)
            .map_err(std::io::Error::other)
            .and_then(|f| stream.write_all(&f));
        if written.is_err() {
            break;
        }
    }
    let cleanup = server.lock().release_client(client);
    server.notify();
    if !cleanup.freed.is_empty() {
        // OS-8: its owned objects went here; their copies elsewhere go too.
        if let Some(t) = server.transfer.get() {
            let _guard = server.runtime.enter();
            t.freed(&cleanup.freed);
        }
    }
    if cleanup.released > 0 || !cleanup.reclaimed.is_empty() || !cleanup.freed.is_empty() {
        info!(
            client = client.0,
            pid,
            released = cleanup.released,
            reclaimed = cleanup.reclaimed.len(),
            freed = cleanup.freed.len(),
            "object store client gone; released its references and freed what it owned"
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

fn bad_request(message: String) -> StoreResponse {
    StoreResponse::Error {
        kind: StoreErrorKind::BadRequest,
        message,
    }
}

fn done(r: Result<(), StoreError>) -> StoreResponse {
    r.map_or_else(error, |_| StoreResponse::Ok)
}

/// Checks again every this often for copies on other nodes while waiting.
const REMOTE_POLL: Duration = Duration::from_millis(50);

/// Creates, waiting (bounded) for room when the store is full.
fn create_waiting(
    server: &StoreServer,
    client: ClientId,
    id: ObjectId,
    size: usize,
    pinned: bool,
    owned: bool,
    timeout_ms: u64,
) -> StoreResponse {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let seen = server.generation();
        let mut store = server.lock();
        let result = store.create(id, size, client, pinned);
        if result.is_ok() && owned {
            store.own(id, client);
        }
        drop(store);
        match result {
            Ok(b) => {
                return StoreResponse::Created {
                    offset: b.offset as u64,
                }
            }
            Err(StoreError::StoreFull { .. }) if Instant::now() < deadline => {
                server.wait_change(seen, deadline.saturating_duration_since(Instant::now()));
            }
            Err(e) => return error(e),
        }
    }
}

/// A local get; on a miss, pulls from a peer holding a copy, and otherwise
/// waits (bounded) for the object to appear here or anywhere.
fn get_or_pull(
    server: &Arc<StoreServer>,
    client: ClientId,
    id: ObjectId,
    timeout_ms: u64,
) -> StoreResponse {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let seen = server.generation();
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
                    match server.runtime.block_on(t.pull(server, id, deadline)) {
                        Ok(()) => continue,
                        Err(PullError::NoLocation(_)) => {}
                        Err(e @ PullError::Failed { .. }) => {
                            return StoreResponse::Error {
                                kind: StoreErrorKind::TransferFailed,
                                message: e.to_string(),
                            }
                        }
                        Err(e @ PullError::Lost { .. }) => {
                            return StoreResponse::Error {
                                kind: StoreErrorKind::Lost,
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
        server.wait_change(seen, left.min(REMOTE_POLL));
    }
}

/// Seals an object `client` created and tells the head's directory of it.
fn seal(server: &Arc<StoreServer>, client: ClientId, id: ObjectId) -> StoreResponse {
    let sealed = server.lock().seal(id, client);
    if let (Ok(()), Some(t)) = (&sealed, server.transfer.get()) {
        let size = server.lock().info(id).map_or(0, |i| i.size as u64);
        let _guard = server.runtime.enter();
        t.report(id, size);
    }
    done(sealed)
}

/// Fills and seals a small object just created (`room`, the create's
/// answer) as one operation: a put that cannot finish leaves nothing.
fn put_small(
    server: &Arc<StoreServer>,
    client: ClientId,
    id: ObjectId,
    data: &[u8],
    room: StoreResponse,
) -> StoreResponse {
    let StoreResponse::Created { offset } = room else {
        return room;
    };
    let resp = match server.seg.write(offset as usize, data) {
        Ok(()) => seal(server, client, id),
        Err(e) => bad_request(format!("cannot write object {id}: {e}")),
    };
    if !matches!(resp, StoreResponse::Ok) {
        let _ = server.lock().abort(id, client);
    }
    resp
}

fn handle(server: &Arc<StoreServer>, client: ClientId, req: StoreRequest) -> StoreResponse {
    let resp = match req {
        StoreRequest::Hello { .. } => StoreResponse::Welcome {
            client_id: client.0,
            segment_len: server.seg.len() as u64,
        },
        StoreRequest::Create {
            id,
            size,
            pinned,
            owned,
            timeout_ms,
        } => {
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            create_waiting(server, client, id, size, pinned, owned, timeout_ms)
        }
        StoreRequest::Get { id, timeout_ms } => get_or_pull(server, client, id, timeout_ms),
        StoreRequest::Seal { id } => seal(server, client, id),
        StoreRequest::PutSmall { data, .. } if data.len() > SMALL_PUT_MAX => bad_request(format!(
            "a put request carries at most {SMALL_PUT_MAX} bytes, not {}",
            data.len()
        )),
        StoreRequest::PutSmall {
            id,
            pinned,
            owned,
            timeout_ms,
            data,
        } => {
            let room = create_waiting(server, client, id, data.len(), pinned, owned, timeout_ms);
            put_small(server, client, id, &data, room)
        }
        StoreRequest::Abort { id } => done(server.lock().abort(id, client)),
        StoreRequest::Release { id } => done(server.lock().release(id, client)),
        StoreRequest::Unpin { id } => done(server.lock().unpin(id)),
        StoreRequest::Info { id } => {
            StoreResponse::Info(server.lock().info(id).map(|i| WireObjectInfo {
                size: i.size as u64,
                sealed: i.sealed,
                spilled: i.spilled,
                pinned: i.pinned,
                refs: i.refs,
            }))
        }
        StoreRequest::Stats => {
            let s = server.stats();
            return StoreResponse::Stats(WireStoreStats {
                capacity: s.capacity as u64,
                free: s.free as u64,
                objects: s.objects as u64,
                spilled: s.spilled as u64,
                spills: s.spills,
                restores: s.restores,
                evictions: s.evictions,
            });
        }
    };
    // Seal, release, unpin and abort can unblock waiters; reads cannot.
    if !matches!(
        resp,
        StoreResponse::Info(_) | StoreResponse::Object { .. } | StoreResponse::Welcome { .. }
    ) {
        server.notify();
    }
    resp
}

/// Makes `id` local (pulling it from a peer if needed, waiting up to
/// `timeout`) and holds it for reading in this process.
pub fn fetch(
    server: &Arc<StoreServer>,
    id: ObjectId,
    timeout: Duration,
) -> Result<SendHold, String> {
    match get_or_pull(server, RAYLET_CLIENT, id, timeout.as_millis() as u64) {
        StoreResponse::Object { offset, len } => Ok(SendHold {
            server: server.clone(),
            id,
            block: Block {
                offset: offset as usize,
                len: len as usize,
            },
        }),
        StoreResponse::Error { message, .. } => Err(message),
        other => Err(format!("unexpected store answer {other:?}")),
    }
}

/// Stores `bytes` under `id` from inside the raylet and reports the location.
pub fn put_local(server: &Arc<StoreServer>, id: ObjectId, bytes: &[u8]) -> Result<(), String> {
    if server.contains(id) {
        return Ok(());
    }
    let at = match server.create_for_pull(id, bytes.len() as u64) {
        Ok(at) => at,
        // Someone else is putting it (or just did): theirs is as good.
        Err(_) if server.lock().info(id).is_some() => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    if let Err(e) = server.seg.write(at, bytes) {
        server.abort_pull(id);
        return Err(e.to_string());
    }
    server.seal_pull(id).map_err(|e| e.to_string())?;
    if let Some(t) = server.transfer.get() {
        let _guard = server.runtime.enter();
        t.report(id, bytes.len() as u64);
    }
    Ok(())
}
