//! Prism: an actor-based distributed runtime for Rust, in the family of Ray.
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

pub mod api;
pub mod client;
pub mod config;
pub mod head;
pub mod ids;
pub mod metrics;
pub mod node;
pub mod object_store;
pub mod proto;
pub mod raylet;
pub mod session;
pub mod token;
pub mod transport;
pub mod views;

#[doc(hidden)]
pub use api::__private;
pub use api::channel;
pub use api::{
    cancel, free, get, get_actor, get_actor_in, get_all, get_placement_group, get_tensor,
    get_tensor_timeout, get_timeout, gpu_ids, init, is_worker, kill, list_placement_groups,
    node_id, put, put_tensor, report_run, wait, ActorClass, ActorHandle, ActorLink, ActorOptions,
    Arg, Bundle, Cluster, Dim, Error, InitOptions, IntoArg, ObjectRef, PlacementGroup,
    PlacementStrategy, Result, TaskError, TaskOptions, Tensor, TensorView, Value,
};
pub use config::Config;
pub use ids::{ActorId, PlacementGroupId};
pub use ids::{ClusterId, JobId, NodeId};
pub use prism_macros::{actor, remote};
pub use prism_objectstore::{DType, Element, ObjectId};
