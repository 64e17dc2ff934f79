//! A block: a range of rows of a features tensor object (and, optionally,
//! of a labels tensor object) in the object store.

use crate::{MlError, Result};
use prism::{Element, NodeId, ObjectRef, Tensor, TensorView};

/// Rows `start..start + rows` of a stored features tensor (`[R, ...]`, the
/// first dimension is the row) and of a stored labels tensor (`[R]`), if
/// any. Slicing a block (for `split`) makes a new `Block` over the same
/// objects; nothing is copied. Cheap to clone and to pass to tasks and
/// actors (it holds refs, not data).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct Block {
    /// The features tensor object, `[R, ...]`.
    pub features: ObjectRef<Tensor>,
    /// The labels tensor object, `[R]`.
    pub labels: Option<ObjectRef<Tensor>>,
    /// First row of this block in the objects.
    pub start: u64,
    /// Number of rows.
    pub rows: u64,
    /// The node whose store holds the objects (where they were put).
    pub node: NodeId,
}

impl Block {
    /// Puts `features` (`[R, ...]`) and `labels` (`[R]`) into this node's
    /// store as one block of all `R` rows.
    pub fn put(features: &Tensor, labels: Option<&Tensor>) -> Result<Block> {
        let rows = check_rows(features.shape(), labels.map(|l| l.shape()))?;
        let f = prism::put_tensor(features.dtype(), features.shape(), features.data())?;
        let l = labels
            .map(|l| prism::put_tensor(l.dtype(), l.shape(), l.data()))
            .transpose()?;
        Block::new(f, l, rows)
    }

    /// Puts tch tensors as one block (see [`crate::tensor::put`]).
    pub fn put_tch(features: &tch::Tensor, labels: Option<&tch::Tensor>) -> Result<Block> {
        let fs: Vec<u64> = features.size().iter().map(|d| *d as u64).collect();
        let ls: Option<Vec<u64>> = labels.map(|l| l.size().iter().map(|d| *d as u64).collect());
        let rows = check_rows(&fs, ls.as_deref())?;
        let f = crate::tensor::put(features)?;
        let l = labels.map(crate::tensor::put).transpose()?;
        Block::new(f, l, rows)
    }

    fn new(
        features: ObjectRef<Tensor>,
        labels: Option<ObjectRef<Tensor>>,
        rows: u64,
    ) -> Result<Block> {
        Ok(Block {
            features,
            labels,
            start: 0,
            rows,
            node: prism::node_id()?,
        })
    }

    /// Rows `from..from + rows` of this block, as a block over the same objects.
    pub fn slice(&self, from: u64, rows: u64) -> Block {
        assert!(from + rows <= self.rows, "slice beyond the block");
        Block {
            start: self.start + from,
            rows,
            ..self.clone()
        }
    }

    /// This block's rows put again as new objects that may only live where
    /// `rule` allows (this node must be inside it): tasks on nodes outside
    /// cannot read them.
    pub fn resident(&self, rule: &prism::Residency) -> Result<Block> {
        let v = self.read()?;
        let shape: Vec<u64> = std::iter::once(v.rows())
            .chain(v.row_shape().iter().copied())
            .collect();
        let dtype = v.features_view().dtype();
        let f = prism::put_tensor_resident(dtype, &shape, v.features_bytes(), rule.clone())?;
        let l = match (v.labels_view(), v.labels_bytes()) {
            (Some(lv), Some(lb)) => Some(prism::put_tensor_resident(
                lv.dtype(),
                &[v.rows()],
                lb,
                rule.clone(),
            )?),
            _ => None,
        };
        Block::new(f, l, v.rows())
    }

    /// Reads the block in place (pulling its objects to this node first if
    /// they live elsewhere); the objects stay pinned while the view lives.
    pub fn read(&self) -> Result<BlockView> {
        let features = prism::get_tensor(&self.features)?;
        let labels = self.labels.as_ref().map(prism::get_tensor).transpose()?;
        let total = features.shape().first().copied().unwrap_or(0);
        if self.start + self.rows > total {
            return Err(MlError::Dataset(format!(
                "block rows {}..{} beyond its {total}-row features object",
                self.start,
                self.start + self.rows
            )));
        }
        Ok(BlockView {
            features,
            labels,
            start: self.start,
            rows: self.rows,
        })
    }
}

/// The rows of a tensor with `shape`, checked against the labels' shape.
pub(crate) fn check_rows(features: &[u64], labels: Option<&[u64]>) -> Result<u64> {
    let Some(&rows) = features.first() else {
        return Err(MlError::Dataset(
            "features must have a row dimension (rank >= 1)".into(),
        ));
    };
    if let Some(l) = labels {
        if l != [rows] {
            return Err(MlError::Dataset(format!(
                "labels of shape {l:?} for {rows} rows (want [{rows}])"
            )));
        }
    }
    Ok(rows)
}

/// A block read in place: its rows are slices of the shared segment.
#[derive(Debug)]
pub struct BlockView {
    features: TensorView,
    labels: Option<TensorView>,
    start: u64,
    rows: u64,
}

impl BlockView {
    /// Number of rows.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The stored features object (all its rows).
    pub fn features_view(&self) -> &TensorView {
        &self.features
    }

    /// The stored labels object (all its rows).
    pub fn labels_view(&self) -> Option<&TensorView> {
        self.labels.as_ref()
    }

    /// The shape of one row of features (the features' shape without its first dimension).
    pub fn row_shape(&self) -> &[u64] {
        &self.features.shape()[1..]
    }

    /// Bytes of one row of features.
    pub fn row_bytes(&self) -> usize {
        self.row_shape().iter().product::<u64>() as usize * self.features.dtype().size()
    }

    /// This block's rows of features, in place.
    pub fn features_bytes(&self) -> &[u8] {
        rows_of(&self.features, self.start, self.rows)
    }

    /// This block's labels, in place.
    pub fn labels_bytes(&self) -> Option<&[u8]> {
        self.labels
            .as_ref()
            .map(|l| rows_of(l, self.start, self.rows))
    }

    /// This block's rows of features as `T`s, in place.
    pub fn features<T: Element>(&self) -> Result<&[T]> {
        typed(&self.features, self.features_bytes())
    }

    /// This block's labels as `T`s, in place.
    pub fn labels<T: Element>(&self) -> Result<Option<&[T]>> {
        match &self.labels {
            None => Ok(None),
            Some(l) => typed(l, rows_of(l, self.start, self.rows)).map(Some),
        }
    }
}

fn rows_of(t: &TensorView, start: u64, rows: u64) -> &[u8] {
    let total = t.shape().first().copied().unwrap_or(0).max(1);
    let per = t.data().len() as u64 / total;
    &t.data()[(start * per) as usize..((start + rows) * per) as usize]
}

fn typed<'a, T: Element>(t: &TensorView, bytes: &'a [u8]) -> Result<&'a [T]> {
    if t.dtype() != T::DTYPE {
        return Err(MlError::Dataset(format!(
            "tensor holds {:?}, read as {:?}",
            t.dtype(),
            T::DTYPE
        )));
    }
    bytemuck::try_cast_slice(bytes)
        .map_err(|e| MlError::Dataset(format!("rows not castable: {e:?}")))
}
