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
//! counter, up to the caller's timeout. A peer that dropped its end, or
//! whose process is gone, ends the wait at once with an error saying so.
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
    /// The channel file (a `prism-channel-*` file in /dev/shm or the temp
    /// directory; `connect` opens nothing else).
    pub path: String,
    slots: u32,
    slot_bytes: u64,
}

/// Header: the written count, the read count, each on its own cache line,
/// then a closed flag and the two ends' process ids.
const HEAD: usize = 0;
const TAIL: usize = 64;
const CLOSED: usize = 128;
const READER_PID: usize = 132;
const WRITER_PID: usize = 136;
const SLOTS_AT: usize = 192;
/// Channel files are named so (and only such files are ever opened).
const PREFIX: &str = "prism-channel-";
/// A sleeping end re-checks its peer this often.
const CHECK_EVERY: Duration = Duration::from_millis(50);
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
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(len.is_some())
            .mode(0o600)
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
        // SAFETY: `at` is one of the header's offsets (multiples of 4 below
        // SLOTS_AT) inside the page-aligned mapping, which outlives the
        // borrow; header words are only ever accessed atomically, by both
        // processes.
        unsafe { &*(self.ptr.add(at) as *const AtomicU32) }
    }

    /// Marks the channel closed and wakes whoever sleeps on it.
    fn close(&self) {
        self.counter(CLOSED).store(1, Ordering::Release);
        wake(self.counter(HEAD));
        wake(self.counter(TAIL));
    }

    /// Why the end whose pid is at `pid_at` can no longer answer, if so.
    fn peer_gone(&self, pid_at: usize, peer: &str) -> Option<String> {
        if self.counter(CLOSED).load(Ordering::Acquire) != 0 {
            return Some(format!("the {peer} closed the channel"));
        }
        let pid = self.counter(pid_at).load(Ordering::Acquire);
        // SAFETY: kill with signal 0 only checks that the process exists.
        if pid != 0 && unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
            let gone = std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
            if gone {
                return Some(format!("the {peer} (pid {pid}) exited"));
            }
        }
        None
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the range mapped in `open`; nothing borrows
        // it any more (borrows are tied to `&self`).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// What a wait waits on: the counter, and the peer that moves it.
struct Wait<'a> {
    map: &'a Mapping,
    counter: usize,
    peer_pid: usize,
    peer: &'a str,
    what: &'a str,
}

/// Waits until the counter differs from `seen`, spinning briefly, then
/// sleeping on the futex in slices, checking the peer between them.
/// Returns the new value.
fn wait_change(w: &Wait<'_>, seen: u32, deadline: Instant, timeout: Duration) -> Result<u32> {
    let c = w.map.counter(w.counter);
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
        if let Some(why) = w.map.peer_gone(w.peer_pid, w.peer) {
            return Err(Error::Channel(format!(
                "{why} while waiting for {}",
                w.what
            )));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                what: format!("{} (the {} stalled)", w.what, w.peer),
                ms: timeout.as_millis() as u64,
            });
        }
        let left = left.min(CHECK_EVERY);
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

/// Where channel files live: /dev/shm, else the temp directory.
fn channel_dir() -> std::path::PathBuf {
    if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    }
}

/// Makes a channel of `slots` (a power of two) messages of up to `slot_bytes` each on this
/// node; returns the spec to give the writer, and the reading end.
pub fn channel(slots: u32, slot_bytes: usize) -> Result<(ChannelSpec, Receiver)> {
    if !slots.is_power_of_two() || slot_bytes == 0 {
        return Err(Error::Channel(format!(
            "a channel needs a power-of-two number of slots (got {slots}) \
             of at least one byte (got {slot_bytes})"
        )));
    }
    let node = super::node_id()?.to_string();
    let path = channel_dir()
        .join(format!(
            "{PREFIX}{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ))
        .to_string_lossy()
        .into_owned();
    let len = SLOTS_AT + slots as usize * slot_stride(slot_bytes);
    let map = Mapping::open(&path, Some(len))
        .map_err(|e| Error::Channel(format!("cannot make channel file {path}: {e}")))?;
    map.counter(READER_PID)
        .store(std::process::id(), Ordering::Release);
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
        // The spec came over the wire: open only a channel file.
        let path = std::path::Path::new(&self.path);
        let named_so = path.parent() == Some(channel_dir().as_path())
            && path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(PREFIX));
        if !named_so || !self.slots.is_power_of_two() {
            return Err(Error::Channel(format!(
                "{} is not a channel file of this node ({} slots)",
                self.path, self.slots
            )));
        }
        let map = Mapping::open(&self.path, None)
            .map_err(|e| Error::Channel(format!("cannot open channel {}: {e}", self.path)))?;
        let slot_bytes = self.slot_bytes as usize;
        if map.len < SLOTS_AT + self.slots as usize * slot_stride(slot_bytes) {
            return Err(Error::Channel(format!(
                "channel {} is shorter than its spec",
                self.path
            )));
        }
        let me = std::process::id();
        if let Err(other) =
            map.counter(WRITER_PID)
                .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
        {
            return Err(Error::Channel(format!(
                "channel {} already has a writer (pid {other})",
                self.path
            )));
        }
        let _ = std::fs::remove_file(&self.path);
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
        let wait = Wait {
            map: &self.map,
            counter: TAIL,
            peer_pid: READER_PID,
            peer: "reader",
            what: "a free channel slot",
        };
        let mut t = self.map.counter(TAIL).load(Ordering::Acquire);
        while self.head.wrapping_sub(t) >= self.slots {
            t = wait_change(&wait, t, deadline, timeout)?;
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
    /// The largest message.
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// Waits up to `timeout` for the next message and passes it, in place,
    /// to `read`; the slot is freed when `read` returns.
    pub fn recv_with<R>(&mut self, timeout: Duration, read: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let deadline = Instant::now() + timeout;
        let wait = Wait {
            map: &self.map,
            counter: HEAD,
            peer_pid: WRITER_PID,
            peer: "writer",
            what: "a channel message",
        };
        let mut h = self.map.counter(HEAD).load(Ordering::Acquire);
        while h == self.tail {
            h = wait_change(&wait, h, deadline, timeout)?;
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

impl Drop for Sender {
    fn drop(&mut self) {
        self.map.close();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.map.close();
        let _ = std::fs::remove_file(&self.path);
    }
}
