//! Ring all-reduce between actors, through the object store.
//!
//! Each member is an actor ([`super::worker::TrainWorker`]) whose async
//! `deliver` method drops incoming chunks into a [`Mailbox`]; the member's
//! own compute thread runs [`Ring::all_reduce`]. A chunk travels as a tensor
//! object: the sender writes it once into its machine's shared memory
//! (`prism::put_tensor`) and sends only the ref in an actor call; a receiver
//! on the same machine reads it in place (zero copy), one on another machine
//! pulls it over QUIC first.
//!
//! The algorithm is the classic one: the buffer is cut into buckets, each
//! bucket into `n` chunks; reduce-scatter (`n - 1` steps, each member sends
//! one chunk to the next and adds the one it gets), then all-gather (`n - 1`
//! steps forwarding the reduced chunks). Sends never wait, so while a member
//! adds bucket `b` the next bucket's first chunks are already on their way.
//!
//! Memory: a sent chunk is freed (`prism::free`) once the *next* all-reduce
//! has finished: by then the receiver has consumed it, because the data this
//! member gets in the all-gather has passed through every other member.

use prism::{Element, ObjectRef, Tensor};
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// One chunk in flight.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct Parcel {
    /// Which all-reduce (counts up from 0 on every member alike).
    pub seq: u64,
    /// Which bucket.
    pub bucket: u32,
    /// Which step of the ring (0..2(n-1)).
    pub step: u32,
    /// The chunk.
    pub data: Chunk,
}

/// A chunk's bytes: small ones travel inside the actor call (no store
/// round trips), large ones as a tensor object in shared memory.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub enum Chunk {
    /// The elements' bytes.
    Inline(Vec<u8>),
    /// A tensor object holding them.
    Stored(ObjectRef<Tensor>),
}

/// Chunks up to this size travel inline.
const INLINE_CHUNK: usize = 64 << 10;

type Key = (u64, u32, u32);

/// Chunks that arrived, waiting for the compute thread.
#[derive(Debug, Default)]
pub struct Mailbox {
    slots: Mutex<HashMap<Key, Chunk>>,
    cv: Condvar,
}

impl Mailbox {
    /// A chunk arrives (called from the actor's `deliver`).
    pub fn put(&self, p: Parcel) {
        let mut g = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        g.insert((p.seq, p.bucket, p.step), p.data);
        self.cv.notify_all();
    }

    /// Waits for one chunk.
    fn take(&self, key: Key, timeout: Duration) -> Result<Chunk, String> {
        let deadline = Instant::now() + timeout;
        let mut g = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = g.remove(&key) {
                return Ok(r);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no chunk (all-reduce {}, bucket {}, step {}) from the previous \
                     member after {timeout:?}: it died or stalled",
                    key.0, key.1, key.2
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
pub type SendFn = Box<dyn Fn(Parcel) -> Result<(), String> + Send>;

/// One member's view of the ring.
pub struct Ring {
    rank: usize,
    world: usize,
    send: SendFn,
    mailbox: std::sync::Arc<Mailbox>,
    seq: u64,
    bucket_elems: usize,
    timeout: Duration,
    /// Chunks sent by the previous all-reduce, freed after this one.
    in_flight: Vec<ObjectRef<Tensor>>,
    sent: Vec<ObjectRef<Tensor>>,
    /// Same-node links, used instead of the store when set.
    channels: Option<super::ring_shm::Links>,
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
    /// Member `rank` of `world`, sending through `send`, receiving from
    /// `mailbox`; buckets of `bucket_bytes`.
    pub fn new(
        rank: usize,
        world: usize,
        send: SendFn,
        mailbox: std::sync::Arc<Mailbox>,
        bucket_bytes: usize,
        timeout: Duration,
    ) -> Ring {
        Ring {
            rank,
            world,
            send,
            mailbox,
            seq: 0,
            bucket_elems: (bucket_bytes / 4).max(world),
            timeout,
            in_flight: Vec::new(),
            sent: Vec::new(),
            channels: None,
        }
    }

    /// Sends chunks to the next member through `tx` and takes the previous
    /// member's from `rx` (shared-memory channels on one node) instead of
    /// through the object store. Every member of a ring must do the same.
    pub fn with_channels(
        mut self,
        tx: prism::channel::Sender,
        rx: prism::channel::Receiver,
    ) -> Result<Ring, String> {
        self.channels = Some(super::ring_shm::Links::new(tx, rx, self.timeout)?);
        Ok(self)
    }

    /// This member's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// How many members.
    pub fn world(&self) -> usize {
        self.world
    }

    fn send_chunk<T: Summable>(
        &mut self,
        bucket: u32,
        step: u32,
        data: &[T],
    ) -> Result<(), String> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let data = if bytes.len() <= INLINE_CHUNK {
            Chunk::Inline(bytes.to_vec())
        } else {
            let r = prism::put_tensor(T::DTYPE, &[data.len() as u64], bytes)
                .map_err(|e| format!("cannot store a chunk: {e}"))?;
            self.sent.push(r.clone());
            Chunk::Stored(r)
        };
        (self.send)(Parcel {
            seq: self.seq,
            bucket,
            step,
            data,
        })
    }

    fn recv<T: Summable>(
        &self,
        bucket: u32,
        step: u32,
        expect: usize,
        mut f: impl FnMut(&[T]),
    ) -> Result<(), String> {
        // Members that disagree on the buffer's length (e.g. a gradient
        // defined on one rank only) must fail, not sum misaligned data.
        let check = |got: usize| {
            if got == expect {
                Ok(())
            } else {
                Err(format!(
                    "the previous member sent {got} elements for a chunk of {expect} \
                     (all-reduce {}, bucket {bucket}, step {step}): do the ranks \
                     all-reduce buffers of the same length?",
                    self.seq
                ))
            }
        };
        let r = match self.mailbox.take((self.seq, bucket, step), self.timeout)? {
            Chunk::Inline(bytes) => {
                let elems: Vec<T> = bytes
                    .chunks_exact(std::mem::size_of::<T>())
                    .map(bytemuck::pod_read_unaligned::<T>)
                    .collect();
                check(elems.len())?;
                f(&elems);
                return Ok(());
            }
            Chunk::Stored(r) => r,
        };
        let view = prism::get_tensor_timeout(&r, self.timeout)
            .map_err(|e| format!("cannot read a chunk: {e}"))?;
        if view.dtype() != T::DTYPE {
            return Err(format!("chunk has dtype {:?}", view.dtype()));
        }
        let got = view.as_slice::<T>().map_err(|e| e.to_string())?;
        check(got.len())?;
        f(got);
        Ok(())
    }

    /// Sums `buf` across every member in place (every member gets the same
    /// result), then multiplies by `scale` (use `1/world` to average).
    pub fn all_reduce<T: Summable>(&mut self, buf: &mut [T], scale: f64) -> Result<(), String> {
        let n = self.world;
        let mut scaled = false;
        if let (Some(links), true) = (self.channels.as_mut(), n > 1) {
            let step_elems = self.bucket_elems * 4 / std::mem::size_of::<T>();
            for (b, bucket) in buf.chunks_mut(step_elems.max(n)).enumerate() {
                links.all_reduce(bucket, self.rank, n, self.seq, b as u32, scale)?;
            }
            scaled = true;
        } else if n > 1 {
            let step_elems = self.bucket_elems * 4 / std::mem::size_of::<T>();
            let buckets: Vec<std::ops::Range<usize>> = (0..buf.len())
                .step_by(step_elems.max(n))
                .map(|s| s..(s + step_elems.max(n)).min(buf.len()))
                .collect();
            // Reduce-scatter's first sends for every bucket go out at once.
            for (b, range) in buckets.iter().enumerate() {
                let c = chunk(range.len(), n, self.rank);
                let part = &buf[range.start + c.start..range.start + c.end];
                self.send_chunk(b as u32, 0, part)?;
            }
            for (b, range) in buckets.iter().enumerate() {
                self.ring_bucket(b as u32, &mut buf[range.clone()])?;
            }
        }
        if scale != 1.0 && !scaled {
            buf.iter_mut().for_each(|x| x.scale(scale));
        }
        // Everything sent by the previous all-reduce has been consumed.
        for r in std::mem::take(&mut self.in_flight) {
            let _ = prism::free(&r);
        }
        self.in_flight = std::mem::take(&mut self.sent);
        self.seq += 1;
        Ok(())
    }

    /// The ring for one bucket whose step-0 chunk is already sent.
    fn ring_bucket<T: Summable>(&mut self, bucket: u32, buf: &mut [T]) -> Result<(), String> {
        let (n, rank) = (self.world, self.rank);
        let len = buf.len();
        // Reduce-scatter: at step s, receive chunk (rank - s - 1) and add.
        for s in 0..n - 1 {
            let c = chunk(len, n, (rank + n - s - 1) % n);
            self.recv::<T>(bucket, s as u32, c.len(), |got| {
                for (x, y) in buf[c.clone()].iter_mut().zip(got) {
                    *x += *y;
                }
            })?;
            if s + 1 < n - 1 {
                self.send_chunk(bucket, (s + 1) as u32, &buf[c])?;
            }
        }
        // This member now holds the full sum of chunk (rank + 1) % n.
        let own = chunk(len, n, (rank + 1) % n);
        self.send_chunk(bucket, (n - 1) as u32, &buf[own])?;
        // All-gather: at step s, receive chunk (rank - s) and forward it.
        for s in 0..n - 1 {
            let c = chunk(len, n, (rank + n - s) % n);
            let step = (n - 1 + s) as u32;
            self.recv::<T>(bucket, step, c.len(), |got| {
                buf[c.clone()].copy_from_slice(got)
            })?;
            if s + 1 < n - 1 {
                self.send_chunk(bucket, step + 1, &buf[c])?;
            }
        }
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
