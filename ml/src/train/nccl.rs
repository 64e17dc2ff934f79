//! NCCL all-reduce for CUDA gradients (feature `cuda`), through cudarc.
//!
//! A group is made lazily, the first time a rank all-reduces a CUDA tensor:
//! rank 0 draws an NCCL unique id and the ring (the host path, over actor
//! calls) hands it to every rank, which then joins the communicator on the
//! GPU its tensor lives on. From then on every CUDA all-reduce is one NCCL
//! call per tensor, grouped, on the device; nothing passes through the host.
//!
//! libtorch's CUDA half is loaded with `dlopen` here (Rust links with
//! `--as-needed`, which drops `libtorch_cuda.so` from a normal link), and
//! NCCL is found by cudarc as `libnccl.so` on the library path.
//!
//! Ordering: the collectives run on the device's legacy default stream,
//! after a device synchronize, and the stream is synchronized before
//! returning, so libtorch's kernels before and after see the reduced values.

use super::ring::Ring;
use cudarc::driver::{CudaContext, CudaStream, DevicePtrMut, DeviceSlice, SyncOnDrop};
use cudarc::nccl::{Comm, Id, ReduceOp};
use std::sync::Arc;

/// One rank's NCCL communicator.
pub struct NcclGroup {
    comm: Comm,
    stream: Arc<CudaStream>,
    ordinal: usize,
}

impl std::fmt::Debug for NcclGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclGroup")
            .field("rank", &self.comm.rank())
            .field("world", &self.comm.world_size())
            .field("ordinal", &self.ordinal)
            .finish()
    }
}

/// Why the CUDA path cannot run here, or `None` when it can.
pub fn unavailable() -> Option<String> {
    // SAFETY: only probes whether the shared libraries can be opened.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Some("no CUDA driver library (libcuda.so) on this machine".into());
    }
    // SAFETY: as above.
    if !unsafe { cudarc::nccl::sys::is_culib_present() } {
        return Some(
            "libnccl.so is not on the library path (PyPI's nvidia-nccl wheel ships \
             libnccl.so.2: link it as libnccl.so in a directory on LD_LIBRARY_PATH)"
                .into(),
        );
    }
    if let Err(e) = load_torch_cuda() {
        return Some(e);
    }
    if !tch::Cuda::is_available() {
        return Some("libtorch sees no CUDA device".into());
    }
    None
}

/// Loads libtorch's CUDA backend once (it registers itself when loaded).
fn load_torch_cuda() -> Result<(), String> {
    static LOADED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            let dir = option_env!("PRISM_LIBTORCH_LIB").unwrap_or("");
            let path = std::path::Path::new(dir).join("libtorch_cuda.so");
            let c = std::ffi::CString::new(path.to_string_lossy().as_bytes())
                .map_err(|e| e.to_string())?;
            // SAFETY: `c` is a NUL-terminated path; the handle is kept for
            // the process's life on purpose (never dlclose'd).
            let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if h.is_null() {
                return Err(format!(
                    "cannot load {} (a CPU-only libtorch install? run \
                     scripts/setup-libtorch.sh --cuda on the GPU machine)",
                    path.display()
                ));
            }
            Ok(())
        })
        .clone()
}

/// A CUDA tensor's memory as cudarc sees it (borrowed, never freed here).
struct TorchBuf<T> {
    ptr: cudarc::driver::sys::CUdeviceptr,
    len: usize,
    stream: Arc<CudaStream>,
    _t: std::marker::PhantomData<T>,
}

impl<T> DeviceSlice<T> for TorchBuf<T> {
    fn len(&self) -> usize {
        self.len
    }
    fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
}

impl<T> DevicePtrMut<T> for TorchBuf<T> {
    fn device_ptr_mut<'a>(
        &'a mut self,
        _stream: &'a CudaStream,
    ) -> (cudarc::driver::sys::CUdeviceptr, SyncOnDrop<'a>) {
        // Ordering is handled by whole-device synchronization around the
        // collective (see the module docs), so nothing to record here.
        (self.ptr, SyncOnDrop::Sync(None))
    }
}

impl NcclGroup {
    /// Joins the group on CUDA device `ordinal`: collective over `ring`.
    pub fn join(ring: &mut Ring, ordinal: usize) -> Result<NcclGroup, String> {
        if let Some(why) = unavailable() {
            return Err(format!("the NCCL all-reduce cannot run: {why}"));
        }
        // Rank 0's id travels as 128 small integers summed over the ring.
        let mut bytes = vec![0f64; 128];
        if ring.rank() == 0 {
            let id = Id::new().map_err(|e| format!("ncclGetUniqueId: {e:?}"))?;
            for (b, c) in bytes.iter_mut().zip(id.internal()) {
                *b = f64::from(*c as u8);
            }
        }
        ring.all_reduce(&mut bytes, false)?;
        let mut internal = [0 as std::ffi::c_char; 128];
        for (c, b) in internal.iter_mut().zip(&bytes) {
            *c = *b as u8 as std::ffi::c_char;
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| format!("CUDA device {ordinal}: {e}"))?;
        let stream = ctx.default_stream();
        let comm = Comm::from_rank(
            stream.clone(),
            ring.rank(),
            ring.world(),
            Id::uninit(internal),
        )
        .map_err(|e| format!("ncclCommInitRank (rank {}): {e:?}", ring.rank()))?;
        Ok(NcclGroup {
            comm,
            stream,
            ordinal,
        })
    }

    /// The CUDA device this rank's communicator uses.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Sums (or averages) every tensor across the ranks, in place. Each must
    /// be a contiguous f32 or f64 tensor on this group's device.
    pub fn all_reduce(&self, tensors: &[&tch::Tensor], average: bool) -> Result<(), String> {
        for t in tensors {
            let ok_device = t.device() == tch::Device::Cuda(self.ordinal);
            let ok_kind = matches!(t.kind(), tch::Kind::Float | tch::Kind::Double);
            if !ok_device || !ok_kind || !t.is_contiguous() {
                return Err(format!(
                    "NCCL all-reduce needs contiguous f32/f64 tensors on cuda:{}; got {:?} on {:?}",
                    self.ordinal,
                    t.kind(),
                    t.device()
                ));
            }
        }
        let op = if average {
            ReduceOp::Avg
        } else {
            ReduceOp::Sum
        };
        tch::Cuda::synchronize(self.ordinal as i64);
        cudarc::nccl::group_start().map_err(|e| format!("ncclGroupStart: {e:?}"))?;
        let mut result = Ok(());
        for t in tensors {
            let r = match t.kind() {
                tch::Kind::Float => self.reduce_one::<f32>(t, &op),
                _ => self.reduce_one::<f64>(t, &op),
            };
            if result.is_ok() {
                result = r;
            }
        }
        let ended = cudarc::nccl::group_end().map_err(|e| format!("ncclGroupEnd: {e:?}"));
        // Whatever happened, nothing may still write the tensors once this
        // returns: wait for the stream on every path. On an error the
        // caller drops this group (its communicator is aborted on drop).
        let synced = self
            .stream
            .synchronize()
            .map_err(|e| format!("CUDA stream synchronize after the all-reduce: {e}"));
        result.and(ended).and(synced)
    }

    fn reduce_one<T: cudarc::nccl::NcclType>(
        &self,
        t: &tch::Tensor,
        op: &ReduceOp,
    ) -> Result<(), String> {
        let mut buf = TorchBuf::<T> {
            ptr: t.data_ptr() as cudarc::driver::sys::CUdeviceptr,
            len: t.numel(),
            stream: self.stream.clone(),
            _t: std::marker::PhantomData,
        };
        self.comm
            .all_reduce_in_place(&mut buf, op)
            .map(drop)
            .map_err(|e| format!("ncclAllReduce: {e:?}"))
    }
}
