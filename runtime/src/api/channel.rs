//! Same-node shared-memory channels: a fixed ring of message slots in a
//! file mapped by two processes, for a stream of messages from one writer
//! to one reader with no store round trip and no copy on the reading side
//! (Ray's compiled graphs use the same idea with mutable plasma objects).
//!
//! The reader makes the channel ([`channel`]) and hands its
//! [`ChannelSpec`] to the writer (e.g. as an actor-call argument), which
//! [`ChannelSpec::connect`]s. Both must be on the same node; connecting
//! from another node fails with the two node ids. The writer fills the next
//! free slot in place ([`Sender::send_with`]); the reader reads it in place
//! ([`Receiver::recv_with`]) and frees it. A full channel makes the writer
//! wait, an empty one the reader: a short spin, then a futex on the shared
//! counter, up to the caller's timeout (a peer that died shows as a timeout).
//!
//! ```no_run
//! # fn main() -> prism::Result<()> {
//! # let _c = prism::init()?;
//! use std::time::Duration;
//! let (spec, mut rx) = prism::channel::channel(4, 1 << 20)?;
//! let mut tx = spec.connect()?; // normally in another process
//! tx.send(b"hello", Duration::from_secs(1))?;
//! let got = rx.recv_with(Duration::from_secs(1), |m| m.to_vec())?;
//! assert_eq!(got, b"hello");
//! # Ok(())
//! # }
//! ```

use super::{Error, Result};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where a channel lives: enough for the writer to map it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct ChannelSpec {
    /// The node whose memory holds it.
    pub node: String,
    path: String,
    slots: u32,
    slot_bytes: u64,
}

/// Header: the written count, the read count, each on its own cache line.
const HEAD: usize = 0;
const TAIL: usize = 64;
const SLOTS_AT: usize = 128;
/// Each slot starts with its message's length.
const LEN_BYTES: usize = 8;

fn slot_stride(slot_bytes: usize) -> usize {
    (LEN_BYTES + slot_bytes).div_ceil(64) * 64
}

/// A mapped channel file (one per end).
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; which bytes each end may touch
// is decided by the head/tail protocol (a slot belongs to the writer until
// the head passes it, then to the reader until the tail passes it).
unsafe impl Send for Mapping {}

impl Mapping {
    fn open(path: &str, len: Option<usize>) -> std::io::Result<Mapping> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(len.is_some())
            .open(path)?;
        let len = match len {
            Some(n) => {
                // Reserve the pages now: a full /dev/shm (small in some
                // containers) is then an error here, not a SIGBUS later.
                // SAFETY: posix_fallocate on a descriptor we hold open.
                let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, n as libc::off_t) };
                if rc != 0 {
                    let _ = std::fs::remove_file(path);
                    return Err(std::io::Error::from_raw_os_error(rc));
                }
                n
            }
            None => file.metadata()?.len() as usize,
        };
        // SAFETY: maps `len` bytes of a file we hold open, shared, read-write;
        // the result is checked before use and unmapped in Drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping { ptr: p.cast(), len })
    }

    fn counter(&self, at: usize) -> &AtomicU32 {
        // SAFETY: `at` is HEAD or TAIL, 64-byte aligned offsets inside the
        // page-aligned mapping, which outlives the borrow; the counters are
        // only ever accessed atomically, by both processes.
        unsafe { &*(self.ptr.add(at) as *const AtomicU32) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the range mapped in `open`; nothing borrows
        // it any more (borrows are tied to `&self`).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Waits until `c` differs from `seen`, spinning briefly, then sleeping on
/// the futex. Returns the new value.
fn wait_change(
    c: &AtomicU32,
    seen: u32,
    deadline: Instant,
    timeout: Duration,
    what: &str,
) -> Result<u32> {
    for _ in 0..200 {
        let v = c.load(Ordering::Acquire);
        if v != seen {
            return Ok(v);
        }
        std::hint::spin_loop();
    }
    loop {
        let v = c.load(Ordering::Acquire);
        if v != seen {
            return Ok(v);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                what: what.to_string(),
                ms: timeout.as_millis() as u64,
            });
        }
        let ts = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // SAFETY: FUTEX_WAIT (shared, not PRIVATE: two processes) on a live
        // aligned u32 in the mapping, with a valid timeout; it returns at
        // once if the value is no longer `seen`.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                c.as_ptr(),
                libc::FUTEX_WAIT,
                seen,
                &ts as *const libc::timespec,
                std::ptr::null::<u32>(),
                0,
            )
        };
    }
}

fn wake(c: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a live aligned u32 in the shared mapping.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            c.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0,
        )
    };
}

/// Makes a channel of `slots` messages of up to `slot_bytes` each on this
/// node; returns the spec to give the writer, and the reading end.
pub fn channel(slots: u32, slot_bytes: usize) -> Result<(ChannelSpec, Receiver)> {
    if slots == 0 || slot_bytes == 0 {
        return Err(Error::Channel(
            "a channel needs at least one slot of at least one byte".into(),
        ));
    }
    let node = super::node_id()?.to_string();
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = dir
        .join(format!(
            "prism-channel-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ))
        .to_string_lossy()
        .into_owned();
    let len = SLOTS_AT + slots as usize * slot_stride(slot_bytes);
    let map = Mapping::open(&path, Some(len))
        .map_err(|e| Error::Channel(format!("cannot make channel file {path}: {e}")))?;
    let spec = ChannelSpec {
        node,
        path: path.clone(),
        slots,
        slot_bytes: slot_bytes as u64,
    };
    Ok((
        spec,
        Receiver {
            map,
            path,
            slots,
            slot_bytes,
            tail: 0,
        },
    ))
}

impl ChannelSpec {
    /// The largest message.
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes as usize
    }

    /// Opens the writing end (once; the file's name is removed then, so
    /// the two mappings are all that keep it).
    pub fn connect(&self) -> Result<Sender> {
        let here = super::node_id()?.to_string();
        if here != self.node {
            return Err(Error::Channel(format!(
                "channel {} lives in node {}'s memory; node {here} cannot map it \
                 (channels are same-node only)",
                self.path, self.node
            )));
        }
        let map = Mapping::open(&self.path, None)
            .map_err(|e| Error::Channel(format!("cannot open channel {}: {e}", self.path)))?;
        let _ = std::fs::remove_file(&self.path);
        let slot_bytes = self.slot_bytes as usize;
        if map.len < SLOTS_AT + self.slots as usize * slot_stride(slot_bytes) {
            return Err(Error::Channel(format!(
                "channel {} is shorter than its spec",
                self.path
            )));
        }
        let head = map.counter(HEAD).load(Ordering::Acquire);
        Ok(Sender {
            map,
            slots: self.slots,
            slot_bytes,
            head,
        })
    }
}

/// The writing end.
pub struct Sender {
    map: Mapping,
    slots: u32,
    slot_bytes: usize,
    head: u32,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("sent", &self.head).finish()
    }
}

impl Sender {
    /// The largest message.
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// Sends a message of `len` bytes written in place by `fill`, waiting
    /// up to `timeout` for a free slot.
    pub fn send_with(
        &mut self,
        len: usize,
        timeout: Duration,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        if len > self.slot_bytes {
            return Err(Error::Channel(format!(
                "a {len}-byte message does not fit the channel's {}-byte slots",
                self.slot_bytes
            )));
        }
        let deadline = Instant::now() + timeout;
        let tail = self.map.counter(TAIL);
        let mut t = tail.load(Ordering::Acquire);
        while self.head.wrapping_sub(t) >= self.slots {
            t = wait_change(
                tail,
                t,
                deadline,
                timeout,
                "a free channel slot (the reader stalled)",
            )?;
        }
        let at = SLOTS_AT + (self.head % self.slots) as usize * slot_stride(self.slot_bytes);
        // SAFETY: slot `head % slots` is the writer's alone (the reader has
        // passed it: head - tail < slots) and lies inside the mapping (the
        // length was checked against the spec on connect).
        unsafe {
            (self.map.ptr.add(at) as *mut u64).write(len as u64);
            fill(std::slice::from_raw_parts_mut(
                self.map.ptr.add(at + LEN_BYTES),
                len,
            ));
        }
        self.head = self.head.wrapping_add(1);
        self.map.counter(HEAD).store(self.head, Ordering::Release);
        wake(self.map.counter(HEAD));
        Ok(())
    }

    /// Sends a copy of `data`.
    pub fn send(&mut self, data: &[u8], timeout: Duration) -> Result<()> {
        self.send_with(data.len(), timeout, |out| out.copy_from_slice(data))
    }
}

/// The reading end; its channel file is removed when it is dropped.
pub struct Receiver {
    map: Mapping,
    path: String,
    slots: u32,
    slot_bytes: usize,
    tail: u32,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("path", &self.path)
            .field("read", &self.tail)
            .finish()
    }
}

impl Receiver {
    /// Waits up to `timeout` for the next message and passes it, in place,
    /// to `read`; the slot is freed when `read` returns.
    pub fn recv_with<R>(&mut self, timeout: Duration, read: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let deadline = Instant::now() + timeout;
        let head = self.map.counter(HEAD);
        let mut h = head.load(Ordering::Acquire);
        while h == self.tail {
            h = wait_change(
                head,
                h,
                deadline,
                timeout,
                "a channel message (the writer stalled)",
            )?;
        }
        let at = SLOTS_AT + (self.tail % self.slots) as usize * slot_stride(self.slot_bytes);
        // SAFETY: slot `tail % slots` was published by the writer (head >
        // tail, read with Acquire) and stays the reader's until the tail
        // moves past it below; its length was written by the writer, and
        // is clamped to the slot so a corrupt value cannot read past it.
        let out = unsafe {
            let len = ((self.map.ptr.add(at) as *const u64).read() as usize).min(self.slot_bytes);
            read(std::slice::from_raw_parts(
                self.map.ptr.add(at + LEN_BYTES),
                len,
            ))
        };
        self.tail = self.tail.wrapping_add(1);
        self.map.counter(TAIL).store(self.tail, Ordering::Release);
        wake(self.map.counter(TAIL));
        Ok(out)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
