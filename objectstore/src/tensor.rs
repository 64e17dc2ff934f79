//! Tensors in the store: a fixed header — magic, dtype, rank, data offset,
//! shape and strides (in elements) — then the data, 64-byte aligned because
//! every object starts on a 64-byte boundary (OS-7) and the header is padded
//! to a multiple of 64. A reader gets a typed slice without copying.
//!
//! ```text
//! 0   "PZT1"  dtype:u8  ndim:u8  0:u16  data_offset:u32  0:u32
//! 16  shape: u64 × ndim,  strides: i64 × ndim,  zero padding to 64·k
//! data_offset  data
//! ```

use crate::alloc::ALIGN;

const MAGIC: &[u8; 4] = b"PZT1";
/// The largest rank a stored tensor may have.
pub const MAX_DIMS: usize = 16;

/// Element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DType {
    /// 32-bit float.
    F32 = 1,
    /// 64-bit float.
    F64 = 2,
    /// 16-bit float.
    F16 = 3,
    /// bfloat16.
    BF16 = 4,
    /// 64-bit signed integer.
    I64 = 5,
    /// 32-bit signed integer.
    I32 = 6,
    /// 8-bit unsigned integer.
    U8 = 7,
    /// Boolean, one byte each.
    Bool = 8,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 | DType::Bool => 1,
        }
    }

    fn from_u8(x: u8) -> Option<DType> {
        [
            DType::F32,
            DType::F64,
            DType::F16,
            DType::BF16,
            DType::I64,
            DType::I32,
            DType::U8,
            DType::Bool,
        ]
        .into_iter()
        .find(|d| *d as u8 == x)
    }
}

/// Rust element types that match a dtype.
pub trait Element: bytemuck::Pod {
    /// The matching dtype.
    const DTYPE: DType;
}
impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for f64 {
    const DTYPE: DType = DType::F64;
}
impl Element for i64 {
    const DTYPE: DType = DType::I64;
}
impl Element for i32 {
    const DTYPE: DType = DType::I32;
}
impl Element for u8 {
    const DTYPE: DType = DType::U8;
}

/// A tensor object is malformed or read as the wrong type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    /// Not a tensor, or a damaged header.
    #[error("not a valid tensor object: {0}")]
    BadHeader(String),
    /// Read as another element type.
    #[error("tensor holds {stored:?}, read as {asked:?}")]
    WrongDType {
        /// What it holds.
        stored: DType,
        /// What was asked.
        asked: DType,
    },
    /// The shape does not fit the rules.
    #[error("bad tensor shape: {0}")]
    BadShape(String),
}

/// Dtype, shape and strides (in elements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    /// Element type.
    pub dtype: DType,
    /// Extent of each dimension.
    pub shape: Vec<u64>,
    /// Step of each dimension, in elements (non-negative).
    pub strides: Vec<i64>,
}

impl TensorMeta {
    /// A row-major (C-contiguous) tensor.
    pub fn contiguous(dtype: DType, shape: &[u64]) -> TensorMeta {
        let mut strides = vec![0i64; shape.len()];
        let mut step = 1i64;
        for (i, d) in shape.iter().enumerate().rev() {
            strides[i] = step;
            step = step.saturating_mul(*d as i64);
        }
        TensorMeta {
            dtype,
            shape: shape.to_vec(),
            strides,
        }
    }

    /// Elements the data region must hold for this shape and these strides.
    pub fn storage_elements(&self) -> Result<u64, TensorError> {
        if self.shape.len() > MAX_DIMS || self.shape.len() != self.strides.len() {
            return Err(TensorError::BadShape(format!(
                "rank {} with {} strides (max rank {MAX_DIMS})",
                self.shape.len(),
                self.strides.len()
            )));
        }
        if self.shape.contains(&0) {
            return Ok(0);
        }
        let mut last = 0u64;
        for (d, s) in self.shape.iter().zip(&self.strides) {
            let s =
                u64::try_from(*s).map_err(|_| TensorError::BadShape("negative stride".into()))?;
            last = (d - 1)
                .checked_mul(s)
                .and_then(|x| x.checked_add(last))
                .ok_or_else(|| TensorError::BadShape("size overflows".into()))?;
        }
        Ok(last + 1)
    }

    /// Bytes of data.
    pub fn data_bytes(&self) -> Result<usize, TensorError> {
        let n = self
            .storage_elements()?
            .checked_mul(self.dtype.size() as u64);
        n.and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| TensorError::BadShape("size overflows".into()))
    }

    /// Bytes of header, a multiple of 64.
    pub fn header_bytes(&self) -> usize {
        (16 + 16 * self.shape.len()).div_ceil(ALIGN) * ALIGN
    }

    /// Header and data: the object's size.
    pub fn object_bytes(&self) -> Result<usize, TensorError> {
        Ok(self.header_bytes() + self.data_bytes()?)
    }

    /// Encodes the header (`header_bytes()` long).
    pub fn encode_header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(self.header_bytes());
        h.extend_from_slice(MAGIC);
        h.push(self.dtype as u8);
        h.push(self.shape.len() as u8);
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&(self.header_bytes() as u32).to_le_bytes());
        h.extend_from_slice(&[0; 4]);
        self.shape
            .iter()
            .for_each(|d| h.extend_from_slice(&d.to_le_bytes()));
        self.strides
            .iter()
            .for_each(|s| h.extend_from_slice(&s.to_le_bytes()));
        h.resize(self.header_bytes(), 0);
        h
    }
}

/// A tensor read in place from the store.
#[derive(Debug, Clone)]
pub struct TensorView<'a> {
    /// Its dtype, shape and strides.
    pub meta: TensorMeta,
    /// Its data, 64-byte aligned, in the shared segment.
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// Parses a tensor object's bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<TensorView<'a>, TensorError> {
        let bad = |why: &str| TensorError::BadHeader(why.to_string());
        if bytes.len() < 16 || &bytes[..4] != MAGIC {
            return Err(bad("missing PZT1 magic"));
        }
        let dtype = DType::from_u8(bytes[4]).ok_or_else(|| bad("unknown dtype"))?;
        let ndim = bytes[5] as usize;
        if ndim > MAX_DIMS {
            return Err(bad("rank above 16"));
        }
        let word = |i: usize| -> Result<[u8; 8], TensorError> {
            bytes
                .get(i..i + 8)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| bad("header shorter than its rank"))
        };
        let shape = (0..ndim)
            .map(|i| word(16 + 8 * i).map(u64::from_le_bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let strides = (0..ndim)
            .map(|i| word(16 + 8 * (ndim + i)).map(i64::from_le_bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let meta = TensorMeta {
            dtype,
            shape,
            strides,
        };
        let offset = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
        if offset != meta.header_bytes() {
            return Err(bad("data offset does not match the rank"));
        }
        let len = meta.data_bytes()?;
        let data = bytes
            .get(offset..offset + len)
            .ok_or_else(|| bad("object shorter than its shape"))?;
        Ok(TensorView { meta, data })
    }

    /// The data as a typed slice, without copying.
    pub fn as_slice<T: Element>(&self) -> Result<&'a [T], TensorError> {
        if T::DTYPE != self.meta.dtype {
            return Err(TensorError::WrongDType {
                stored: self.meta.dtype,
                asked: T::DTYPE,
            });
        }
        bytemuck::try_cast_slice(self.data)
            .map_err(|e| TensorError::BadHeader(format!("data not castable: {e:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_data_is_aligned() {
        let meta = TensorMeta::contiguous(DType::F32, &[3, 4, 5]);
        assert_eq!(meta.strides, vec![20, 5, 1]);
        assert_eq!(meta.header_bytes() % 64, 0);
        let mut obj = meta.encode_header();
        let values: Vec<f32> = (0..60).map(|i| i as f32).collect();
        obj.extend_from_slice(bytemuck::cast_slice(&values));
        let v = TensorView::parse(&obj).unwrap();
        assert_eq!(v.meta, meta);
        assert_eq!(v.as_slice::<f32>().unwrap()[59], 59.0);
        assert!(matches!(
            v.as_slice::<i64>(),
            Err(TensorError::WrongDType { .. })
        ));
        assert!(TensorView::parse(&obj[..obj.len() - 1]).is_err());
        assert!(TensorView::parse(b"garbage garbage garbage").is_err());
        let empty = TensorMeta::contiguous(DType::I64, &[0, 7]);
        assert_eq!(empty.data_bytes().unwrap(), 0);
    }
}
