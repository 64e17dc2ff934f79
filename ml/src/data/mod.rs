//! Datasets: rows split into blocks in the object store, like Ray Data.
//!
//! A [`Dataset`] is a list of [`Block`]s; a block is a range of rows of a
//! features tensor object (`[R, ...]`, first dimension = row) and,
//! optionally, of a labels tensor object (`[R]`). A dataset holds refs, not
//! data: it is cheap to clone and to pass to tasks and actors (each shard of
//! [`Dataset::split`] goes to its trainer this way).
//!
//! - Make one: [`Dataset::from_tensors`], [`Dataset::from_tch`],
//!   [`Dataset::from_csv`], [`Dataset::from_tensor_file`] (format in
//!   [`io`]), [`Dataset::range`], [`Dataset::from_generator`], [`digits`].
//! - Transform: [`Dataset::map_batches`] (one task per block, in parallel),
//!   [`Dataset::shuffle`] (deterministic for a seed; one task per output block).
//! - Divide: [`Dataset::split`] / [`Dataset::split_for`] (equal shards,
//!   rules D-1..D-3 in [`plan::plan_split`]), [`Dataset::split_at`],
//!   [`Dataset::train_test_split`].
//! - Keep in place: [`Dataset::resident`] (blocks that may only live on
//!   nodes a residency rule allows, e.g. `region in [in-south]`).
//! - Protect: [`Dataset::mask`] (personal columns redacted, hashed or
//!   tokenised under the namespace's key; [`Dataset::unmask`] reverses
//!   tokens for holders of `pii:read`), rules in [`mask`].
//! - Check: [`Dataset::version`] (content hash), [`Dataset::expect`]
//!   (declared [`Expectations`], one task per block).
//! - Consume: [`Dataset::iter_batches`]: batches as tch tensors, the next
//!   block fetched in a background thread while this one is consumed.

mod block;
pub mod io;
mod iter;
pub mod mask;
pub mod ops;
pub mod plan;
mod quality;

pub use block::{Block, BlockView};
pub use io::{digits, CsvOptions};
pub use iter::{Batch, BatchIter};
pub use mask::Mask;
pub use quality::{Expectations, Violation};

use crate::{MlError, Result};
use prism::{NodeId, ObjectRef, Tensor};

/// Rows in blocks in the object store.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Default)]
pub struct Dataset {
    blocks: Vec<Block>,
}

impl Dataset {
    /// The same rows as blocks that may only live where `rule` allows (a
    /// copy, put from this node, which must be inside the rule): a task on
    /// a node outside it fails to read them, with an error naming the rule.
    pub fn resident(&self, rule: &prism::Residency) -> Result<Dataset> {
        let blocks = self
            .blocks
            .iter()
            .map(|b| b.resident(rule))
            .collect::<Result<Vec<_>>>()?;
        Ok(Dataset { blocks })
    }

    /// A dataset of these blocks, in this order.
    pub fn from_blocks(blocks: Vec<Block>) -> Dataset {
        Dataset { blocks }
    }

    /// The blocks, in dataset order.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// Number of rows.
    pub fn count(&self) -> u64 {
        self.blocks.iter().map(|b| b.rows).sum()
    }

    /// `features` (`[R, ...]`) and `labels` (`[R]`) cut into blocks of
    /// `block_rows` rows (the last may be shorter), each put in the store.
    pub fn from_tensors(
        features: &Tensor,
        labels: Option<&Tensor>,
        block_rows: u64,
    ) -> Result<Dataset> {
        let rows = block::check_rows(features.shape(), labels.map(|l| l.shape()))?;
        let block_rows = positive(block_rows)?;
        let row = features.data().len() / rows.max(1) as usize;
        let label_row = labels.map_or(0, |l| l.dtype().size());
        let mut blocks = Vec::new();
        let mut start = 0u64;
        while start < rows {
            let n = block_rows.min(rows - start);
            let (a, b) = (start as usize, (start + n) as usize);
            let mut shape = features.shape().to_vec();
            shape[0] = n;
            let f = Tensor::new(
                features.dtype(),
                &shape,
                features.data()[a * row..b * row].to_vec(),
            )?;
            let l = labels
                .map(|l| {
                    Tensor::new(
                        l.dtype(),
                        &[n],
                        l.data()[a * label_row..b * label_row].to_vec(),
                    )
                })
                .transpose()?;
            blocks.push(Block::put(&f, l.as_ref())?);
            start += n;
        }
        Ok(Dataset { blocks })
    }

    /// Like [`Dataset::from_tensors`], from tch tensors (any device/layout).
    pub fn from_tch(
        features: &tch::Tensor,
        labels: Option<&tch::Tensor>,
        block_rows: u64,
    ) -> Result<Dataset> {
        let to_prism = |t: &tch::Tensor| -> Result<Tensor> {
            let host = crate::tensor::to_host_contiguous(t);
            let shape: Vec<u64> = host.size().iter().map(|d| *d as u64).collect();
            let dtype = crate::tensor::dtype_of(host.f_kind()?)?;
            Ok(Tensor::new(
                dtype,
                &shape,
                crate::tensor::host_bytes(&host)?.to_vec(),
            )?)
        };
        let l = labels.map(to_prism).transpose()?;
        Dataset::from_tensors(&to_prism(features)?, l.as_ref(), block_rows)
    }

    /// Rows `0..n` in blocks of `block_rows`, generated by parallel tasks:
    /// row `i` has one `f32` feature `i` and the `i64` label `i`.
    pub fn range(n: u64, block_rows: u64) -> Result<Dataset> {
        let block_rows = positive(block_rows)?;
        let blocks = n.div_ceil(block_rows);
        Dataset::from_generator(blocks, |i| {
            let start = i * block_rows;
            ops::range_block::remote(start, block_rows.min(n - start))
        })
    }

    /// `n` blocks made by a remote function, in parallel: `f(i)` submits the
    /// task that makes block `i` (e.g. `|i| my_block::remote(i)` with
    /// `#[prism::remote] fn my_block(i: u64) -> Result<Block, String>`).
    pub fn from_generator<F>(n: u64, f: F) -> Result<Dataset>
    where
        F: Fn(u64) -> prism::Result<ObjectRef<Result<Block, String>>>,
    {
        let refs = (0..n).map(f).collect::<prism::Result<Vec<_>>>()?;
        collect_blocks(&refs)
    }

    /// Applies a remote function to every block, one task per block, all
    /// in parallel: `f(block)` submits it (e.g. `scale::remote` with
    /// `#[prism::remote] fn scale(b: Block) -> Result<Block, String>`, which
    /// reads `b.read()` in place and returns `Block::put(..)` of its output).
    pub fn map_batches<F>(&self, f: F) -> Result<Dataset>
    where
        F: Fn(Block) -> prism::Result<ObjectRef<Result<Block, String>>>,
    {
        let refs = self
            .blocks
            .iter()
            .map(|b| f(b.clone()))
            .collect::<prism::Result<Vec<_>>>()?;
        collect_blocks(&refs)
    }

    /// A global random permutation of the rows, the same for the same seed
    /// (whatever the cluster), keeping the block sizes. One task per output
    /// block gathers its rows from the input blocks.
    pub fn shuffle(&self, seed: u64) -> Result<Dataset> {
        let mut owner = Vec::with_capacity(self.count() as usize);
        for (i, b) in self.blocks.iter().enumerate() {
            owner.extend((0..b.rows).map(|r| (i as u32, r)));
        }
        let perm = plan::permutation(owner.len() as u64, seed);
        let mut refs = Vec::new();
        let mut at = 0usize;
        for b in &self.blocks {
            let picks: Vec<(u32, u64)> = perm[at..at + b.rows as usize]
                .iter()
                .map(|p| owner[*p as usize])
                .collect();
            at += b.rows as usize;
            if !picks.is_empty() {
                refs.push(ops::gather_rows::remote(self.blocks.clone(), picks)?);
            }
        }
        collect_blocks(&refs)
    }

    /// `n` shards of equal size, `count() / n` rows each; the last
    /// `count() % n` rows are dropped (rules D-1..D-3 in
    /// [`plan::plan_split`]). Blocks are sliced, never copied.
    pub fn split(&self, n: usize) -> Result<Vec<Dataset>> {
        self.split_for(&vec![None; n])
    }

    /// Like [`Dataset::split`], one shard per consumer, each preferring rows
    /// held on its consumer's node (`None`: no preference).
    pub fn split_for(&self, consumers: &[Option<NodeId>]) -> Result<Vec<Dataset>> {
        if consumers.is_empty() {
            return Err(MlError::Dataset("split into 0 shards".into()));
        }
        let rows: Vec<u64> = self.blocks.iter().map(|b| b.rows).collect();
        let nodes: Vec<NodeId> = self.blocks.iter().map(|b| b.node).collect();
        Ok(plan::plan_split(&rows, &nodes, consumers)
            .into_iter()
            .map(|pieces| Dataset {
                blocks: pieces
                    .into_iter()
                    .map(|(b, from, n)| self.blocks[b].slice(from, n))
                    .collect(),
            })
            .collect())
    }

    /// The first `rows` rows and the rest (blocks sliced, not copied).
    pub fn split_at(&self, rows: u64) -> (Dataset, Dataset) {
        let (mut head, mut tail) = (Vec::new(), Vec::new());
        let mut left = rows;
        for b in &self.blocks {
            let take = b.rows.min(left);
            if take > 0 {
                head.push(b.slice(0, take));
            }
            if take < b.rows {
                tail.push(b.slice(take, b.rows - take));
            }
            left -= take;
        }
        (Dataset { blocks: head }, Dataset { blocks: tail })
    }

    /// `(train, test)`: the rows shuffled with `seed`, then the first
    /// `round(count() * test_fraction)` rows are the test set. Deterministic.
    pub fn train_test_split(&self, test_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(0.0..=1.0).contains(&test_fraction) {
            return Err(MlError::Dataset(format!(
                "test fraction {test_fraction} is not in 0..=1"
            )));
        }
        let test_rows = (self.count() as f64 * test_fraction).round() as u64;
        let (test, train) = self.shuffle(seed)?.split_at(test_rows);
        Ok((train, test))
    }

    /// The same rows with personal `columns` of the features (`[rows,
    /// columns]`) masked by `method` ([`Mask`]), one task per block, under
    /// the key of this driver's namespace ([`prism::masking::namespace`]).
    /// Hashing and tokenising need that key, which the head gives only if
    /// this job's owner holds `pii:read` there (refused before any task
    /// starts, naming who lacks what); redacting needs nothing. Hand the
    /// result to those who may not see the raw columns: it holds new
    /// objects, and nothing of the raw values but their masks.
    pub fn mask(&self, columns: &[usize], method: Mask) -> Result<Dataset> {
        self.mask_with(columns, Some(method))
    }

    /// The same rows with the tokens in `columns` ([`Mask::Tokenize`])
    /// turned back into their values; needs `pii:read`, as above.
    pub fn unmask(&self, columns: &[usize]) -> Result<Dataset> {
        self.mask_with(columns, None)
    }

    fn mask_with(&self, columns: &[usize], method: Option<Mask>) -> Result<Dataset> {
        let namespace = prism::masking::namespace();
        if method.is_none_or(Mask::keyed) {
            // Refused here rather than in every task.
            prism::masking::key(&namespace)?;
        }
        self.map_batches(|b| {
            ops::mask_block::remote(b, columns.to_vec(), method, namespace.clone())
        })
    }

    /// Streams the rows in batches of `batch_size` (the last may be
    /// shorter), prefetching the next block in a background thread.
    pub fn iter_batches(&self, batch_size: usize) -> BatchIter {
        BatchIter::new(self.blocks.clone(), batch_size)
    }
}

fn positive(block_rows: u64) -> Result<u64> {
    if block_rows == 0 {
        return Err(MlError::Dataset("blocks of 0 rows".into()));
    }
    Ok(block_rows)
}

fn collect_blocks(refs: &[ObjectRef<Result<Block, String>>]) -> Result<Dataset> {
    let mut blocks = Vec::with_capacity(refs.len());
    for r in refs {
        blocks.push(r.get()?.map_err(MlError::Dataset)?);
    }
    Ok(Dataset { blocks })
}
