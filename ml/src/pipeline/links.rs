//! Neighbouring stages on one node pass activations forward and their
//! gradients backward through shared-memory channels (`prism::channel`),
//! written once into a slot by one stage and read in place by the next,
//! instead of as actor-call results that go through the driver.
//!
//! Each stage makes the channels it reads (activations from the previous
//! stage, gradients from the next) and connects to those of its
//! neighbours. The driver still submits every pass, in each stage's
//! schedule order; a pass that needs its neighbour's tensor waits for it
//! in its channel. Both schedules run every stage's forwards, and its
//! backwards, in micro-batch order, so each channel is a FIFO whose
//! messages carry their micro-batch, checked on arrival (PL-1: a stage out
//! of step fails loudly instead of mixing data). A channel holds a whole
//! batch's micro-batches, so no writer waits for a slot. A pipeline whose
//! stages are not all on one node passes tensors as call results.

use super::stage::PipeStage;
use prism::channel::{Receiver, Sender};
use prism::{ActorHandle, ObjectRef};
use std::time::Duration;
use tch::Tensor;

/// How long a pass waits for its neighbour's tensor (a neighbour that
/// died ends the wait at once).
pub(super) const WAIT: Duration = Duration::from_secs(600);

/// A stage's channels.
#[derive(Debug, Default)]
pub(super) struct Links {
    pub fwd_in: Option<Receiver>,
    pub fwd_out: Option<Sender>,
    pub bwd_in: Option<Receiver>,
    pub bwd_out: Option<Sender>,
}

/// Header: micro-batch (u32), rank (u32), then each dimension (i64).
fn header_len(ndim: usize) -> usize {
    8 + 8 * ndim
}

/// Writes the header of micro-batch `mb`'s tensor of `shape` into `out`.
fn encode_header(out: &mut [u8], mb: u32, shape: &[i64]) {
    out[..4].copy_from_slice(&mb.to_le_bytes());
    out[4..8].copy_from_slice(&(shape.len() as u32).to_le_bytes());
    for (i, d) in shape.iter().enumerate() {
        out[8 + 8 * i..16 + 8 * i].copy_from_slice(&d.to_le_bytes());
    }
}

/// Sends micro-batch `mb`'s tensor `t` (f32, on the CPU) through `tx`,
/// copied once, straight into the slot.
pub(super) fn send(tx: &mut Sender, mb: u32, t: &Tensor) -> Result<(), String> {
    let t = t.f_contiguous().map_err(|e| e.to_string())?;
    if t.kind() != tch::Kind::Float || t.device() != tch::Device::Cpu {
        return Err(format!(
            "micro-batch {mb}: a {:?} tensor on {:?} (channels carry f32 on the CPU)",
            t.kind(),
            t.device()
        ));
    }
    let shape = t.size();
    let n = t.numel();
    let head = header_len(shape.len());
    let mut copied = Ok(());
    tx.send_with(head + 4 * n, WAIT, |out| {
        copied = t.f_copy_data_u8(&mut out[head..], n);
        // A copy that failed is marked out of step: the reader fails loudly.
        let mark = if copied.is_ok() { mb } else { u32::MAX };
        encode_header(out, mark, &shape);
    })
    .map_err(|e| format!("sending micro-batch {mb}: {e}"))?;
    copied.map_err(|e| format!("sending micro-batch {mb}: {e}"))
}

/// Receives micro-batch `mb`'s tensor from `rx` (PL-1: the next message
/// must be that micro-batch's).
pub(super) fn recv(rx: &mut Receiver, mb: u32) -> Result<Tensor, String> {
    rx.recv_with(WAIT, |m| decode(m, mb))
        .map_err(|e| format!("waiting for micro-batch {mb}: {e}"))?
}

fn decode(m: &[u8], mb: u32) -> Result<Tensor, String> {
    let u32_at = |at: usize| {
        m.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    let (Some(got), Some(ndim)) = (u32_at(0), u32_at(4)) else {
        return Err(format!("a {}-byte message is no tensor", m.len()));
    };
    if got != mb {
        return Err(format!(
            "the neighbouring stage is out of step: micro-batch {got} arrived where {mb} was due"
        ));
    }
    let head = header_len(ndim as usize);
    let shape: Vec<i64> = (0..ndim as usize)
        .filter_map(|i| m.get(8 + 8 * i..16 + 8 * i))
        .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
        .collect();
    let body = m.get(head..).unwrap_or_default();
    let want: i64 = shape.iter().product();
    if shape.len() != ndim as usize || body.len() != 4 * want.max(0) as usize {
        return Err(format!(
            "micro-batch {mb}: a message of shape {shape:?} holds {} bytes",
            body.len()
        ));
    }
    // One copy, out of the slot (which may be unaligned for f32).
    Tensor::f_from_data_size(body, &shape, tch::Kind::Float).map_err(|e| e.to_string())
}

/// Links the stages of one pipeline (in order) by channels, when they are
/// all on one node; `Ok(false)` (nothing linked) otherwise. `slot_bytes`
/// must hold the largest tensor between two stages.
pub(super) fn connect(
    stages: &[ActorHandle<PipeStage>],
    micro: u32,
    slot_bytes: u64,
) -> prism::Result<bool> {
    let p = stages.len();
    if p < 2 {
        return Ok(false);
    }
    // A whole batch's micro-batches (channels hold a power of two).
    let micro = micro.next_power_of_two();
    let opened: Vec<_> = stages
        .iter()
        .enumerate()
        .map(|(s, h)| h.open_links(s > 0, s + 1 < p, micro, slot_bytes))
        .collect::<prism::Result<_>>()?;
    let specs = prism::get_all(&opened)?;
    let nodes: Vec<Option<&String>> = specs
        .iter()
        .map(|(f, b)| f.as_ref().or(b.as_ref()).map(|c| &c.node))
        .collect();
    let one_node = nodes.iter().all(|n| n.is_some() && *n == nodes[0]);
    if !one_node {
        // Not all on one node (or no channel could be made): results.
        return unlink(stages);
    }
    let linked: Vec<_> = stages
        .iter()
        .enumerate()
        .map(|(s, h)| {
            // Forward into the next stage's activation inbox, backward
            // into the previous stage's gradient inbox.
            let fwd = (s + 1 < p).then(|| specs[s + 1].0.clone()).flatten();
            let bwd = (s > 0).then(|| specs[s - 1].1.clone()).flatten();
            h.connect_links(fwd, bwd)
        })
        .collect::<prism::Result<_>>()?;
    let failed = prism::get_all(&linked)?.into_iter().enumerate();
    if let Some((s, why)) = failed.filter_map(|(s, r)| r.err().map(|w| (s, w))).next() {
        // One node but a channel that does not map (a separate /dev/shm
        // per container, say): every stage passes results instead.
        tracing::warn!(
            "stage {s} cannot reach its neighbour's channel ({why}); tensors go as results"
        );
        return unlink(stages);
    }
    Ok(true)
}

/// Drops every stage's channels: they pass tensors as results.
fn unlink(stages: &[ActorHandle<PipeStage>]) -> prism::Result<bool> {
    let closed: Vec<_> = stages
        .iter()
        .map(|h| h.open_links(false, false, 1, 1))
        .collect::<prism::Result<_>>()?;
    prism::get_all(&closed)?;
    Ok(false)
}

/// A linked batch's calls: every pass, and each micro-batch's loss.
pub(super) type Batch = (Vec<ObjectRef<()>>, Vec<ObjectRef<f64>>);

/// Submits one batch's passes to linked `stages`, each stage's in its
/// schedule order: the first stage gets the micro-batches `xs`, the last
/// the labels `ys`. Returns every pass's call and each micro-batch's loss.
pub(super) fn submit(
    stages: &[ActorHandle<PipeStage>],
    schedule: super::Schedule,
    xs: Vec<super::Act>,
    ys: Vec<Vec<i64>>,
) -> prism::Result<Batch> {
    let p = stages.len() as u32;
    let m = xs.len() as u32;
    let mut xs: Vec<Option<super::Act>> = xs.into_iter().map(Some).collect();
    let mut ys: Vec<Option<Vec<i64>>> = ys.into_iter().map(Some).collect();
    let (mut passes, mut losses) = (Vec::new(), Vec::new());
    for (s, h) in stages.iter().enumerate() {
        let (first, last) = (s == 0, s as u32 + 1 == p);
        for op in super::stage_ops(schedule, p, s as u32, m) {
            match op {
                super::Op::F(i) => {
                    let x = if first { xs[i as usize].take() } else { None };
                    if last {
                        let y = ys[i as usize].take().unwrap_or_default();
                        losses.push(h.forward_last_linked(i, x, y)?);
                    } else {
                        passes.push(h.forward_linked(i, x)?);
                    }
                }
                super::Op::B(i) => passes.push(h.backward_linked(i)?),
            }
        }
    }
    Ok((passes, losses))
}

/// Waits for a linked batch's calls; the first that failed ends the wait
/// at once (its neighbours would otherwise wait for it in their channels).
pub(super) fn wait_all(passes: &[ObjectRef<()>], losses: &[ObjectRef<f64>]) -> prism::Result<()> {
    let poll = Duration::from_millis(20);
    let (mut passes, mut losses) = (passes.to_vec(), losses.to_vec());
    while !passes.is_empty() {
        // Each call is read once, as it ends.
        let (done, left) = prism::wait(&passes, passes.len(), Some(poll))?;
        for r in &done {
            r.get()?;
        }
        passes = left;
        let (ended, left) = prism::wait(&losses, losses.len(), Some(Duration::ZERO))?;
        for r in &ended {
            r.get()?;
        }
        losses = left;
    }
    losses.iter().try_for_each(|r| r.get().map(drop))
}

/// The slot for a user model's tensors between `stages` (one replica),
/// found by passing a micro-batch of zeros shaped `input` through them in
/// turn: room for the largest output of any but the last stage (what the
/// forward channels carry; the gradients going back have the same
/// shapes). `None` (tensors go as results) when a stage cannot say.
pub(super) fn probe_slot(stages: &[ActorHandle<PipeStage>], input: Vec<i64>) -> Option<u64> {
    let (mut shape, mut widest, mut ndim) = (input, 0i64, 0usize);
    for (s, h) in stages
        .iter()
        .enumerate()
        .take(stages.len().saturating_sub(1))
    {
        let out = h
            .probe(shape.clone())
            .and_then(|r| r.get_timeout(WAIT))
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        shape = match out {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(
                    "pipeline: stage {s} cannot size its channel ({e}); tensors go as results"
                );
                return None;
            }
        };
        widest = widest.max(shape.iter().product());
        ndim = ndim.max(shape.len());
    }
    Some(header_len(ndim) as u64 + 4 * widest.max(1) as u64)
}

/// The largest tensor between two stages of micro-batches of `rows`, with
/// its header: the widest layer's output (gradients have the same shape).
pub(super) fn slot_bytes(layers: &[i64], rows: usize) -> u64 {
    let widest = layers.iter().copied().max().unwrap_or(1).max(1) as u64;
    header_len(2) as u64 + 4 * widest * rows as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pl_1_a_message_is_its_micro_batch_and_shape_or_an_error() {
        // Encoded as `send` encodes.
        let enc = |mb: u32, shape: &[i64], n: usize| {
            let mut m = vec![0u8; header_len(shape.len()) + 4 * n];
            encode_header(&mut m, mb, shape);
            m
        };
        let t = decode(&enc(3, &[2, 3], 6), 3).unwrap();
        assert_eq!(t.size(), vec![2, 3]);
        let e = decode(&enc(3, &[2, 3], 6), 4).unwrap_err();
        assert!(e.contains("micro-batch 3 arrived where 4 was due"), "{e}");
        let e = decode(&enc(1, &[2, 3], 5), 1).unwrap_err();
        assert!(e.contains("holds 20 bytes"), "{e}");
        assert!(decode(&[1, 2], 0).is_err());
    }
}
