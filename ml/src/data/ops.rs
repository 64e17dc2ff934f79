//! The remote functions behind dataset operations: each runs as one task
//! per output block, on whatever node the scheduler picks, reading its
//! input blocks in place (pulled first when they live elsewhere).

use super::block::{Block, BlockView};
use super::mask::{Mask, MaskKeys};
use prism::{DType, Tensor};
use std::collections::HashMap;

/// Rows `start..start + rows` of `Dataset::range`: one `f32` feature equal
/// to the row index, and the row index as an `i64` label.
#[prism::remote]
pub fn range_block(start: u64, rows: u64) -> Result<Block, String> {
    let f: Vec<f32> = (start..start + rows).map(|i| i as f32).collect();
    let l: Vec<i64> = (start..start + rows).map(|i| i as i64).collect();
    let features = Tensor::from_slice(&[rows, 1], &f).map_err(|e| e.to_string())?;
    let labels = Tensor::from_slice(&[rows], &l).map_err(|e| e.to_string())?;
    Block::put(&features, Some(&labels)).map_err(|e| e.to_string())
}

/// A new block of the rows `picks` names, `(index into sources, row within
/// that block)`, in that order (how `shuffle` moves rows between blocks).
#[prism::remote]
pub fn gather_rows(sources: Vec<Block>, picks: Vec<(u32, u64)>) -> Result<Block, String> {
    gather(&sources, &picks).map_err(|e| format!("gather_rows: {e}"))
}

fn gather(sources: &[Block], picks: &[(u32, u64)]) -> crate::Result<Block> {
    let mut views: HashMap<u32, BlockView> = HashMap::new();
    for (s, _) in picks {
        if !views.contains_key(s) {
            let block = sources.get(*s as usize).ok_or_else(|| {
                crate::MlError::Dataset(format!("pick names source {s} of {}", sources.len()))
            })?;
            views.insert(*s, block.read()?);
        }
    }
    let Some(first) = picks.first().and_then(|(s, _)| views.get(s)) else {
        return Err(crate::MlError::Dataset("a block of no rows".into()));
    };
    let dtype = first.features_view().dtype();
    let row_shape = first.row_shape().to_vec();
    let label_dtype = first.labels_view().map(|l| l.dtype());
    let row = first.row_bytes();
    let label_row = label_dtype.map_or(0, DType::size);
    let mut features = Vec::with_capacity(picks.len() * row);
    let mut labels = Vec::with_capacity(picks.len() * label_row);
    for (s, r) in picks {
        let v = &views[s];
        if v.features_view().dtype() != dtype
            || v.row_shape() != row_shape
            || v.labels_view().map(|l| l.dtype()) != label_dtype
        {
            return Err(crate::MlError::Dataset(
                "blocks of one dataset differ in dtype or row shape".into(),
            ));
        }
        if *r >= v.rows() {
            return Err(crate::MlError::Dataset(format!(
                "row {r} of a {}-row block",
                v.rows()
            )));
        }
        let r = *r as usize;
        features.extend_from_slice(&v.features_bytes()[r * row..(r + 1) * row]);
        if let Some(l) = v.labels_bytes() {
            labels.extend_from_slice(&l[r * label_row..(r + 1) * label_row]);
        }
    }
    let n = picks.len() as u64;
    let mut shape = vec![n];
    shape.extend_from_slice(&row_shape);
    let features = Tensor::new(dtype, &shape, features)?;
    let labels = label_dtype
        .map(|d| Tensor::new(d, &[n], labels))
        .transpose()?;
    Block::put(&features, labels.as_ref())
}

/// Block `block` with `columns` of its features masked by `method`, or
/// with their tokens turned back into values (`None`). The namespace's key
/// is asked for here, in the task, so it never travels in a task's
/// arguments; the head refuses it unless the job's owner holds `pii:read`
/// in `namespace`.
#[prism::remote]
pub fn mask_block(
    block: Block,
    columns: Vec<usize>,
    method: Option<Mask>,
    namespace: String,
) -> Result<Block, String> {
    let what = method.map_or("unmask", Mask::name);
    mask_one(&block, &columns, method, &namespace).map_err(|e| format!("{what}: {e}"))
}

fn mask_one(
    block: &Block,
    columns: &[usize],
    method: Option<Mask>,
    namespace: &str,
) -> crate::Result<Block> {
    let v = block.read()?;
    let fail = |e: String| crate::MlError::Dataset(e);
    let [cols] = v.row_shape() else {
        return Err(fail(format!(
            "masking needs [rows, columns] features; these rows are {:?}",
            v.row_shape()
        )));
    };
    let dtype = v.features_view().dtype();
    super::mask::check(dtype, *cols as usize, columns, method).map_err(fail)?;
    let keys = match method {
        Some(Mask::Redact) => None,
        _ => Some(MaskKeys::new(&prism::masking::key(namespace)?)),
    };
    let mut bytes = v.features_bytes().to_vec();
    super::mask::apply(
        &mut bytes,
        dtype,
        *cols as usize,
        columns,
        method,
        keys.as_ref(),
    )
    .map_err(fail)?;
    let features = Tensor::new(dtype, &[v.rows(), *cols], bytes)?;
    let labels = match (v.labels_view(), v.labels_bytes()) {
        (Some(l), Some(b)) => Some(Tensor::new(l.dtype(), &[v.rows()], b.to_vec())?),
        _ => None,
    };
    Block::put(&features, labels.as_ref())
}
