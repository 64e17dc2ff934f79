//! Prism's placement policy: pure functions over a cluster resource view.
//!
//! No sockets, no clocks, no threads: the raylet and the head feed this crate
//! what they know and act on what it decides, so every decision can be tested
//! and replayed.
//!
//! # The main loop
//!
//! 1. Build a [`ClusterView`] from the nodes' reported resources.
//! 2. Ask a [`Scheduler`] where a request goes under a [`Strategy`]; the
//!    answer is a [`Decision`]: place it, queue it, or it is infeasible (and
//!    which resource is missing).
//! 3. Take the resources with [`ClusterView::allocate`], which also picks GPU
//!    instance indices, and give them back with [`ClusterView::release`].
//!
//! ```
//! use prism_scheduler::*;
//!
//! let mut view = ClusterView::new();
//! view.upsert(1u32, NodeResources::new(ResourceSet::new().with(CPU, Quantity::whole(4))));
//! view.upsert(2u32, NodeResources::new(
//!     ResourceSet::new().with(CPU, Quantity::whole(8)).with(GPU, Quantity::whole(2)),
//! ));
//!
//! let mut sched = Scheduler::new();
//! let ask = ResourceSet::new().with(CPU, Quantity::ONE).with(GPU, Quantity::from_f64(0.5).unwrap());
//! let Decision::Place(node) = sched.decide(&view, &ask, &Strategy::Hybrid, Some(1)) else { panic!() };
//! assert_eq!(node, 2); // only node 2 has a GPU
//! let alloc = view.allocate(node, &ask).unwrap();
//! assert_eq!(alloc.gpu_indices(), vec![0]);
//!
//! let too_big = ResourceSet::new().with(GPU, Quantity::whole(4));
//! let d = sched.decide(&view, &too_big, &Strategy::Hybrid, None);
//! assert_eq!(
//!     d,
//!     Decision::Infeasible(Infeasible::MissingResource {
//!         resource: GPU.into(),
//!         requested: Quantity::whole(4),
//!         largest_total: Quantity::whole(2),
//!     })
//! );
//! view.release(&alloc).unwrap();
//! ```
//!
//! # Invariants
//!
//! - SC-1: quantities are fixed-point; 0.1 taken ten times from 1 is exactly 0.
//! - SC-2: available is always between zero and total.
//! - SC-3: release restores exactly what allocate took.
//! - SC-4: whole GPUs get distinct indices; no index is used beyond 1.0.
//! - SC-5: placement groups are all or nothing.
//! - SC-6: STRICT_SPREAD never puts two bundles on one node.
//! - SC-7: the utilisation index holds exactly the live nodes (hybrid
//!   decides through it as a full scan would).
//! - SC-8: spread round-robins by node id, choosing as a walk by position
//!   over the live nodes would, without listing them.
//! - SC-9: the free-CPU index holds exactly the live nodes; a request no
//!   node has the CPUs for queues (or is infeasible) as the full scan
//!   decides, without trying every node.

#![deny(missing_docs)]

mod bundles;
mod labels;
mod policy;
mod quantity;
mod resources;
mod view;

pub use bundles::{place_bundles, PgDecision, PgStrategy};
pub use labels::{LabelParseError, LabelSelector, LabelTerm};
pub use policy::{validate, Decision, Infeasible, Scheduler, Strategy};
pub use quantity::{Quantity, QuantityError, SCALE};
pub use resources::{ResourceSet, CPU, GPU, MEMORY};
pub use view::{AllocError, Allocation, ClusterView, NodeKey, NodeResources};

#[cfg(test)]
mod tests;
