//! A data set's version and its declared expectations, both computed by
//! one task per block where the block lives.
//!
//! - [`Dataset::version`]: the SHA-256 of its blocks' contents in order
//!   (feature and label bytes, shapes and types), so the same rows cut the
//!   same way have the same version wherever and whenever they were made,
//!   and any change to a value changes it. Trainers record it with the run.
//! - [`Dataset::expect`]: [`Expectations`] (no NaN or infinity, value
//!   ranges per feature, allowed labels, row count bounds, row width),
//!   checked in parallel; a violation is an error naming the expectation,
//!   the column and example rows.

use super::{Block, Dataset};
use crate::{MlError, Result};
use prism::raylet::workers::{hex, sha256};
use prism::DType;

/// What a data set must satisfy.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Expectations {
    no_nan: bool,
    /// (first feature, one past the last, min, max).
    ranges: Vec<(u32, u32, f64, f64)>,
    labels_in: Option<Vec<i64>>,
    rows: Option<(u64, u64)>,
    width: Option<u64>,
}

impl Expectations {
    /// Nothing expected yet.
    pub fn new() -> Expectations {
        Expectations::default()
    }
    /// No feature is NaN or infinite.
    pub fn no_nan(mut self) -> Self {
        self.no_nan = true;
        self
    }
    /// Features `cols` lie in `[min, max]`.
    pub fn feature_range(mut self, cols: std::ops::Range<u32>, min: f64, max: f64) -> Self {
        self.ranges.push((cols.start, cols.end, min, max));
        self
    }
    /// Every label is one of `allowed`.
    pub fn labels_in(mut self, allowed: impl IntoIterator<Item = i64>) -> Self {
        self.labels_in = Some(allowed.into_iter().collect());
        self
    }
    /// The data set has between `min` and `max` rows.
    pub fn rows_between(mut self, min: u64, max: u64) -> Self {
        self.rows = Some((min, max));
        self
    }
    /// Each row has exactly `n` features.
    pub fn row_width(mut self, n: u64) -> Self {
        self.width = Some(n);
        self
    }
}

/// One expectation a block broke.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct Violation {
    /// Which expectation (`no_nan`, `feature_range [0, 16]`, ...).
    pub expectation: String,
    /// The column (`feature 3`, `label`, `rows`).
    pub column: String,
    /// How many rows broke it.
    pub count: u64,
    /// Up to 5 of them (row numbers in the data set).
    pub examples: Vec<u64>,
}

fn note(out: &mut Vec<Violation>, expectation: &str, column: String, row: u64) {
    match out
        .iter_mut()
        .find(|v| v.expectation == expectation && v.column == column)
    {
        Some(v) => {
            v.count += 1;
            if v.examples.len() < 5 {
                v.examples.push(row);
            }
        }
        None => out.push(Violation {
            expectation: expectation.to_string(),
            column,
            count: 1,
            examples: vec![row],
        }),
    }
}

/// The checks of `exp` on one block whose first row is row `first` of
/// the data set.
#[prism::remote]
pub fn check_block(
    block: Block,
    first: u64,
    exp: Expectations,
) -> std::result::Result<Vec<Violation>, String> {
    let view = block.read().map_err(|e| e.to_string())?;
    let width: u64 = view.row_shape().iter().product();
    let mut out = Vec::new();
    if let Some(w) = exp.width {
        if width != w {
            note(
                &mut out,
                &format!("row_width {w}"),
                format!("features (width {width})"),
                first,
            );
        }
    }
    let values: Vec<f64> = match view.features_view().dtype() {
        DType::F32 => view
            .features::<f32>()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|v| *v as f64)
            .collect(),
        DType::F64 => view.features::<f64>().map_err(|e| e.to_string())?.to_vec(),
        _ => Vec::new(),
    };
    let w = width.max(1) as usize;
    for (i, v) in values.iter().enumerate() {
        let (row, col) = (first + (i / w) as u64, (i % w) as u32);
        if exp.no_nan && !v.is_finite() {
            note(&mut out, "no_nan", format!("feature {col}"), row);
        }
        for &(lo, hi, min, max) in &exp.ranges {
            if col >= lo && col < hi && v.is_finite() && (*v < min || *v > max) {
                note(
                    &mut out,
                    &format!("feature_range [{min}, {max}]"),
                    format!("feature {col}"),
                    row,
                );
            }
        }
    }
    if let Some(allowed) = &exp.labels_in {
        if let Ok(Some(labels)) = view.labels::<i64>() {
            for (i, l) in labels.iter().enumerate() {
                if !allowed.contains(l) {
                    note(&mut out, "labels_in", "label".into(), first + i as u64);
                }
            }
        }
    }
    Ok(out)
}

/// The SHA-256 of one block's contents.
#[prism::remote]
pub fn block_digest(block: Block) -> std::result::Result<Vec<u8>, String> {
    let view = block.read().map_err(|e| e.to_string())?;
    let mut bytes =
        format!("{:?}{:?}", view.features_view().dtype(), view.row_shape()).into_bytes();
    bytes.extend_from_slice(&sha256(view.features_bytes()));
    if let Some(l) = view.labels_bytes() {
        bytes.extend_from_slice(&sha256(l));
    }
    Ok(sha256(&bytes).to_vec())
}

impl Dataset {
    /// The data set's version: `sha256:` and the hash of its blocks'
    /// contents in order (one task per block).
    pub fn version(&self) -> Result<String> {
        let refs = self
            .blocks()
            .iter()
            .map(|b| block_digest::remote(b.clone()))
            .collect::<prism::Result<Vec<_>>>()?;
        let mut all = Vec::with_capacity(32 * refs.len());
        for r in prism::get_all(&refs)? {
            all.extend(r.map_err(MlError::Dataset)?);
        }
        Ok(format!("sha256:{}", hex(&sha256(&all))))
    }

    /// Checks `exp` on every block in parallel; the error names each
    /// broken expectation, its column, how many rows and examples.
    pub fn expect(&self, exp: &Expectations) -> Result<()> {
        let mut violations = Vec::new();
        if let Some((min, max)) = exp.rows {
            let n = self.count();
            if n < min || n > max {
                violations.push(Violation {
                    expectation: format!("rows_between {min} and {max}"),
                    column: "rows".into(),
                    count: n,
                    examples: Vec::new(),
                });
            }
        }
        let mut first = 0;
        let mut refs = Vec::new();
        for b in self.blocks() {
            refs.push(check_block::remote(b.clone(), first, exp.clone())?);
            first += b.rows;
        }
        for r in prism::get_all(&refs)? {
            for v in r.map_err(MlError::Dataset)? {
                match violations.iter_mut().find(|x: &&mut Violation| {
                    x.expectation == v.expectation && x.column == v.column
                }) {
                    Some(x) => {
                        x.count += v.count;
                        let room = 5usize.saturating_sub(x.examples.len());
                        x.examples.extend(v.examples.into_iter().take(room));
                    }
                    None => violations.push(v),
                }
            }
        }
        if violations.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = violations
            .iter()
            .map(|v| {
                let examples = match v.examples.is_empty() {
                    true => String::new(),
                    false => format!(", e.g. rows {:?}", v.examples),
                };
                format!(
                    "{} broken in {}: {} rows{examples}",
                    v.expectation, v.column, v.count
                )
            })
            .collect();
        Err(MlError::Validation(lines.join("; ")))
    }
}
