//! Streaming batches with prefetch.
//!
//! A background thread reads the blocks in order (`Block::read`: pulled to
//! this node if needed, then pinned in place) and hands them over through a
//! bounded channel, so it runs at most `prefetch` blocks ahead of the
//! consumer. The consumer copies each batch's rows from the pinned blocks
//! into one new tch tensor (a batch may span blocks); a block is released
//! as soon as its last row is taken.

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
        let (mut features, mut labels) = (Vec::new(), Vec::new());
        let mut got = 0u64;
        let mut layout = None;
        while got < want {
            match self.block() {
                None => break,
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(())) => {}
            }
            let (v, used) = self.current.as_mut()?;
            let take = (v.rows() - *used).min(want - got);
            let (a, b) = (*used as usize, (*used + take) as usize);
            let kinds = (
                kind_of(v.features_view().dtype()),
                v.row_shape().to_vec(),
                v.labels_view().map(|l| kind_of(l.dtype())),
            );
            if *layout.get_or_insert_with(|| kinds.clone()) != kinds {
                return Some(Err(MlError::Dataset(
                    "blocks of one dataset differ in dtype, row shape or labels".into(),
                )));
            }
            let row = v.row_bytes();
            features.extend_from_slice(&v.features_bytes()[a * row..b * row]);
            if let (Some(l), Some(lv)) = (v.labels_bytes(), v.labels_view()) {
                let size = lv.dtype().size();
                labels.extend_from_slice(&l[a * size..b * size]);
            }
            *used += take;
            got += take;
        }
        let (kind, row_shape, label_kind) = layout?;
        if got == 0 || (self.drop_last && got < want) {
            return None;
        }
        let mut shape = vec![got as i64];
        shape.extend(row_shape.iter().map(|d| *d as i64));
        let batch = || -> Result<Batch> {
            Ok(Batch {
                features: tch::Tensor::f_from_data_size(&features, &shape, kind)?,
                labels: label_kind
                    .map(|k| tch::Tensor::f_from_data_size(&labels, &[got as i64], k))
                    .transpose()?,
            })
        };
        Some(batch())
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
