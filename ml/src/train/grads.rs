//! The host path of a tensor all-reduce: tensors through the ring.

use super::ring::{Ring, Summable};
use crate::{MlError, Result};

/// Contiguous CPU f32 tensors at least this big are reduced where they lie.
const IN_PLACE: usize = 1 << 18;

/// Sums (or averages) `tensors` across the ranks through `ring`, in place.
/// Large contiguous CPU f32 tensors are reduced where they lie (no copy);
/// the others (small, on a GPU, of other kinds) travel together as one flat
/// buffer in host memory: f64 for f64 tensors, f32 for the rest.
pub(crate) fn host_all_reduce(
    ring: &mut Ring,
    tensors: &[&tch::Tensor],
    average: bool,
) -> Result<()> {
    let direct = |g: &tch::Tensor| {
        g.numel() >= IN_PLACE
            && g.is_contiguous()
            && g.kind() == tch::Kind::Float
            && g.device() == tch::Device::Cpu
    };
    for g in tensors.iter().filter(|g| direct(g)) {
        // SAFETY: `g` is a contiguous CPU f32 tensor of `numel` elements
        // that nothing else reads or writes during this call (the caller
        // is between backward() and the optimizer step, on this thread or
        // waiting for it: a pipeline stage's exclusive calls wait for its
        // average to end); the slice does not outlive `g`.
        let buf = unsafe { std::slice::from_raw_parts_mut(g.data_ptr() as *mut f32, g.numel()) };
        ring.all_reduce(buf, average).map_err(MlError::Train)?;
    }
    let (wide, narrow): (Vec<&tch::Tensor>, Vec<&tch::Tensor>) = tensors
        .iter()
        .copied()
        .filter(|g| !direct(g))
        .partition(|g| g.kind() == tch::Kind::Double);
    flat_all_reduce::<f64>(ring, &wide, tch::Kind::Double, average)?;
    flat_all_reduce::<f32>(ring, &narrow, tch::Kind::Float, average)
}

/// All-reduces `tensors` packed into one flat host buffer of `T`.
fn flat_all_reduce<T: Summable + bytemuck::Pod + tch::kind::Element>(
    ring: &mut Ring,
    tensors: &[&tch::Tensor],
    kind: tch::Kind,
    average: bool,
) -> Result<()> {
    let total: usize = tensors.iter().map(|g| g.numel()).sum();
    if total == 0 {
        return Ok(());
    }
    let mut flat = vec![T::zeroed(); total];
    let mut at = 0;
    for g in tensors {
        let n = g.numel();
        g.f_to_device(tch::Device::Cpu)?
            .f_to_kind(kind)?
            .f_contiguous()?
            .f_view([-1])?
            .f_copy_data(&mut flat[at..at + n], n)?;
        at += n;
    }
    ring.all_reduce(&mut flat, average)
        .map_err(MlError::Train)?;
    let mut at = 0;
    for g in tensors {
        let n = g.numel();
        let src = tch::Tensor::f_from_slice(&flat[at..at + n])?
            .f_view(g.size().as_slice())?
            .f_to_device(g.device())?
            .f_to_kind(g.kind())?;
        tch::no_grad(|| g.shallow_clone().f_copy_(&src))?;
        at += n;
    }
    Ok(())
}
