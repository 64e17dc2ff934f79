//! The local object-store client: how a driver or worker puts and gets
//! objects on its machine.
//!
//! [`StoreClient::connect`] opens the raylet's Unix socket, receives the
//! segment's file descriptor and maps it. A put reserves space (one request),
//! copies the data into the mapping (the only copy) and seals it (one
//! request); a get is one request returning an offset, and the returned
//! [`ObjectView`] reads the shared pages in place until it is dropped.

use crate::proto::codec::{self, CodecError};
use crate::proto::store::{
    StoreErrorKind, StoreRequest, StoreResponse, WireObjectInfo, WireStoreStats, SMALL_PUT_MAX,
};
/// A tensor's header (dtype, shape, strides) and its zero-copy view, for
/// [`StoreClient::put_tensor`] and [`ObjectView::tensor`].
pub use prism_objectstore::{DType, TensorMeta, TensorView};
use prism_objectstore::{ObjectId, Segment, TensorError};
use sendfd::RecvWithFd;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One answer from the store; the end of the stream is an error here.
fn read_response(sock: &mut UnixStream) -> Result<StoreResponse, ObjectError> {
    match codec::read_frame(sock, MAX_FRAME) {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(ObjectError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the raylet closed the object store connection",
        ))),
        Err(codec::ReadError::Io(e)) => Err(ObjectError::Io(e)),
        Err(codec::ReadError::Codec(e)) => Err(ObjectError::Codec(e)),
    }
}

/// How long a put waits for room in a full store by default.
pub const DEFAULT_PUT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_FRAME: usize = 1 << 20;

/// An object-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The raylet's socket could not be reached.
    #[error("cannot connect to the object store at {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The socket failed mid-request (the raylet died?).
    #[error("object store connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// A frame from the raylet did not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The store is full and nothing could be spilled in time.
    #[error("object store full: {requested} bytes requested, {available} bytes available")]
    StoreFull {
        /// Bytes asked.
        requested: u64,
        /// Largest free region.
        available: u64,
    },
    /// The object did not appear (sealed) within the timeout.
    #[error("object {id} was not available within {waited:?}")]
    GetTimeout {
        /// The object.
        id: ObjectId,
        /// How long we waited.
        waited: Duration,
    },
    /// Any other refusal, with the store's sentence.
    #[error("object store refused: {message}")]
    Refused {
        /// Category.
        kind: StoreErrorKind,
        /// The store's sentence.
        message: String,
    },
    /// The object's last copy died with its node; only its owner can
    /// rebuild it (from the task that made it).
    #[error("{message}")]
    Lost {
        /// Which node held the last copy, and how it died.
        message: String,
    },
    /// The object lives on other nodes and could not be fetched from any.
    #[error("{message}")]
    TransferFailed {
        /// The raylet's account of each source it tried.
        message: String,
    },
    /// The object is not a valid tensor.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// The raylet answered something that does not fit.
    #[error("unexpected object store answer: {0}")]
    Unexpected(String),
}

/// A connection to this machine's object store.
#[derive(Debug)]
pub struct StoreClient {
    sock: Mutex<UnixStream>,
    seg: Segment,
    client_id: u64,
    /// Pinned objects it creates are its own ([`StoreClient::free_pins_on_close`]).
    owns_pins: std::sync::atomic::AtomicBool,
}

impl StoreClient {
    /// Connects to the raylet's store socket and maps its segment.
    pub fn connect(path: &Path) -> Result<StoreClient, ObjectError> {
        let connect = |source| ObjectError::Connect {
            path: path.to_path_buf(),
            source,
        };
        let sock = UnixStream::connect(path).map_err(connect)?;
        let mut byte = [0u8; 1];
        let mut fds: [RawFd; 1] = [-1];
        let (_, nfds) = sock.recv_with_fd(&mut byte, &mut fds).map_err(connect)?;
        if nfds == 0 && byte[0] == 0 {
            // Refused at the door: the reason follows as one frame.
            let mut sock = sock;
            return match read_response(&mut sock)? {
                StoreResponse::Error { kind, message } => {
                    Err(ObjectError::Refused { kind, message })
                }
                other => Err(ObjectError::Unexpected(format!("{other:?}"))),
            };
        }
        if nfds != 1 || fds[0] < 0 {
            return Err(ObjectError::Unexpected(
                "the raylet did not send the segment descriptor".into(),
            ));
        }
        // SAFETY: the kernel just installed this descriptor in our table for
        // us (SCM_RIGHTS); nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fds[0]) };
        let seg = Segment::from_fd(fd)?;
        let mut client = StoreClient {
            sock: Mutex::new(sock),
            seg,
            client_id: 0,
            owns_pins: std::sync::atomic::AtomicBool::new(false),
        };
        match client.request(&StoreRequest::Hello {
            pid: std::process::id(),
        })? {
            StoreResponse::Welcome { client_id, .. } => client.client_id = client_id,
            other => return Err(ObjectError::Unexpected(format!("{other:?}"))),
        }
        Ok(client)
    }

    fn request(&self, req: &StoreRequest) -> Result<StoreResponse, ObjectError> {
        let frame = codec::encode(req)?;
        let mut sock = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        sock.write_all(&frame)?;
        let resp = read_response(&mut sock)?;
        drop(sock);
        match resp {
            StoreResponse::Error {
                kind:
                    StoreErrorKind::Full {
                        requested,
                        available,
                    },
                ..
            } => Err(ObjectError::StoreFull {
                requested,
                available,
            }),
            StoreResponse::Error {
                kind: StoreErrorKind::TransferFailed,
                message,
            } => Err(ObjectError::TransferFailed { message }),
            StoreResponse::Error {
                kind: StoreErrorKind::Lost,
                message,
            } => Err(ObjectError::Lost { message }),
            StoreResponse::Error { kind, message } => Err(ObjectError::Refused { kind, message }),
            ok => Ok(ok),
        }
    }

    fn expect_ok(&self, req: &StoreRequest) -> Result<(), ObjectError> {
        match self.request(req)? {
            StoreResponse::Ok => Ok(()),
            other => Err(ObjectError::Unexpected(format!("{other:?}"))),
        }
    }

    /// From now on, the pinned objects this client creates are its own:
    /// the store frees them (on every node) when this client disconnects,
    /// even if its process is killed. A driver's connection does this.
    pub fn free_pins_on_close(&self) {
        self.owns_pins
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// This connection's id in the store.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The mapped segment (for address checks and diagnostics).
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// Reserves `size` bytes for a new object (waiting up to `timeout` for
    /// room) and returns its offset in the segment; this client is its only
    /// writer until [`StoreClient::seal`].
    pub fn create(
        &self,
        id: ObjectId,
        size: usize,
        pinned: bool,
        timeout: Duration,
    ) -> Result<usize, ObjectError> {
        let create = StoreRequest::Create {
            id,
            size: size as u64,
            pinned,
            owned: self.owns(pinned),
            timeout_ms: timeout.as_millis() as u64,
        };
        match self.request(&create)? {
            StoreResponse::Created { offset } => Ok(offset as usize),
            other => Err(ObjectError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Whether a pinned object this client creates is its own (freed when
    /// it disconnects; see [`StoreClient::free_pins_on_close`]).
    fn owns(&self, pinned: bool) -> bool {
        pinned && self.owns_pins.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops an object this client created but has not sealed.
    pub fn abort(&self, id: ObjectId) -> Result<(), ObjectError> {
        self.expect_ok(&StoreRequest::Abort { id })
    }

    /// Seals an object this client created: readers may get it, and its bytes never change.
    pub fn seal(&self, id: ObjectId) -> Result<(), ObjectError> {
        self.expect_ok(&StoreRequest::Seal { id })
    }

    /// Stores `parts` back to back as one sealed object; waits up to `timeout` for room.
    pub fn put_parts(
        &self,
        id: ObjectId,
        parts: &[&[u8]],
        pinned: bool,
        timeout: Duration,
    ) -> Result<ObjectId, ObjectError> {
        let size: usize = parts.iter().map(|p| p.len()).sum();
        if size <= SMALL_PUT_MAX {
            // One round trip: the bytes travel inside the request.
            let put = StoreRequest::PutSmall {
                id,
                pinned,
                owned: self.owns(pinned),
                timeout_ms: timeout.as_millis() as u64,
                data: parts.concat(),
            };
            self.expect_ok(&put)?;
            return Ok(id);
        }
        let mut at = self.create(id, size, pinned, timeout)?;
        for part in parts {
            if let Err(e) = self.seg.write(at, part) {
                let _ = self.expect_ok(&StoreRequest::Abort { id });
                return Err(e.into());
            }
            at += part.len();
        }
        self.seal(id)?;
        Ok(id)
    }

    /// Puts bytes as a new pinned object.
    pub fn put(&self, data: &[u8]) -> Result<ObjectId, ObjectError> {
        self.put_parts(ObjectId::random(), &[data], true, DEFAULT_PUT_TIMEOUT)
    }

    /// Puts a tensor (header and 64-byte-aligned data) as a new pinned object.
    pub fn put_tensor(&self, meta: &TensorMeta, data: &[u8]) -> Result<ObjectId, ObjectError> {
        let want = meta.data_bytes()?;
        if data.len() != want {
            return Err(TensorError::BadShape(format!(
                "{} data bytes for a shape that needs {want}",
                data.len()
            ))
            .into());
        }
        self.put_parts(
            ObjectId::random(),
            &[&meta.encode_header(), data],
            true,
            DEFAULT_PUT_TIMEOUT,
        )
    }

    /// Puts any rkyv-archivable value; readers use it in archived form.
    pub fn put_value<T>(&self, value: &T) -> Result<ObjectId, ObjectError>
    where
        T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(value)
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        self.put(&bytes)
    }

    /// Gets a sealed object, waiting up to `timeout` for it; the view reads
    /// the shared pages in place and releases the object when dropped.
    pub fn get(&self, id: ObjectId, timeout: Duration) -> Result<ObjectView<'_>, ObjectError> {
        let bytes = self.acquire(id, timeout)?;
        Ok(ObjectView {
            client: self,
            id,
            bytes,
        })
    }

    /// Like [`StoreClient::get`], but the caller holds the reference itself
    /// and must give it back with [`StoreClient::release`]; until then the
    /// bytes stay where they are (OS-3). For views that own their client
    /// (`prism::TensorView`).
    pub fn acquire(&self, id: ObjectId, timeout: Duration) -> Result<&[u8], ObjectError> {
        let get = StoreRequest::Get {
            id,
            timeout_ms: timeout.as_millis() as u64,
        };
        match self.request(&get) {
            Ok(StoreResponse::Object { offset, len }) => {
                match self.seg.bytes(offset as usize, len as usize) {
                    Ok(b) => Ok(b),
                    Err(e) => {
                        let _ = self.release(id);
                        Err(e.into())
                    }
                }
            }
            Ok(other) => Err(ObjectError::Unexpected(format!("{other:?}"))),
            Err(ObjectError::Refused {
                kind: StoreErrorKind::NotFound | StoreErrorKind::NotSealed,
                ..
            }) => Err(ObjectError::GetTimeout {
                id,
                waited: timeout,
            }),
            Err(e) => Err(e),
        }
    }

    /// Waits until `num_returns` of `ids` are sealed here or `timeout` passes;
    /// returns `(ready, not_ready)` in the order given.
    pub fn wait(
        &self,
        ids: &[ObjectId],
        num_returns: usize,
        timeout: Duration,
    ) -> Result<(Vec<ObjectId>, Vec<ObjectId>), ObjectError> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut ready = Vec::new();
            let mut pending = Vec::new();
            for id in ids {
                match self.info(*id)? {
                    Some(i) if i.sealed && ready.len() < num_returns => ready.push(*id),
                    _ => pending.push(*id),
                }
            }
            if ready.len() >= num_returns.min(ids.len()) || Instant::now() >= deadline {
                return Ok((ready, pending));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Gives back a reference taken by [`StoreClient::acquire`].
    pub fn release(&self, id: ObjectId) -> Result<(), ObjectError> {
        self.expect_ok(&StoreRequest::Release { id })
    }

    /// The owner is done with an object: it is freed once no reader holds it.
    pub fn unpin(&self, id: ObjectId) -> Result<(), ObjectError> {
        self.expect_ok(&StoreRequest::Unpin { id })
    }

    /// One object's state, `None` if the store does not hold it.
    pub fn info(&self, id: ObjectId) -> Result<Option<WireObjectInfo>, ObjectError> {
        match self.request(&StoreRequest::Info { id })? {
            StoreResponse::Info(i) => Ok(i),
            other => Err(ObjectError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Store counters.
    pub fn stats(&self) -> Result<WireStoreStats, ObjectError> {
        match self.request(&StoreRequest::Stats)? {
            StoreResponse::Stats(s) => Ok(s),
            other => Err(ObjectError::Unexpected(format!("{other:?}"))),
        }
    }
}

/// A sealed object read in place from the shared segment. Read-only; the
/// reference is released when the view is dropped.
#[derive(Debug)]
pub struct ObjectView<'a> {
    client: &'a StoreClient,
    id: ObjectId,
    bytes: &'a [u8],
}

impl ObjectView<'_> {
    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// The object as an archived rkyv value, validated, without deserializing
    /// (objects are 64-byte aligned, so the archive is read in place).
    pub fn archived<T>(&self) -> Result<&T::Archived, ObjectError>
    where
        T: rkyv::Archive,
        T::Archived: for<'a> rkyv::bytecheck::CheckBytes<
            rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>,
        >,
    {
        rkyv::access::<T::Archived, rkyv::rancor::Error>(self.bytes)
            .map_err(|e| CodecError::Malformed(e.to_string()).into())
    }

    /// The object as a tensor (typed slices without copying).
    pub fn tensor(&self) -> Result<TensorView<'_>, ObjectError> {
        Ok(TensorView::parse(self.bytes)?)
    }
}

impl std::ops::Deref for ObjectView<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes
    }
}

impl Drop for ObjectView<'_> {
    fn drop(&mut self) {
        // A failed release means the raylet is gone, which releases it anyway.
        let _ = self.client.release(self.id);
    }
}
