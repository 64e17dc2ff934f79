//! A ring member's two links and the lock-step piece schedule over them.
//!
//! Each ring step cuts its outgoing and incoming chunks into pieces (a
//! channel slot's worth on a shared-memory link, [`STORE_PIECE`] through
//! the store); the member sends piece k, then takes piece k and adds (or
//! copies) it into its buffer, so sending and receiving overlap piece by
//! piece. Lock step cannot deadlock, whatever mix of links: a member
//! blocked on a full channel waits only for its successor, which receives
//! every piece before it sends a later one, and store sends never block.

use super::ring::{chunk, Chunk, Inbox, Key, Outbox, Parcel, Summable};
use prism::{ObjectRef, Tensor};
use std::ops::Range;
use std::time::Duration;

/// Every channel piece starts with (all-reduce, bucket, step, piece),
/// checked on arrival: a member that fell out of step fails loudly instead
/// of mixing data. 20 bytes, padded to 24 so f64 data stays 8-byte aligned.
const TAG_BYTES: usize = 24;
/// Pieces through the store (one object and one actor call each).
const STORE_PIECE: usize = 4 << 20;
/// Store pieces up to this size ride inside the actor call.
const INLINE_PIECE: usize = 64 << 10;

/// One member's two links.
pub struct Links {
    out: Outbox,
    inbox: Inbox,
    timeout: Duration,
    /// Pieces stored by the previous all-reduce, freed after this one.
    in_flight: Vec<ObjectRef<Tensor>>,
    sent: Vec<ObjectRef<Tensor>>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("out_channel", &matches!(self.out, Outbox::Channel(_)))
            .field("in_channel", &matches!(self.inbox, Inbox::Channel(_)))
            .finish()
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

/// Where a piece belongs.
#[derive(Clone, Copy)]
struct At {
    seq: u64,
    bucket: u32,
    step: u32,
}

impl At {
    fn key(self, piece: u32) -> Key {
        (self.seq, self.bucket, self.step, piece)
    }

    fn tag(self, piece: u32) -> [u8; TAG_BYTES] {
        let mut t = [0u8; TAG_BYTES];
        t[..8].copy_from_slice(&self.seq.to_le_bytes());
        t[8..12].copy_from_slice(&self.bucket.to_le_bytes());
        t[12..16].copy_from_slice(&self.step.to_le_bytes());
        t[16..20].copy_from_slice(&piece.to_le_bytes());
        t
    }
}

fn out_of_step(at: At, piece: usize, want: usize, got: usize) -> String {
    format!(
        "the previous member is out of step: all-reduce {}, bucket {}, step {}, piece {piece} \
         should hold {want} bytes, got {got} (do the ranks all-reduce buffers of the same length?)",
        at.seq, at.bucket, at.step
    )
}

impl Links {
    /// Links sending through `out`, receiving from `inbox`; a wait longer
    /// than `timeout` means the neighbour died or stalled.
    pub fn new(out: Outbox, inbox: Inbox, timeout: Duration) -> Result<Links, String> {
        let small = |b: usize| b < TAG_BYTES + 8;
        let tiny = match (&out, &inbox) {
            (Outbox::Channel(tx), _) if small(tx.slot_bytes()) => Some(tx.slot_bytes()),
            (_, Inbox::Channel(rx)) if small(rx.slot_bytes()) => Some(rx.slot_bytes()),
            _ => None,
        };
        if let Some(b) = tiny {
            return Err(format!(
                "ring channel slots of {b} bytes cannot hold a tagged piece ({} bytes at least)",
                TAG_BYTES + 8
            ));
        }
        Ok(Links {
            out,
            inbox,
            timeout,
            in_flight: Vec::new(),
            sent: Vec::new(),
        })
    }

    /// Elements per piece going out, and coming in.
    fn piece_elems(&self, size: usize) -> (usize, usize) {
        let out = match &self.out {
            Outbox::Channel(tx) => tx.slot_bytes() - TAG_BYTES,
            Outbox::Store(_) => STORE_PIECE,
        };
        let inc = match &self.inbox {
            Inbox::Channel(rx) => rx.slot_bytes() - TAG_BYTES,
            Inbox::Store(_) => STORE_PIECE,
        };
        ((out / size).max(1), (inc / size).max(1))
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

    /// One all-reduce finished: what the one before stored can go.
    pub fn round_done(&mut self) {
        for r in std::mem::take(&mut self.in_flight) {
            let _ = prism::free(&r);
        }
        self.in_flight = std::mem::take(&mut self.sent);
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
        let (per_out, per_in) = self.piece_elems(std::mem::size_of::<T>());
        let pieces_out = out.len().div_ceil(per_out);
        let pieces_in = inc.len().div_ceil(per_in);
        for k in 0..pieces_out.max(pieces_in) {
            let from = out.start + k * per_out;
            if k < pieces_out {
                let part = &buf[from..(from + per_out).min(out.end)];
                self.send_piece(at, k as u32, part)?;
            }
            let from = inc.start + k * per_in;
            if k < pieces_in {
                let dst = &mut buf[from..(from + per_in).min(inc.end)];
                self.recv_piece(at, k as u32, dst, merge)?;
            }
        }
        Ok(())
    }

    fn send_piece<T: Summable>(&mut self, at: At, piece: u32, part: &[T]) -> Result<(), String> {
        let bytes: &[u8] = bytemuck::cast_slice(part);
        match &mut self.out {
            Outbox::Channel(tx) => {
                let t = at.tag(piece);
                tx.send_with(TAG_BYTES + bytes.len(), self.timeout, |slot| {
                    slot[..TAG_BYTES].copy_from_slice(&t);
                    slot[TAG_BYTES..].copy_from_slice(bytes);
                })
                .map_err(|e| format!("no chunk sent to the next member: {e}"))
            }
            Outbox::Store(send) => {
                let data = if bytes.len() <= INLINE_PIECE {
                    Chunk::Inline(bytes.to_vec())
                } else {
                    let r = prism::put_tensor(T::DTYPE, &[part.len() as u64], bytes)
                        .map_err(|e| format!("cannot store a chunk: {e}"))?;
                    self.sent.push(r.clone());
                    Chunk::Stored(r)
                };
                send(Parcel {
                    seq: at.seq,
                    bucket: at.bucket,
                    step: at.step,
                    piece,
                    data,
                })
            }
        }
    }

    fn recv_piece<T: Summable>(
        &mut self,
        at: At,
        piece: u32,
        dst: &mut [T],
        merge: Merge,
    ) -> Result<(), String> {
        let want = std::mem::size_of_val(dst);
        match &mut self.inbox {
            Inbox::Channel(rx) => {
                let tag = at.tag(piece);
                rx.recv_with(self.timeout, |msg| {
                    let (t, data) = msg.split_at(TAG_BYTES.min(msg.len()));
                    if t != tag || data.len() != want {
                        return Err(out_of_step(at, piece as usize, want, data.len()));
                    }
                    merge_into(dst, data, merge);
                    Ok(())
                })
                .map_err(|e| format!("no chunk from the previous member: {e}"))?
            }
            Inbox::Store(mailbox) => match mailbox.take(at.key(piece), self.timeout)? {
                Chunk::Inline(bytes) if bytes.len() == want => {
                    merge_into(dst, &bytes, merge);
                    Ok(())
                }
                Chunk::Inline(bytes) => Err(out_of_step(at, piece as usize, want, bytes.len())),
                Chunk::Stored(r) => {
                    let view = prism::get_tensor_timeout(&r, self.timeout)
                        .map_err(|e| format!("cannot read a chunk: {e}"))?;
                    if view.dtype() != T::DTYPE || view.data().len() != want {
                        return Err(out_of_step(at, piece as usize, want, view.data().len()));
                    }
                    merge_into(dst, view.data(), merge);
                    Ok(())
                }
            },
        }
    }
}

/// Adds or copies `data` (the bytes of `dst.len()` elements) into `dst`.
fn merge_into<T: Summable>(dst: &mut [T], data: &[u8], merge: Merge) {
    // Slots and stored objects keep elements aligned; copy only if not.
    let src: std::borrow::Cow<'_, [T]> = match bytemuck::try_cast_slice::<u8, T>(data) {
        Ok(s) => s.into(),
        Err(_) => data
            .chunks_exact(std::mem::size_of::<T>())
            .map(bytemuck::pod_read_unaligned::<T>)
            .collect::<Vec<T>>()
            .into(),
    };
    match merge {
        Merge::Add => dst.iter_mut().zip(src.iter()).for_each(|(x, y)| *x += *y),
        Merge::AddScale(by) => dst.iter_mut().zip(src.iter()).for_each(|(x, y)| {
            *x += *y;
            x.scale(by);
        }),
        Merge::Copy => dst.copy_from_slice(&src),
    }
}
