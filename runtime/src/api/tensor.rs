//! Tensors in the object store, read in place.
//!
//! [`put_tensor`] writes a tensor object (the store's format: a fixed
//! header, then 64-byte aligned row-major data; see
//! [`prism_objectstore::TensorMeta`]) straight into this machine's shared
//! segment: one copy, from the caller's bytes into shared memory.
//! [`get_tensor`] returns a [`TensorView`] whose data *is* the shared
//! segment: no copy, in time that does not grow with the tensor. An object
//! on another node is first pulled into this node's store by the raylet,
//! the same path as any `get`.
//!
//! The ref is an ordinary `ObjectRef<Tensor>`: pass it to tasks and actors
//! (top level, where it resolves to an owned [`Tensor`], a copy; or inside
//! a value, where it stays a ref and the callee calls [`get_tensor`]).
//!
//! ```no_run
//! # fn main() -> prism::Result<()> {
//! let _cluster = prism::init()?;
//! let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|x| x.to_le_bytes()).collect();
//! let (rows, cols): (usize, usize) = (2, 2);
//! let r = prism::put_tensor(prism::DType::F32, &[rows, cols], &data)?;
//! let view = prism::get_tensor(&r)?; // pins the object until dropped
//! assert_eq!(view.shape(), &[2, 2]);
//! assert_eq!(view.as_slice::<f32>()?, &[1.0, 2.0, 3.0, 4.0]);
//! # Ok(())
//! # }
//! ```

use super::core::{self, Core};
use super::error::{Error, Result, TaskError};
use super::object_ref::ObjectRef;
use super::value::{Encoded, Value};
use crate::object_store::ObjectError;
use prism_objectstore::{DType, Element, ObjectId, TensorError, TensorMeta};
use std::sync::Arc;
use std::time::Duration;

/// How long a put waits for room in a full store.
const PUT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a `get_tensor` waits without a caller's timeout.
const FOREVER: Duration = Duration::from_secs(30 * 24 * 3600);

/// An owned, row-major tensor in this process's memory. It is what an
/// `ObjectRef<Tensor>` holds: as a task argument, result or `put` value it
/// is stored in the tensor object format, so [`get_tensor`] reads any such
/// object in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    meta: TensorMeta,
    data: Vec<u8>,
}

/// One dimension of a tensor's shape: whatever integer you have (`usize`
/// from `.len()`, `u64`, `u32`, or a literal); negative sizes are refused.
pub trait Dim: Copy {
    /// The size, if it is one.
    fn size(self) -> Option<u64>;
}

macro_rules! dims {
    ($($t:ty),*) => {$(
        impl Dim for $t {
            fn size(self) -> Option<u64> {
                u64::try_from(self).ok()
            }
        }
    )*};
}
dims!(u64, usize, u32, u16, u8, i64, i32, isize);

/// A shape as the store wants it.
fn shape_of<D: Dim>(shape: &[D]) -> Result<Vec<u64>> {
    shape
        .iter()
        .enumerate()
        .map(|(i, d)| {
            d.size().ok_or_else(|| {
                Error::Encode(format!("dimension {i} of the tensor's shape is negative"))
            })
        })
        .collect()
}

impl Tensor {
    /// A row-major tensor; `data` must be exactly `shape`'s elements.
    pub fn new<D: Dim>(dtype: DType, shape: &[D], data: Vec<u8>) -> Result<Tensor> {
        let meta = TensorMeta::contiguous(dtype, &shape_of(shape)?);
        check_len(&meta, data.len())?;
        Ok(Tensor { meta, data })
    }

    /// A row-major tensor of `values`.
    pub fn from_slice<T: Element, D: Dim>(shape: &[D], values: &[T]) -> Result<Tensor> {
        Tensor::new(T::DTYPE, shape, bytemuck::cast_slice(values).to_vec())
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.meta.dtype
    }

    /// Extent of each dimension.
    pub fn shape(&self) -> &[u64] {
        &self.meta.shape
    }

    /// The row-major data.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The data as `T`s (copied when `data` is not aligned for `T`).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.meta.dtype {
            return Err(ObjectError::from(TensorError::WrongDType {
                stored: self.meta.dtype,
                asked: T::DTYPE,
            })
            .into());
        }
        let mut out = vec![T::zeroed(); self.data.len() / std::mem::size_of::<T>()];
        bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(&self.data);
        Ok(out)
    }
}

fn check_len(meta: &TensorMeta, len: usize) -> Result<()> {
    let want = meta.data_bytes().map_err(ObjectError::from)?;
    if len != want {
        return Err(ObjectError::from(TensorError::BadShape(format!(
            "{len} data bytes for shape {:?} of {:?}, which needs {want}",
            meta.shape, meta.dtype
        )))
        .into());
    }
    Ok(())
}

fn is_contiguous(meta: &TensorMeta) -> bool {
    meta.shape.contains(&0) || TensorMeta::contiguous(meta.dtype, &meta.shape) == *meta
}

impl Value for Tensor {
    fn encode(&self) -> Result<Encoded> {
        let mut out = Encoded::with_capacity(self.meta.header_bytes() + self.data.len());
        out.extend_from_slice(&self.meta.encode_header());
        out.extend_from_slice(&self.data);
        Ok(out)
    }

    fn decode(bytes: &[u8]) -> Result<Tensor> {
        let bad = |e: TensorError| Error::Decode {
            type_name: "prism::Tensor",
            detail: e.to_string(),
        };
        let view = prism_objectstore::TensorView::parse(bytes).map_err(bad)?;
        if !is_contiguous(&view.meta) {
            return Err(bad(TensorError::BadShape(
                "a strided tensor object cannot be read as a row-major prism::Tensor".into(),
            )));
        }
        Ok(Tensor {
            meta: view.meta,
            data: view.data.to_vec(),
        })
    }

    fn encoded_len(&self) -> Result<usize> {
        Ok(self.meta.header_bytes() + self.data.len())
    }

    fn encode_into(&self, out: &mut [u8]) -> Result<()> {
        write_object(&self.meta, &self.data, out)
    }
}

/// Writes header and data into `out`, which is exactly the object's size.
fn write_object(meta: &TensorMeta, data: &[u8], out: &mut [u8]) -> Result<()> {
    let header = meta.encode_header();
    if out.len() != header.len() + data.len() {
        return Err(Error::Encode(format!(
            "a {}-byte tensor object in {} bytes",
            header.len() + data.len(),
            out.len()
        )));
    }
    let (h, d) = out.split_at_mut(header.len());
    h.copy_from_slice(&header);
    d.copy_from_slice(data);
    Ok(())
}

/// Puts a row-major tensor into this machine's object store, copying `data`
/// once, straight into the shared segment. `shape` may be of any integer
/// type (`&[rows, cols]` with `usize`s works). Inside a resident task it
/// is put under that task's rule.
pub fn put_tensor<D: Dim>(dtype: DType, shape: &[D], data: &[u8]) -> Result<ObjectRef<Tensor>> {
    match super::residency::inherited() {
        Some(rule) => super::residency::put_tensor_resident(dtype, shape, data, rule),
        None => put_tensor_as(ObjectId::random(), dtype, shape, data),
    }
}

/// [`put_tensor`] under a chosen id (a resident object's, whose rule the
/// head holds already).
pub(crate) fn put_tensor_as<D: Dim>(
    id: ObjectId,
    dtype: DType,
    shape: &[D],
    data: &[u8],
) -> Result<ObjectRef<Tensor>> {
    let meta = TensorMeta::contiguous(dtype, &shape_of(shape)?);
    check_len(&meta, data.len())?;
    let core = core::current()?;
    let len = meta.header_bytes() + data.len();
    let offset = core.store.create(id, len, true, PUT_TIMEOUT)?;
    // SAFETY: this client just created the object: until it seals it, the
    // range is its alone (no reader can get an unsealed object, OS-3), and
    // it is exactly the object's `len` bytes.
    let out = unsafe { core.store.segment().bytes_mut(offset, len) };
    let written = out
        .map_err(|e| Error::Encode(e.to_string()))
        .and_then(|out| write_object(&meta, data, out));
    if let Err(e) = written {
        let _ = core.store.abort(id);
        return Err(e);
    }
    core.store.seal(id)?;
    Ok(core.adopt_stored(id))
}

/// The tensor behind `r`, read in place from this machine's shared segment
/// (pulled from another node first if it lives elsewhere). Blocks until the
/// object exists.
pub fn get_tensor(r: &ObjectRef<Tensor>) -> Result<TensorView> {
    TensorView::acquire(core::current()?, r.id(), None)
}

/// Like [`get_tensor`], failing with [`Error::Timeout`] after `timeout`.
pub fn get_tensor_timeout(r: &ObjectRef<Tensor>, timeout: Duration) -> Result<TensorView> {
    TensorView::acquire(core::current()?, r.id(), Some(timeout))
}

/// A tensor object read in place: its data is the shared segment's pages,
/// not a copy. The object is pinned in the store (never moved, spilled or
/// evicted, OS-3) until the view is dropped. Read-only: sealed objects
/// never change (OS-1).
pub struct TensorView {
    core: Arc<Core>,
    id: ObjectId,
    meta: TensorMeta,
    data: *const u8,
    len: usize,
}

// SAFETY: the view only reads immutable (sealed, OS-1) bytes of a mapping
// that `core` keeps alive; the release on drop goes through the store
// client's mutex. Nothing in it is tied to the creating thread.
unsafe impl Send for TensorView {}
// SAFETY: as above; every method takes `&self` and only reads.
unsafe impl Sync for TensorView {}

impl std::fmt::Debug for TensorView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorView")
            .field("id", &self.id)
            .field("dtype", &self.meta.dtype)
            .field("shape", &self.meta.shape)
            .field("data", &self.data)
            .finish()
    }
}

impl TensorView {
    fn acquire(core: Arc<Core>, id: ObjectId, timeout: Option<Duration>) -> Result<TensorView> {
        core.ensure_stored(id, timeout)?;
        let wait = timeout.unwrap_or(FOREVER);
        // Here and sealed: no need to lend this task's CPUs while waiting.
        let here = matches!(core.store.info(id), Ok(Some(i)) if i.sealed);
        let got = if here {
            core.store.acquire(id, wait)
        } else {
            core.blocking(|| core.store.acquire(id, wait))
        };
        let bytes = match got {
            Ok(b) => b,
            Err(ObjectError::Refused { .. } | ObjectError::GetTimeout { .. })
                if timeout.is_some() =>
            {
                return Err(Error::Timeout {
                    what: format!("object {id}"),
                    ms: wait.as_millis() as u64,
                })
            }
            Err(ObjectError::Refused { message, .. }) => {
                return Err(TaskError::ObjectLost {
                    task: "get_tensor".into(),
                    object: id.to_string(),
                    detail: message,
                }
                .into())
            }
            Err(e) => return Err(e.into()),
        };
        let (meta, data, len) = match prism_objectstore::TensorView::parse(bytes) {
            Ok(v) => (v.meta, v.data.as_ptr(), v.data.len()),
            Err(e) => {
                let _ = core.store.release(id);
                return Err(ObjectError::from(e).into());
            }
        };
        Ok(TensorView {
            core,
            id,
            meta,
            data,
            len,
        })
    }

    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.meta.dtype
    }

    /// Extent of each dimension.
    pub fn shape(&self) -> &[u64] {
        &self.meta.shape
    }

    /// Step of each dimension, in elements (row-major for `put_tensor`'s).
    pub fn strides(&self) -> &[i64] {
        &self.meta.strides
    }

    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.meta.shape.iter().product()
    }

    /// The data bytes, in the shared segment (64-byte aligned).
    pub fn data(&self) -> &[u8] {
        // SAFETY: `data..data+len` was checked inside the mapping by
        // `Segment::bytes`; the mapping lives as long as `self.core`, and the
        // object stays sealed and in place while we hold its reference.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }

    /// The data's address in this process (inside the store's mapping).
    pub fn as_ptr(&self) -> *const u8 {
        self.data
    }

    /// The data as a typed slice, in place.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        if T::DTYPE != self.meta.dtype {
            return Err(ObjectError::from(TensorError::WrongDType {
                stored: self.meta.dtype,
                asked: T::DTYPE,
            })
            .into());
        }
        bytemuck::try_cast_slice(self.data()).map_err(|e| {
            ObjectError::from(TensorError::BadHeader(format!("data not castable: {e:?}"))).into()
        })
    }

    /// The address range of this machine's shared segment in this process
    /// (for checks that a view really is in place).
    pub fn segment_range(&self) -> std::ops::Range<usize> {
        let seg = self.core.store.segment();
        seg.base_addr()..seg.base_addr() + seg.len()
    }

    /// An owned copy.
    pub fn to_tensor(&self) -> Result<Tensor> {
        if !is_contiguous(&self.meta) {
            return Err(ObjectError::from(TensorError::BadShape(
                "a strided tensor object cannot be copied as a row-major prism::Tensor".into(),
            ))
            .into());
        }
        Ok(Tensor {
            meta: self.meta.clone(),
            data: self.data().to_vec(),
        })
    }
}

impl Drop for TensorView {
    fn drop(&mut self) {
        // A failed release means the raylet is gone, which releases it anyway.
        let _ = self.core.store.release(self.id);
    }
}
