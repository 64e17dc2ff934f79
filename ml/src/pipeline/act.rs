//! A tensor between pipeline stages, as it crosses an actor call.

use tch::Tensor;

/// A tensor between stages: its shape and its f32 values.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Act {
    /// Shape.
    pub shape: Vec<i64>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl Act {
    /// From a tch tensor (copied to the host).
    pub fn of(t: &Tensor) -> Result<Act, String> {
        let t = t.f_contiguous().map_err(|e| e.to_string())?;
        let n = t.numel();
        let mut data = vec![0f32; n];
        t.f_view([-1])
            .and_then(|v| v.f_copy_data(&mut data, n))
            .map_err(|e| e.to_string())?;
        Ok(Act {
            shape: t.size(),
            data,
        })
    }

    pub(super) fn tensor(&self) -> Result<Tensor, String> {
        Tensor::f_from_slice(&self.data)
            .and_then(|t| t.f_view(self.shape.as_slice()))
            .map_err(|e| e.to_string())
    }
}
