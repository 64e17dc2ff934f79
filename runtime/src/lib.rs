//! Prism: an actor-based distributed runtime for Rust, in the family of Ray.
//!
//! # The model, in order
//!
//! 1. **A cluster** is a head (the tables: nodes, actors, placement groups,
//!    jobs) and one raylet per machine (it schedules, runs worker processes
//!    and holds a shared-memory object store). [`init`] joins the cluster at
//!    `PRISM_ADDRESS`, or starts an embedded one in this process.
//! 2. **Tasks** are functions marked [`remote`]; `f::remote(args)` runs one
//!    in a worker process (this same binary, started in worker mode) and
//!    returns at once with an [`ObjectRef`], a reference to the future
//!    result. [`get`], [`wait`] and `.await` read results.
//! 3. **Objects** are immutable values in the object store of the node that
//!    made them; small ones travel inline. A ref passed as an argument is
//!    resolved before the task runs, wherever the value lies; [`put`] stores
//!    a value yourself. Values cross processes with rkyv (derive `Archive`,
//!    `Serialize`, `Deserialize`); tensors are read in place ([`get_tensor`]).
//! 4. **Ownership**: the process that made a ref owns its object and keeps
//!    what is needed to rebuild it (the task that made it, its lineage); the
//!    object lives while the owner holds refs to it.
//! 5. **Actors** are structs marked [`actor`]: `T::options().spawn(..)` starts
//!    one in its own worker; calls from one handle run in order.
//! 6. **Failures** are values: a task's panic, its worker's or node's death,
//!    cancellation, an infeasible request each come back as a
//!    [`TaskError`] inside [`Error::Task`]; worker and node deaths are retried
//!    first (`max_retries`), actors restart (`max_restarts`).
//! 7. **Placement groups** ([`PlacementGroup`]) reserve bundles of resources
//!    on nodes, all or none, for tasks and actors that must sit together or
//!    apart (a trainer's workers).
//!
//! ```
//! #[prism::remote]
//! fn add(a: u64, b: u64) -> u64 {
//!     a + b
//! }
//!
//! #[prism::actor]
//! struct Total {
//!     n: u64,
//! }
//!
//! #[prism::actor]
//! impl Total {
//!     fn new() -> Self {
//!         Total { n: 0 }
//!     }
//!     fn add(&mut self, by: u64) -> u64 {
//!         self.n += by;
//!         self.n
//!     }
//! }
//!
//! #[prism::remote]
//! fn fails() -> u64 {
//!     panic!("on purpose")
//! }
//!
//! fn main() -> prism::Result<()> {
//!     let _cluster = prism::InitOptions::new().num_cpus(2.0).init()?; // embedded
//!     let two = add::remote(1u64, 1u64)?;
//!     let four = add::remote(&two, &two)?; // refs as arguments
//!     assert_eq!(four.get()?, 4);
//!     let total = Total::options().spawn()?;
//!     total.add(4u64)?;
//!     assert_eq!(total.add(1u64)?.get()?, 5);
//!     match fails::options().max_retries(0).remote()?.get() {
//!         Err(prism::Error::Task(prism::TaskError::Panicked { message, .. })) => {
//!             assert!(message.contains("on purpose"))
//!         }
//!         other => panic!("{other:?}"),
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Layout
//!
//! - [`api`]: the user API (`#[prism::remote]`, `#[prism::actor]`, `init`,
//!   `put`, `get`, `wait`, `cancel`, placement groups, tensors, channels) and
//!   the process's runtime (its raylet connection, the objects it owns).
//! - [`proto`]: the wire contract (rkyv messages, one file per role,
//!   framing, version check); depends on neither tokio nor quinn.
//! - [`transport`]: QUIC with mutual TLS behind the [`transport::Endpoint`]
//!   and [`transport::Connection`] traits; the cluster CA in [`transport::tls`].
//! - [`head`]: the head node: every table in one pure state machine
//!   ([`head::core::HeadCore`]) and the shells that carry out its effects.
//! - [`raylet`]: the per-machine daemon: three doors (local clients, peers,
//!   the head link) around the pure local scheduler, worker processes, the
//!   object store and transfers.
//! - [`node`]: starting a head node (head + its raylet) or a worker node in-process.
//! - [`client`]: talking to the head from raylets, drivers and the CLI.
//! - [`object_store`]: the local object-store client (put, get in place, wait).
//! - [`config`]: every setting with its default and `PRISM_*` variable.
//! - [`session`]: the session directory (keys, pid file, logs) and whether
//!   its daemon still lives.

#![warn(missing_docs)]

pub mod api;
pub mod client;
pub mod config;
pub mod head;
pub mod ids;
pub mod metrics;
pub mod node;
pub mod object_store;
// rkyv's derive makes undocumented helper types for some enums' variants;
// the wire types themselves are documented (checked by review, not lint).
#[allow(missing_docs)]
pub mod proto;
pub mod raylet;
pub mod session;
pub mod token;
pub mod transport;
pub mod views;

#[doc(hidden)]
pub use api::__private;
pub use api::at_rest;
pub use api::channel;
pub use api::cluster;
pub use api::masking;
pub use api::models;
pub use api::{
    cancel, end_run, free, get, get_actor, get_actor_in, get_all, get_placement_group, get_tensor,
    get_tensor_timeout, get_timeout, gpu_ids, init, is_worker, kill, list_placement_groups,
    log_run_params, node_id, put, put_resident, put_tensor, put_tensor_resident, ref_counts,
    report_run, wait, ActorClass, ActorHandle, ActorLink, ActorOptions, Arg, Bundle, Cluster, Dim,
    Error, InitOptions, IntoArg, ObjectRef, PlacementGroup, PlacementStrategy, RefCounts,
    Residency, Result, TaskError, TaskOptions, Tensor, TensorView, Value,
};
pub use config::Config;
pub use ids::{ActorId, PlacementGroupId};
pub use ids::{ClusterId, JobId, NodeId};
pub use prism_macros::{actor, remote};
pub use prism_objectstore::{DType, Element, ObjectId};
