//! Data residency: an object that may live only on nodes whose label names
//! an allowed place (`region in [in-south, in-west]`). The head keeps the
//! rule with the object's locations and refuses to name a copy to, or
//! record one on, a node outside it (OD-3), so a task placed elsewhere —
//! pinned, spilled back, or an actor restarted on another node — cannot
//! read the object, and gets an error naming the rule.

use super::core::current;
use super::error::{Error, Result};
use super::object_ref::ObjectRef;
use super::value::Value;
pub use crate::proto::common::Residency;
use crate::proto::head::HeadResponse;
use crate::proto::task::LocalRequest;
use prism_objectstore::ObjectId;
use std::time::Duration;

/// Puts `value` where only nodes inside `rule` may hold or read it. This
/// node must itself be inside the rule, or nothing is stored.
///
/// ```no_run
/// let _c = prism::init()?;
/// let rule = prism::Residency::new("region", &["in-south", "in-west"]);
/// let records = prism::put_resident(&vec![1u32, 2, 3], rule)?;
/// # Ok::<(), prism::Error>(())
/// ```
pub fn put_resident<T: Value>(value: &T, rule: Residency) -> Result<ObjectRef<T>> {
    let id = claim(rule)?;
    current()?.put_as(id, value, false)
}

/// [`crate::put_tensor`] with a residency rule (a dataset block that must
/// stay in its region).
pub fn put_tensor_resident<D: super::tensor::Dim>(
    dtype: crate::DType,
    shape: &[D],
    data: &[u8],
    rule: Residency,
) -> Result<ObjectRef<super::tensor::Tensor>> {
    super::tensor::put_tensor_as(claim(rule)?, dtype, shape, data)
}

/// A fresh object id whose rule the head now holds (refused when this
/// node is outside it).
fn claim(rule: Residency) -> Result<ObjectId> {
    let core = current()?;
    let id = ObjectId::random();
    let resp: HeadResponse =
        core.ask_raylet("residency", Duration::from_secs(30), |request_id| {
            LocalRequest::Residency {
                request_id,
                object: id,
                rule,
            }
        })?;
    match resp {
        HeadResponse::Error { message, .. } => Err(Error::Residency(message)),
        _ => Ok(id),
    }
}
