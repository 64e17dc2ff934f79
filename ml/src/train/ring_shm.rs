//! The ring over same-node shared-memory channels ([`prism::channel`]):
//! the same reduce-scatter / all-gather schedule as the store path, with
//! every chunk cut into slot-sized pieces. A member sends piece k of its
//! outgoing chunk, then takes piece k of the incoming one and adds (or
//! copies) it straight out of the slot, so sending and receiving overlap
//! piece by piece, nothing touches the store, and the slots stay warm in
//! cache. Lock-step send-then-receive with at least one slot per link
//! cannot deadlock: a member blocked on a full link waits only for its
//! successor, which is never blocked on it.

use super::ring::{chunk, Summable};
use prism::channel::{Receiver, Sender};
use std::ops::Range;
use std::time::Duration;

/// Every piece starts with (all-reduce, bucket, step, piece), checked on
/// arrival: a member that fell out of step fails loudly instead of mixing
/// data. 20 bytes, padded to 24 so f64 data stays 8-byte aligned.
const TAG_BYTES: usize = 24;

/// One member's two links.
pub struct Links {
    tx: Sender,
    rx: Receiver,
    timeout: Duration,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links").field("tx", &self.tx).finish()
    }
}

#[derive(Clone, Copy)]
enum Merge {
    Add,
    /// Add, then multiply by the factor (the last reduce-scatter step: the
    /// average is taken once, on the owned chunk, and travels scaled).
    AddScale(f64),
    Copy,
}

/// Where a piece belongs: all-reduce, bucket, step, piece.
#[derive(Clone, Copy)]
struct At {
    seq: u64,
    bucket: u32,
    step: u32,
}

fn tag(at: At, piece: u32) -> [u8; TAG_BYTES] {
    let mut t = [0u8; TAG_BYTES];
    t[..8].copy_from_slice(&at.seq.to_le_bytes());
    t[8..12].copy_from_slice(&at.bucket.to_le_bytes());
    t[12..16].copy_from_slice(&at.step.to_le_bytes());
    t[16..20].copy_from_slice(&piece.to_le_bytes());
    t
}

impl Links {
    /// Links sending through `tx`, receiving from `rx`; a wait longer than
    /// `timeout` means the neighbour died or stalled.
    pub fn new(tx: Sender, rx: Receiver, timeout: Duration) -> Result<Links, String> {
        if tx.slot_bytes() < TAG_BYTES + 8 {
            return Err(format!(
                "ring channel slots of {} bytes cannot hold a tagged piece ({} bytes at least)",
                tx.slot_bytes(),
                TAG_BYTES + 8
            ));
        }
        Ok(Links { tx, rx, timeout })
    }

    /// Sums bucket `bucket` of all-reduce `seq` over the ring in place
    /// (member `rank` of `n`), times `scale`.
    pub fn all_reduce<T: Summable>(
        &mut self,
        buf: &mut [T],
        rank: usize,
        n: usize,
        seq: u64,
        bucket: u32,
        scale: f64,
    ) -> Result<(), String> {
        let len = buf.len();
        let at = |step: usize| At {
            seq,
            bucket,
            step: step as u32,
        };
        for s in 0..n - 1 {
            let out = chunk(len, n, (rank + n - s) % n);
            let inc = chunk(len, n, (rank + n - s - 1) % n);
            let merge = if s == n - 2 && scale != 1.0 {
                Merge::AddScale(scale)
            } else {
                Merge::Add
            };
            self.exchange(buf, out, inc, at(s), merge)?;
        }
        for s in 0..n - 1 {
            let out = chunk(len, n, (rank + 1 + n - s) % n);
            let inc = chunk(len, n, (rank + n - s) % n);
            self.exchange(buf, out, inc, at(n - 1 + s), Merge::Copy)?;
        }
        Ok(())
    }

    /// One ring step: `buf[out]` goes to the next member while `buf[inc]`
    /// comes from the previous one, piece by piece.
    fn exchange<T: Summable>(
        &mut self,
        buf: &mut [T],
        out: Range<usize>,
        inc: Range<usize>,
        at: At,
        merge: Merge,
    ) -> Result<(), String> {
        let size = std::mem::size_of::<T>();
        let per = ((self.tx.slot_bytes() - TAG_BYTES) / size).max(1);
        let pieces = |r: &Range<usize>| r.len().div_ceil(per);
        for k in 0..pieces(&out).max(pieces(&inc)) {
            let from = out.start + k * per;
            if from < out.end {
                let part: &[u8] = bytemuck::cast_slice(&buf[from..(from + per).min(out.end)]);
                let t = tag(at, k as u32);
                self.tx
                    .send_with(TAG_BYTES + part.len(), self.timeout, |slot| {
                        slot[..TAG_BYTES].copy_from_slice(&t);
                        slot[TAG_BYTES..].copy_from_slice(part);
                    })
                    .map_err(|e| format!("no chunk sent to the next member: {e}"))?;
            }
            let from = inc.start + k * per;
            if from < inc.end {
                let dst = &mut buf[from..(from + per).min(inc.end)];
                let want = tag(at, k as u32);
                let ok = self
                    .rx
                    .recv_with(self.timeout, |msg| {
                        let (t, data) = msg.split_at(TAG_BYTES.min(msg.len()));
                        if t != want || data.len() != std::mem::size_of_val(dst) {
                            return false;
                        }
                        merge_into(dst, data, merge);
                        true
                    })
                    .map_err(|e| format!("no chunk from the previous member: {e}"))?;
                if !ok {
                    return Err(format!(
                        "the previous member is out of step (expected all-reduce {}, \
                         bucket {}, step {}, piece {k} of {} elements)",
                        at.seq,
                        at.bucket,
                        at.step,
                        dst.len()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Adds or copies `data` (the bytes of `dst.len()` elements) into `dst`.
fn merge_into<T: Summable>(dst: &mut [T], data: &[u8], merge: Merge) {
    match (bytemuck::try_cast_slice::<u8, T>(data), merge) {
        (Ok(src), Merge::Add) => dst.iter_mut().zip(src).for_each(|(x, y)| *x += *y),
        (Ok(src), Merge::AddScale(by)) => dst.iter_mut().zip(src).for_each(|(x, y)| {
            *x += *y;
            x.scale(by);
        }),
        (Ok(src), Merge::Copy) => dst.copy_from_slice(src),
        (Err(_), _) => {
            let src = data
                .chunks_exact(std::mem::size_of::<T>())
                .map(bytemuck::pod_read_unaligned::<T>);
            for (x, y) in dst.iter_mut().zip(src) {
                match merge {
                    Merge::Add => *x += y,
                    Merge::AddScale(by) => {
                        *x += y;
                        x.scale(by);
                    }
                    Merge::Copy => *x = y,
                }
            }
        }
    }
}
