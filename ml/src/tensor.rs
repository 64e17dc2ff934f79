//! `tch::Tensor`s in the object store.
//!
//! [`put`] stores a tensor as a tensor object (`prism::put_tensor`): a GPU
//! tensor is copied to the host first and a non-contiguous one is made
//! contiguous, then its bytes are copied once into shared memory. [`get`]
//! returns a [`SharedTensor`]: a `tch::Tensor` made with `from_blob` over the
//! object's bytes *in the shared segment* — no copy — that keeps the object
//! pinned until it is dropped. [`get_to_device`] copies instead, onto a
//! device of the reader's choice, and the result owns its memory.
//!
//! # Read-only
//!
//! A `SharedTensor` aliases a sealed object that other processes may be
//! reading: never modify it in place, and do not keep `shallow_clone`s or
//! views of it beyond the `SharedTensor` (libtorch does not know the memory
//! is borrowed). Use [`SharedTensor::to_device`] or `detach_copy()` to keep data.

use crate::{MlError, Result};
use prism::{DType, ObjectRef, TensorView};
use tch::{Device, Kind};

/// The object-store dtype of a tch kind.
pub fn dtype_of(kind: Kind) -> Result<DType> {
    Ok(match kind {
        Kind::Float => DType::F32,
        Kind::Double => DType::F64,
        Kind::Half => DType::F16,
        Kind::BFloat16 => DType::BF16,
        Kind::Int64 => DType::I64,
        Kind::Int => DType::I32,
        Kind::Uint8 => DType::U8,
        Kind::Bool => DType::Bool,
        other => return Err(MlError::UnsupportedKind(other)),
    })
}

/// The tch kind of an object-store dtype.
pub fn kind_of(dtype: DType) -> Kind {
    match dtype {
        DType::F32 => Kind::Float,
        DType::F64 => Kind::Double,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        DType::U8 => Kind::Uint8,
        DType::Bool => Kind::Bool,
    }
}

/// The bytes of a contiguous CPU tensor, borrowed.
pub(crate) fn host_bytes(t: &tch::Tensor) -> Result<&[u8]> {
    assert!(t.device() == Device::Cpu && t.is_contiguous());
    let len = t.numel() * t.f_kind()?.elt_size_in_bytes();
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: `t` is a contiguous CPU tensor (asserted), so its storage
    // holds `numel` elements of its kind from `data_ptr` on, and it lives
    // (unchanged: we only hand out a shared borrow) as long as `t`.
    Ok(unsafe { std::slice::from_raw_parts(t.data_ptr() as *const u8, len) })
}

/// A contiguous CPU tensor with `t`'s values (`t` itself when it is one).
pub(crate) fn to_host_contiguous(t: &tch::Tensor) -> tch::Tensor {
    let host = if t.device() == Device::Cpu {
        t.shallow_clone()
    } else {
        t.to_device(Device::Cpu)
    };
    if host.is_contiguous() {
        host
    } else {
        host.contiguous()
    }
}

/// Stores `t` in this machine's object store (one copy into shared memory
/// for a contiguous CPU tensor; GPU and non-contiguous tensors are first
/// made contiguous on the host).
pub fn put(t: &tch::Tensor) -> Result<ObjectRef<prism::Tensor>> {
    let dtype = dtype_of(t.f_kind()?)?;
    let host = to_host_contiguous(t);
    let shape: Vec<u64> = host.size().iter().map(|d| *d as u64).collect();
    Ok(prism::put_tensor(dtype, &shape, host_bytes(&host)?)?)
}

/// The tensor behind `r` as a `tch::Tensor` over the shared segment (no
/// copy), on the CPU. See the module docs: read-only.
pub fn get(r: &ObjectRef<prism::Tensor>) -> Result<SharedTensor> {
    SharedTensor::new(prism::get_tensor(r)?)
}

/// The tensor behind `r`, copied onto `device`; the result owns its memory.
pub fn get_to_device(r: &ObjectRef<prism::Tensor>, device: Device) -> Result<tch::Tensor> {
    get(r)?.to_device(device)
}

/// A stored tensor seen as a `tch::Tensor` in place (dereferences to it).
/// The object stays pinned in the store until this is dropped.
pub struct SharedTensor {
    // Declared first, so dropped before the view that keeps its memory.
    tensor: tch::Tensor,
    view: TensorView,
}

impl std::fmt::Debug for SharedTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTensor")
            .field("view", &self.view)
            .finish()
    }
}

impl SharedTensor {
    /// Wraps a pinned view as a tch tensor, without copying.
    pub fn new(view: TensorView) -> Result<SharedTensor> {
        let size: Vec<i64> = view.shape().iter().map(|d| *d as i64).collect();
        let kind = kind_of(view.dtype());
        // SAFETY: the view's data holds the tensor's elements at its
        // strides (the store checked `data_bytes` against shape and
        // strides when parsing), 64-byte aligned; it stays mapped and
        // unchanged (sealed, OS-1; pinned, OS-3) while `view` lives, and
        // `view` outlives `tensor` (field order). libtorch only reads it
        // through a `&tch::Tensor` (module docs: read-only).
        let tensor = unsafe {
            tch::Tensor::f_from_blob(view.as_ptr(), &size, view.strides(), kind, Device::Cpu)?
        };
        Ok(SharedTensor { tensor, view })
    }

    /// The pinned store object.
    pub fn view(&self) -> &TensorView {
        &self.view
    }

    /// A copy on `device` that owns its memory (a copy on the CPU too).
    pub fn to_device(&self, device: Device) -> Result<tch::Tensor> {
        Ok(if device == Device::Cpu {
            self.tensor.f_detach_copy()?
        } else {
            self.tensor.f_to_device(device)?
        })
    }
}

impl std::ops::Deref for SharedTensor {
    type Target = tch::Tensor;
    fn deref(&self) -> &tch::Tensor {
        &self.tensor
    }
}
