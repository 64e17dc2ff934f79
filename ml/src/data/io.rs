//! Datasets from files: CSV (optionally gzip-compressed), Prism's binary
//! tensor file, and the bundled digits data set.
//!
//! # The tensor file format (`.pdsf`)
//!
//! A whole dataset in one file, its tensors in exactly the object store's
//! tensor object format, so reading one is parsing a header and copying the
//! data into the store. All integers little-endian.
//!
//! ```text
//! 0   "PDSF"                 magic
//! 4   version: u32 = 1
//! 8   flags: u32             bit 0: a labels tensor follows the features
//! 12  0: u32                 reserved
//! 16  features_len: u64      then that many bytes: the features tensor
//!                            object ("PZT1" header, shape [R, ...], row-major data)
//! ..  labels_len: u64        (if flag bit 0) then the labels tensor object, shape [R]
//! ```

use super::Dataset;
use crate::{MlError, Result};
use prism::{Tensor, Value};
use std::io::Read;
use std::path::Path;

const MAGIC: &[u8; 4] = b"PDSF";
const VERSION: u32 = 1;

/// The bundled digits data set, gzip-compressed CSV (see `ml/data/README.md`).
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// How to read a CSV file: numbers separated by commas, one row per line.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// Skip the first line.
    pub has_header: bool,
    /// The column holding an integer label (the others are `f32` features);
    /// `None`: no labels.
    pub label_column: Option<usize>,
    /// Rows per block.
    pub block_rows: u64,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            has_header: false,
            label_column: None,
            block_rows: 1024,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MlError + '_ {
    move |source| MlError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn bad(path: &Path, detail: String) -> MlError {
    MlError::BadFile {
        path: path.to_path_buf(),
        detail,
    }
}

/// `(features [R, C] f32, labels [R] i64)` of CSV text.
fn parse_csv(path: &Path, text: &str, opts: &CsvOptions) -> Result<(Tensor, Option<Tensor>)> {
    let (mut features, mut labels) = (Vec::<f32>::new(), Vec::<i64>::new());
    let (mut rows, mut cols) = (0u64, None);
    for (i, line) in text.lines().enumerate() {
        if (i == 0 && opts.has_header) || line.trim().is_empty() {
            continue;
        }
        let mut n = 0usize;
        for (c, field) in line.split(',').enumerate() {
            let field = field.trim();
            let x: f64 = field.parse().map_err(|_| {
                bad(
                    path,
                    format!(
                        "line {}, column {}: {field:?} is not a number",
                        i + 1,
                        c + 1
                    ),
                )
            })?;
            if Some(c) == opts.label_column {
                if x.fract() != 0.0 {
                    return Err(bad(
                        path,
                        format!("line {}: label {field:?} is not an integer", i + 1),
                    ));
                }
                labels.push(x as i64);
            } else {
                features.push(x as f32);
                n += 1;
            }
        }
        let first = *cols.get_or_insert(n);
        if first != n {
            let why = format!(
                "line {}: {n} features where the first row has {first}",
                i + 1
            );
            return Err(bad(path, why));
        }
        if opts.label_column.is_some() && labels.len() as u64 != rows + 1 {
            return Err(bad(path, format!("line {}: no label column", i + 1)));
        }
        rows += 1;
    }
    let cols = cols.unwrap_or(0) as u64;
    let features = Tensor::from_slice(&[rows, cols], &features)?;
    let labels = match opts.label_column {
        Some(_) => Some(Tensor::from_slice(&[rows], &labels)?),
        None => None,
    };
    Ok((features, labels))
}

impl Dataset {
    /// Reads a CSV file (gzip-compressed if its name ends in `.gz`).
    pub fn from_csv(path: impl AsRef<Path>, opts: &CsvOptions) -> Result<Dataset> {
        let path = path.as_ref();
        let raw = std::fs::read(path).map_err(io_err(path))?;
        let text = if path.extension().is_some_and(|e| e == "gz") {
            let mut s = String::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_string(&mut s)
                .map_err(io_err(path))?;
            s
        } else {
            String::from_utf8(raw).map_err(|e| bad(path, format!("not UTF-8 text: {e}")))?
        };
        let (f, l) = parse_csv(path, &text, opts)?;
        Dataset::from_tensors(&f, l.as_ref(), opts.block_rows)
    }

    /// Reads a tensor file (format in the [module docs](self)) into blocks of `block_rows`.
    pub fn from_tensor_file(path: impl AsRef<Path>, block_rows: u64) -> Result<Dataset> {
        let path = path.as_ref();
        let raw = std::fs::read(path).map_err(io_err(path))?;
        let word = |at: usize| -> Result<u64> {
            raw.get(at..at + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
                .ok_or_else(|| bad(path, format!("truncated at byte {at}")))
        };
        if raw.len() < 16 || &raw[..4] != MAGIC {
            return Err(bad(path, "not a Prism tensor file (no PDSF magic)".into()));
        }
        let version = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
        if version != VERSION {
            return Err(bad(
                path,
                format!("tensor file version {version}, this build reads {VERSION}"),
            ));
        }
        let has_labels = raw[8] & 1 == 1;
        let mut at = 16usize;
        let mut tensor = || -> Result<Tensor> {
            let len = word(at)? as usize;
            let body = raw
                .get(at + 8..at + 8 + len)
                .ok_or_else(|| bad(path, format!("tensor at byte {at} runs past the end")))?;
            at += 8 + len;
            Tensor::decode(body).map_err(|e| bad(path, e.to_string()))
        };
        let features = tensor()?;
        let labels = if has_labels { Some(tensor()?) } else { None };
        Dataset::from_tensors(&features, labels.as_ref(), block_rows)
    }

    /// Writes all rows to a tensor file (format in the [module docs](self)).
    pub fn write_tensor_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let (mut features, mut labels) = (Vec::new(), Vec::new());
        let mut layout = None;
        for b in self.blocks() {
            let v = b.read()?;
            let label_dtype = v.labels_view().map(|l| l.dtype());
            let this = (
                v.features_view().dtype(),
                v.row_shape().to_vec(),
                label_dtype,
            );
            if *layout.get_or_insert_with(|| this.clone()) != this {
                return Err(MlError::Dataset(
                    "blocks differ in dtype or row shape".into(),
                ));
            }
            features.extend_from_slice(v.features_bytes());
            labels.extend_from_slice(v.labels_bytes().unwrap_or_default());
        }
        let Some((dtype, row_shape, label_dtype)) = layout else {
            return Err(MlError::Dataset(
                "cannot write an empty dataset (no dtype)".into(),
            ));
        };
        let rows = self.count();
        let mut shape = vec![rows];
        shape.extend(row_shape);
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&u32::from(label_dtype.is_some()).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        let mut push = |t: Tensor| -> Result<()> {
            let bytes = t.encode()?;
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(&bytes);
            Ok(())
        };
        push(Tensor::new(dtype, &shape, features)?)?;
        if let Some(d) = label_dtype {
            push(Tensor::new(d, &[rows], labels)?)?;
        }
        std::fs::write(path, out).map_err(io_err(path))
    }
}

/// The 8×8 handwritten digits (1,797 images; scikit-learn's copy of the UCI
/// test set, see `ml/data/README.md`): 64 `f32` features per row (pixels
/// 0..16 scaled by 1/16, row-major), `i64` labels 0..9, in file order, in
/// blocks of `block_rows`. Use [`Dataset::train_test_split`] for a
/// deterministic split.
pub fn digits(block_rows: u64) -> Result<Dataset> {
    let path = Path::new("<bundled digits.csv.gz>");
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_CSV_GZ)
        .read_to_string(&mut text)
        .map_err(io_err(path))?;
    let opts = CsvOptions {
        has_header: false,
        label_column: Some(64),
        block_rows,
    };
    let (f, l) = parse_csv(path, &text, &opts)?;
    let scaled: Vec<f32> = f.to_vec::<f32>()?.iter().map(|x| x / 16.0).collect();
    let f = Tensor::from_slice(f.shape(), &scaled)?;
    Dataset::from_tensors(&f, l.as_ref(), block_rows)
}
