//! Streaming batches with prefetch.
//!
//! A background thread reads the blocks in order (`Block::read`: pulled to
//! this node if needed, then pinned in place) and hands them over through a
//! bounded channel, so it runs at most `prefetch` blocks ahead of the
//! consumer. The consumer copies each batch's rows from the pinned blocks
//! straight into one new tch tensor (a batch may span blocks; one copy); a
//! block is released as soon as its last row is taken.

use super::block::{Block, BlockView};
use crate::tensor::kind_of;
use crate::{MlError, Result};
use std::sync::mpsc;

/// One batch: `features` is `[b, ...]`, `labels` is `[b]`.
#[derive(Debug)]
pub struct Batch {
    /// Features, one row per example.
    pub features: tch::Tensor,
    /// Labels, if the dataset has them.
    pub labels: Option<tch::Tensor>,
}

/// The iterator of [`super::Dataset::iter_batches`].
#[derive(Debug)]
pub struct BatchIter {
    blocks: Vec<Block>,
    batch_size: usize,
    prefetch: usize,
    drop_last: bool,
    rx: Option<mpsc::Receiver<Result<BlockView>>>,
    current: Option<(BlockView, u64)>,
    done: bool,
}

impl BatchIter {
    pub(super) fn new(blocks: Vec<Block>, batch_size: usize) -> BatchIter {
        BatchIter {
            blocks,
            batch_size: batch_size.max(1),
            prefetch: 1,
            drop_last: false,
            rx: None,
            current: None,
            done: false,
        }
    }

    /// How many blocks the background thread may read ahead (default 1).
    pub fn prefetch(mut self, blocks: usize) -> BatchIter {
        self.prefetch = blocks;
        self
    }

    /// Whether to drop a last batch shorter than `batch_size` (default: keep it).
    pub fn drop_last(mut self, drop: bool) -> BatchIter {
        self.drop_last = drop;
        self
    }

    fn start(&mut self) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(self.prefetch);
        let blocks = std::mem::take(&mut self.blocks);
        std::thread::Builder::new()
            .name("prism-ml-prefetch".into())
            .spawn(move || {
                for b in blocks {
                    // The consumer hung up: stop reading.
                    if tx.send(b.read()).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| MlError::Dataset(format!("cannot start the prefetch thread: {e}")))?;
        self.rx = Some(rx);
        Ok(())
    }

    /// The next non-empty block with rows left, or `None` at the end.
    fn block(&mut self) -> Option<Result<()>> {
        loop {
            if let Some((v, used)) = &self.current {
                if *used < v.rows() {
                    return Some(Ok(()));
                }
            }
            self.current = None;
            match self.rx.as_ref()?.recv() {
                Ok(Ok(v)) => self.current = Some((v, 0)),
                Ok(Err(e)) => return Some(Err(e)),
                Err(_) => return None,
            }
        }
    }

    fn next_batch(&mut self) -> Option<Result<Batch>> {
        let want = self.batch_size as u64;
        // The batch's tensors, made at the first block (which fixes the
        // layout) for `want` rows, filled straight from the pinned blocks.
        let mut out: Option<Filling> = None;
        let mut got = 0u64;
        while got < want {
            match self.block() {
                None => break,
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(())) => {}
            }
            let (v, used) = self.current.as_mut()?;
            let take = (v.rows() - *used).min(want - got);
            let (a, b) = (*used as usize, (*used + take) as usize);
            let layout = Layout::of(v);
            let fill = match &mut out {
                Some(f) if f.layout != layout => {
                    return Some(Err(MlError::Dataset(
                        "blocks of one dataset differ in dtype, row shape or labels".into(),
                    )))
                }
                Some(f) => f,
                None => match Filling::new(layout, want) {
                    Ok(f) => out.insert(f),
                    Err(e) => return Some(Err(e)),
                },
            };
            let row = v.row_bytes();
            fill.features
                .write(got as usize * row, &v.features_bytes()[a * row..b * row]);
            if let (Some(l), Some(lv), Some(dst)) =
                (v.labels_bytes(), v.labels_view(), fill.labels.as_mut())
            {
                let size = lv.dtype().size();
                dst.write(got as usize * size, &l[a * size..b * size]);
            }
            *used += take;
            got += take;
        }
        let fill = out?;
        if got == 0 || (self.drop_last && got < want) {
            return None;
        }
        let batch = || -> Result<Batch> {
            let rows = |t: tch::Tensor| -> Result<tch::Tensor> {
                Ok(if got < want {
                    t.f_narrow(0, 0, got as i64)?
                } else {
                    t
                })
            };
            Ok(Batch {
                features: rows(fill.features.0)?,
                labels: fill.labels.map(|l| rows(l.0)).transpose()?,
            })
        };
        Some(batch())
    }
}

/// What every block of a dataset must share: feature kind, row shape,
/// label kind.
#[derive(Debug, Clone, PartialEq)]
struct Layout {
    kind: tch::Kind,
    row_shape: Vec<u64>,
    label_kind: Option<tch::Kind>,
}

impl Layout {
    fn of(v: &BlockView) -> Layout {
        Layout {
            kind: kind_of(v.features_view().dtype()),
            row_shape: v.row_shape().to_vec(),
            label_kind: v.labels_view().map(|l| kind_of(l.dtype())),
        }
    }
}

/// A fresh contiguous CPU tensor being filled with bytes.
struct Dest(tch::Tensor);

impl Dest {
    fn new(shape: &[i64], kind: tch::Kind) -> Result<Dest> {
        Ok(Dest(tch::Tensor::f_empty(shape, (kind, tch::Device::Cpu))?))
    }

    /// Copies `bytes` to byte offset `at`.
    fn write(&mut self, at: usize, bytes: &[u8]) {
        let len = self.0.numel() * self.0.kind().elt_size_in_bytes();
        assert!(at + bytes.len() <= len, "batch write past the tensor");
        // SAFETY: the tensor was just allocated here, contiguous on the CPU,
        // `len` bytes long, and nothing else holds it; the range was checked
        // to lie inside it and cannot overlap the source (a store block).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                (self.0.data_ptr() as *mut u8).add(at),
                bytes.len(),
            )
        };
    }
}

/// The tensors of the batch being assembled.
struct Filling {
    layout: Layout,
    features: Dest,
    labels: Option<Dest>,
}

impl Filling {
    fn new(layout: Layout, rows: u64) -> Result<Filling> {
        let mut shape = vec![rows as i64];
        shape.extend(layout.row_shape.iter().map(|d| *d as i64));
        let features = Dest::new(&shape, layout.kind)?;
        let labels = layout
            .label_kind
            .map(|k| Dest::new(&[rows as i64], k))
            .transpose()?;
        Ok(Filling {
            layout,
            features,
            labels,
        })
    }
}

impl Iterator for BatchIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.done {
            return None;
        }
        let out = match self.rx {
            None => self.start().err().map(Err).or_else(|| self.next_batch()),
            Some(_) => self.next_batch(),
        };
        if !matches!(out, Some(Ok(_))) {
            // The end, or an error: stop (dropping the channel ends the thread).
            self.done = true;
            self.rx = None;
            self.current = None;
        }
        out
    }
}
