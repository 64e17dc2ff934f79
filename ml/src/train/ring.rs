//! Ring all-reduce between actors.
//!
//! Each member is an actor ([`super::worker::TrainWorker`]) whose own
//! compute thread runs [`Ring::all_reduce`]. The algorithm is the classic
//! one: the buffer is cut into buckets, each bucket into `n` chunks;
//! reduce-scatter (`n - 1` steps, each member sends one chunk to the next
//! and adds the one it gets), then all-gather (`n - 1` steps forwarding the
//! reduced chunks). Chunks travel in pieces, sent and received in lock step
//! (`ring_links`), over one of two kinds of link per neighbour:
//!
//! - **a shared-memory channel** ([`prism::channel`]) when both members are
//!   on one node: the sender writes a piece into a slot, the receiver adds
//!   it straight out of the slot;
//! - **the object store** otherwise: a piece is written once into the
//!   sender's store as a tensor object (`prism::put_tensor`; small ones ride
//!   inline) and announced by an actor call (`deliver`, which drops it into
//!   the receiver's [`Mailbox`]); a receiver on another machine pulls it
//!   over QUIC.
//!
//! Memory: a stored piece is freed (`prism::free`) once the *next*
//! all-reduce has finished: by then the receiver has consumed it, because
//! the data this member gets in the all-gather has passed through every
//! other member.

use super::ring_links::Links;
use prism::channel::{Receiver, Sender};
use prism::{Element, ObjectRef, Tensor};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One piece sent through the store.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct Parcel {
    /// Which all-reduce (counts up from 0 on every member alike).
    pub seq: u64,
    /// Which bucket.
    pub bucket: u32,
    /// Which step of the ring (0..2(n-1)).
    pub step: u32,
    /// Which piece of the step's chunk.
    pub piece: u32,
    /// The piece.
    pub data: Chunk,
}

/// A piece's bytes: small ones travel inside the actor call (no store
/// round trips), large ones as a tensor object in shared memory.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub enum Chunk {
    /// The elements' bytes.
    Inline(Vec<u8>),
    /// A tensor object holding them.
    Stored(ObjectRef<Tensor>),
}

/// (all-reduce, bucket, step, piece).
pub(super) type Key = (u64, u32, u32, u32);

/// Pieces that arrived through the store, waiting for the compute thread.
#[derive(Debug, Default)]
pub struct Mailbox {
    slots: Mutex<HashMap<Key, Chunk>>,
    cv: Condvar,
}

impl Mailbox {
    /// A piece arrives (called from the actor's `deliver`).
    pub fn put(&self, p: Parcel) {
        let mut g = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        g.insert((p.seq, p.bucket, p.step, p.piece), p.data);
        self.cv.notify_all();
    }

    /// Waits for one piece.
    pub(super) fn take(&self, key: Key, timeout: Duration) -> Result<Chunk, String> {
        let deadline = Instant::now() + timeout;
        let mut g = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = g.remove(&key) {
                return Ok(r);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no chunk (all-reduce {}, bucket {}, step {}, piece {}) from the \
                     previous member after {timeout:?}: it died or stalled",
                    key.0, key.1, key.2, key.3
                ));
            }
            g = self
                .cv
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Sends a parcel to the next member (an actor call that returns at once).
/// (Shared: a ring member keeps it between all-reduces.)
pub type SendFn = Arc<dyn Fn(Parcel) -> Result<(), String> + Send + Sync>;

/// How this member sends to the next one.
pub enum Outbox {
    /// Through the object store and actor calls.
    Store(SendFn),
    /// Through a shared-memory channel (same node).
    Channel(Sender),
}

/// How this member receives from the previous one.
pub enum Inbox {
    /// Pieces announced into the mailbox.
    Store(Arc<Mailbox>),
    /// A shared-memory channel (same node).
    Channel(Receiver),
}

/// One member's view of the ring.
pub struct Ring {
    rank: usize,
    world: usize,
    seq: u64,
    bucket_elems: usize,
    links: Links,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("seq", &self.seq)
            .finish()
    }
}

/// Element types the ring can sum.
pub trait Summable: Element + Copy + std::ops::AddAssign + Send + 'static {
    /// Multiplies by a scalar (for averaging).
    fn scale(&mut self, by: f64);
}

impl Summable for f32 {
    fn scale(&mut self, by: f64) {
        *self = (*self as f64 * by) as f32;
    }
}

impl Summable for f64 {
    fn scale(&mut self, by: f64) {
        *self *= by;
    }
}

/// Chunk `c` of `n` over `len` elements: sizes differ by at most one.
pub(super) fn chunk(len: usize, n: usize, c: usize) -> std::ops::Range<usize> {
    let (q, r) = (len / n, len % n);
    let start = c * q + c.min(r);
    start..start + q + usize::from(c < r)
}

impl Ring {
    /// Member `rank` of `world`, sending through `out`, receiving from
    /// `inbox`; buckets of `bucket_bytes`; a wait past `timeout` means the
    /// neighbour died or stalled.
    pub fn new(
        rank: usize,
        world: usize,
        out: Outbox,
        inbox: Inbox,
        bucket_bytes: usize,
        timeout: Duration,
    ) -> Result<Ring, String> {
        Ok(Ring {
            rank,
            world,
            seq: 0,
            bucket_elems: (bucket_bytes / 4).max(world),
            links: Links::new(out, inbox, timeout)?,
        })
    }

    /// This member's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// How many members.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Sums `buf` across every member in place (every member gets the same
    /// result); with `average`, divides by the member count.
    pub fn all_reduce<T: Summable>(&mut self, buf: &mut [T], average: bool) -> Result<(), String> {
        let n = self.world;
        // One member: the sum and the average are `buf` itself.
        if n > 1 {
            let scale = if average { 1.0 / n as f64 } else { 1.0 };
            let step_elems = self.bucket_elems * 4 / std::mem::size_of::<T>();
            for (b, bucket) in buf.chunks_mut(step_elems.max(n)).enumerate() {
                self.links
                    .all_reduce(bucket, self.rank, n, self.seq, b as u32, scale)?;
            }
        }
        self.links.round_done();
        self.seq += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::chunk;

    #[test]
    fn chunks_cover_the_buffer_exactly_and_differ_by_at_most_one() {
        for len in [0usize, 1, 2, 3, 7, 10, 101] {
            for n in 1..=4 {
                let mut next = 0;
                for c in 0..n {
                    let r = chunk(len, n, c);
                    assert_eq!(r.start, next);
                    assert!(r.len() == len / n || r.len() == len / n + 1);
                    next = r.end;
                }
                assert_eq!(next, len);
            }
        }
    }
}
