//! The user API: `#[prism::remote]` functions, `ObjectRef`s, `put`, `get`,
//! `wait`, `cancel`, and `init()`.
//!
//! ```no_run
//! #[prism::remote]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> prism::Result<()> {
//!     let _cluster = prism::init()?;
//!     let refs = (0..100)
//!         .map(square::remote)
//!         .collect::<prism::Result<Vec<_>>>()?;
//!     let total: u64 = prism::get_all(&refs)?.into_iter().sum();
//!     assert_eq!(total, (0..100u64).map(|x| x * x).sum::<u64>());
//!     Ok(())
//! }
//! ```

pub mod actor;
mod actor_calls;
mod actor_worker;
pub mod at_rest;
mod borrowing;
pub mod channel;
pub mod cluster;
mod connect;
pub(crate) mod core;
mod direct;
mod direct_events;
mod direct_serve;
mod driver_link;
mod error;
mod lease;
mod local;
pub mod masking;
pub mod models;
mod object_ref;
mod options;
mod ownership;
mod placement;
mod put;
mod releases;
mod residency;
mod result_refs;
mod runs;
mod spin;
mod submit;
mod tensor;
mod value;
mod worker;

pub use actor::{get_actor, get_actor_in, kill, ActorClass, ActorHandle, ActorLink, ActorOptions};
pub use error::{Error, Result, TaskError};
pub use local::{init, Cluster, InitOptions};
pub use object_ref::{Arg, IntoArg, ObjectRef};
pub use options::TaskOptions;
pub use placement::{
    get_placement_group, list_placement_groups, Bundle, PlacementGroup, PlacementStrategy,
};
pub use residency::{put_resident, put_tensor_resident, Residency};
pub use runs::{end_run, log_run_params, report_run};
pub use tensor::{get_tensor, get_tensor_timeout, put_tensor, Dim, Tensor, TensorView};
pub use value::Value;

use crate::ids::NodeId;
use std::time::Duration;

/// Puts a value in the object store; readers on this machine get it
/// without copying the bytes from another process.
/// Inside a resident task (`options().resident(rule)`) the object is put
/// under that task's rule.
pub fn put<T: Value>(value: &T) -> Result<ObjectRef<T>> {
    match residency::inherited() {
        Some(rule) => residency::put_resident(value, rule),
        None => core::current()?.put(value),
    }
}

/// Frees an object this process owns now, on every node, even though refs
/// to it were passed on (like Ray's `internal_api.free`): use it when you
/// know every reader is done. Objects whose refs went only into task and
/// actor-call arguments are freed by themselves once every holder drops
/// them; ones archived elsewhere (a `put` value, a result) are otherwise
/// kept until their owner exits. Freeing a ref this process does not own does
/// nothing.
pub fn free<T>(r: &ObjectRef<T>) -> Result<()> {
    core::current()?.free(r.id());
    Ok(())
}

/// What this process tracks: objects it owns and objects it borrows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefCounts {
    /// Objects owned here (results of tasks it submitted, values it put).
    pub owned: usize,
    /// Objects borrowed here (refs received inside values, still held).
    pub borrowed: usize,
}

/// What this process tracks now (to check that a loop does not leak refs).
pub fn ref_counts() -> Result<RefCounts> {
    let core = core::current()?;
    Ok(RefCounts {
        owned: core.owned.len(),
        borrowed: core.borrowed.len(),
    })
}

/// The value behind `r`, waiting for its task.
pub fn get<T: Value>(r: &ObjectRef<T>) -> Result<T> {
    r.get()
}

/// Like [`get`], failing with [`Error::Timeout`] after `timeout`.
pub fn get_timeout<T: Value>(r: &ObjectRef<T>, timeout: Duration) -> Result<T> {
    r.get_timeout(timeout)
}

/// Every value, in order; the first failure is returned.
pub fn get_all<T: Value>(refs: &[ObjectRef<T>]) -> Result<Vec<T>> {
    refs.iter().map(|r| r.get()).collect()
}

/// `(ready, not_ready)` from [`wait`].
pub type Waited<T> = (Vec<ObjectRef<T>>, Vec<ObjectRef<T>>);

/// Ray's `wait`: returns `(ready, not_ready)` once `num_returns` refs are
/// ready or `timeout` (if any) passes. Order within each part is the order given.
pub fn wait<T>(
    refs: &[ObjectRef<T>],
    num_returns: usize,
    timeout: Option<Duration>,
) -> Result<Waited<T>> {
    let ids: Vec<_> = refs.iter().map(|r| r.id).collect();
    let ready = core::current()?.wait(&ids, num_returns, timeout);
    let mut r = Vec::with_capacity(ready.len());
    let mut rest = Vec::with_capacity(refs.len() - ready.len());
    let mut next = ready.iter().peekable();
    for (i, x) in refs.iter().enumerate() {
        if next.next_if_eq(&&i).is_some() {
            r.push(x.clone());
        } else {
            rest.push(x.clone());
        }
    }
    Ok((r, rest))
}

/// Cancels the task behind `r`: a queued task never runs; a running one is
/// killed with its worker when `force`, and otherwise runs on with its
/// result discarded. `get` then fails with [`TaskError::Cancelled`].
pub fn cancel<T>(r: &ObjectRef<T>, force: bool) -> Result<()> {
    core::current()?.cancel(r.id, force)
}

/// The GPU indices given to this worker (empty in a driver or a CPU task).
pub fn gpu_ids() -> Vec<u32> {
    std::env::var(crate::raylet::workers::vars::GPU_IDS)
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The node this process runs on.
pub fn node_id() -> Result<NodeId> {
    Ok(core::current()?.node_id)
}

/// Whether this process is a worker (inside a task).
pub fn is_worker() -> bool {
    std::env::var_os(crate::raylet::workers::vars::WORKER_SOCKET).is_some()
}

/// Used by the code `#[prism::remote]` generates; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use super::actor_worker::{run_actor, ActorImpl, ActorRegistration, LocalCall};
    pub use super::object_ref::EncodedArg;
    pub use super::value::Encoded;
    pub use super::worker::{block_on, decode_arg, encode_result, Registration};
    pub use inventory;

    /// Archives one argument of a generated `remote`, `spawn` or method
    /// stub (a free function, so a type that is not a [`super::Value`]
    /// gets Prism's message rather than one about `Arg`'s methods).
    pub fn encode_arg<T: super::Value>(a: super::Arg<T>) -> super::Result<EncodedArg> {
        a.encode()
    }

    /// Names `T` in a compile error if it is not a [`super::Value`]; the
    /// macros call it first, so that error comes before any other.
    pub const fn assert_value<T: super::Value>() {}

    /// Submits a task (generated `remote` calls end here).
    pub fn submit<R>(
        opts: &super::TaskOptions,
        args: Vec<EncodedArg>,
    ) -> super::Result<super::ObjectRef<R>> {
        super::core::current()?.submit(opts, args)
    }

    /// Whether this process has a direct link to `actor`'s worker (tests
    /// use it to know the next call goes direct).
    pub fn calls_directly(actor: crate::ids::ActorId) -> bool {
        super::core::current().is_ok_and(|c| c.direct.linked(actor))
    }

    /// How many workers this process holds leased (tests).
    pub fn leased_workers() -> usize {
        super::core::current().map_or(0, |c| c.leases.held())
    }

    /// How many of this process's tasks ran on leased workers (tests).
    pub fn tasks_on_leases() -> u64 {
        super::core::current().map_or(0, |c| c.leases.ran())
    }
}
