//! The cluster resource view: per node, what it has, what is free, and which
//! GPU instances are free; allocation and exact release.
//!
//! Invariants (cited by the code and named in the tests):
//! - SC-2: a node's available amount of every resource is between zero and its total.
//! - SC-3: releasing an allocation restores exactly what it took.
//! - SC-4: whole-GPU requests get distinct instance indices; a fractional
//!   request takes one index and no index is ever used beyond 1.0.
//! - SC-7: the utilisation index holds exactly the live nodes, each under
//!   its current utilisation (every change goes through the view).
//! - SC-9: so does the free-CPU index, each under its free CPUs.

use crate::quantity::Quantity;
use crate::resources::{ResourceSet, CPU, GPU};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::hash::Hash;

/// What a node id must be for the scheduler: cheap to copy and ordered, so
/// that every decision is deterministic.
pub trait NodeKey: Copy + Ord + Hash + Debug + Send + Sync + 'static {}
impl<T: Copy + Ord + Hash + Debug + Send + Sync + 'static> NodeKey for T {}

/// One node's resources, labels and liveness as the scheduler sees them.
#[derive(Debug, Clone)]
pub struct NodeResources {
    total: ResourceSet,
    available: ResourceSet,
    /// Free fraction of each GPU instance, by index (SC-4).
    gpu_free: Vec<Quantity>,
    labels: BTreeMap<String, String>,
    alive: bool,
    /// Cached [`NodeResources::utilization`], refreshed on every change.
    util: f64,
}

/// Why an allocation or release was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The node is not in the view.
    #[error("node is not in the cluster view")]
    UnknownNode,
    /// The node is dead.
    #[error("node is dead")]
    NodeDead,
    /// The request does not fit in what is free now.
    #[error("not enough {resource}: asked {asked}, available {available}")]
    Insufficient {
        /// The first resource that is short.
        resource: String,
        /// How much was asked.
        asked: Quantity,
        /// How much is free.
        available: Quantity,
    },
    /// Enough GPU in total, but not on instances that can hold the request.
    #[error("GPU instances are fragmented: no instance set holds {0} GPU")]
    GpuFragmented(Quantity),
    /// More than one GPU must be a whole number.
    #[error("a GPU request above 1 must be a whole number, got {0}")]
    FractionalMultiGpu(Quantity),
    /// The release would take the node above its total (a double release).
    #[error("release of {0} would exceed the node's total")]
    OverRelease(String),
}

/// Resources taken on one node, including the GPU instances chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation<N> {
    /// Where.
    pub node: N,
    /// What was taken.
    pub resources: ResourceSet,
    /// `(gpu index, fraction of it)`, empty when no GPU was asked.
    pub gpus: Vec<(u32, Quantity)>,
}

impl<N> Allocation<N> {
    /// The GPU indices in the allocation, for `CUDA_VISIBLE_DEVICES`.
    pub fn gpu_indices(&self) -> Vec<u32> {
        self.gpus.iter().map(|(i, _)| *i).collect()
    }
}

impl NodeResources {
    /// A node with `total` resources, all free. A fractional GPU total is
    /// rounded down to whole instances.
    pub fn new(total: ResourceSet) -> NodeResources {
        let gpus = total.get(GPU).whole_units().max(0) as usize;
        let mut total = total;
        total.set(GPU, Quantity::whole(gpus as u32));
        NodeResources {
            available: total.clone(),
            total,
            gpu_free: vec![Quantity::ONE; gpus],
            labels: BTreeMap::new(),
            alive: true,
            util: 0.0,
        }
    }

    /// A ledger over slices of GPU instances, as a placement-group bundle
    /// holds them: instance `i` offers `gpu_slices[i]` of one GPU (a bundle
    /// of 0.5 GPU is one instance with half of it free). The GPU total is
    /// the slices' sum, whatever `total` said.
    pub fn with_gpu_slices(total: ResourceSet, gpu_slices: Vec<Quantity>) -> NodeResources {
        let mut total = total;
        let sum = gpu_slices
            .iter()
            .fold(Quantity::whole(0), |acc, q| acc + *q);
        total.set(GPU, sum);
        NodeResources {
            available: total.clone(),
            total,
            gpu_free: gpu_slices,
            labels: BTreeMap::new(),
            alive: true,
            util: 0.0,
        }
    }

    /// Builder: attach labels.
    pub fn with_labels(mut self, labels: BTreeMap<String, String>) -> NodeResources {
        self.labels = labels;
        self
    }

    /// Everything the node has.
    pub fn total(&self) -> &ResourceSet {
        &self.total
    }

    /// What is free now.
    pub fn available(&self) -> &ResourceSet {
        &self.available
    }

    /// The node's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// True while the node is alive.
    pub fn is_alive(&self) -> bool {
        self.alive
    }

    /// Free fraction of each GPU instance.
    pub fn gpu_free(&self) -> &[Quantity] {
        &self.gpu_free
    }

    /// Highest utilisation over the node's resources, in `[0, 1]`.
    pub fn utilization(&self) -> f64 {
        self.util
    }

    fn refresh_utilization(&mut self) {
        self.util = self
            .total
            .iter()
            .filter(|(_, t)| !t.is_zero())
            .map(|(name, t)| 1.0 - self.available.get(name).raw() as f64 / t.raw() as f64)
            .fold(0.0, f64::max);
    }

    /// True if the request could ever run here (against the total).
    pub fn feasible(&self, request: &ResourceSet) -> bool {
        request.fits_in(&self.total)
    }

    /// True if the request fits in what is free now, GPU instances included.
    pub fn fits_now(&self, request: &ResourceSet) -> bool {
        request.fits_in(&self.available) && self.gpus_fit(request.get(GPU))
    }

    /// [`NodeResources::pick_gpus`] would succeed; no allocation (hot path).
    fn gpus_fit(&self, asked: Quantity) -> bool {
        if asked.is_zero() {
            true
        } else if asked < Quantity::ONE {
            self.gpu_free.iter().any(|free| *free >= asked)
        } else {
            asked.is_whole()
                && self
                    .gpu_free
                    .iter()
                    .filter(|f| **f == Quantity::ONE)
                    .count() as i64
                    >= asked.whole_units()
        }
    }

    fn pick_gpus(&self, asked: Quantity) -> Result<Vec<(u32, Quantity)>, AllocError> {
        if asked.is_zero() {
            return Ok(Vec::new());
        }
        if asked < Quantity::ONE {
            // Best fit: the fullest instance that still holds the fraction, so
            // that whole GPUs stay free for whole-GPU requests.
            let best = self
                .gpu_free
                .iter()
                .enumerate()
                .filter(|(_, free)| **free >= asked)
                .min_by_key(|(i, free)| (**free, *i));
            return best
                .map(|(i, _)| vec![(i as u32, asked)])
                .ok_or(AllocError::GpuFragmented(asked));
        }
        if !asked.is_whole() {
            return Err(AllocError::FractionalMultiGpu(asked));
        }
        let want = asked.whole_units() as usize;
        let picked: Vec<(u32, Quantity)> = self
            .gpu_free
            .iter()
            .enumerate()
            .filter(|(_, free)| **free == Quantity::ONE)
            .take(want)
            .map(|(i, _)| (i as u32, Quantity::ONE))
            .collect();
        if picked.len() == want {
            Ok(picked)
        } else {
            Err(AllocError::GpuFragmented(asked))
        }
    }

    /// Takes `request` from what is free, choosing GPU instances (SC-2, SC-4).
    pub fn allocate(&mut self, request: &ResourceSet) -> Result<Vec<(u32, Quantity)>, AllocError> {
        if !self.alive {
            return Err(AllocError::NodeDead);
        }
        if let Some((name, asked, available)) = request.first_shortfall(&self.available) {
            return Err(AllocError::Insufficient {
                resource: name.to_string(),
                asked,
                available,
            });
        }
        let gpus = self.pick_gpus(request.get(GPU))?;
        for (i, q) in &gpus {
            self.gpu_free[*i as usize] -= *q;
        }
        self.available.subtract(request);
        self.refresh_utilization();
        Ok(gpus)
    }

    /// Gives back what [`NodeResources::allocate`] took (SC-3).
    pub fn release(
        &mut self,
        request: &ResourceSet,
        gpus: &[(u32, Quantity)],
    ) -> Result<(), AllocError> {
        let mut after = self.available.clone();
        after.add(request);
        if let Some((name, _, _)) = after.first_shortfall(&self.total) {
            return Err(AllocError::OverRelease(name.to_string()));
        }
        for (i, q) in gpus {
            match self.gpu_free.get(*i as usize) {
                Some(free) if *free + *q <= Quantity::ONE => {}
                _ => return Err(AllocError::OverRelease(format!("GPU instance {i}"))),
            }
        }
        for (i, q) in gpus {
            self.gpu_free[*i as usize] += *q;
        }
        self.available = after;
        self.refresh_utilization();
        Ok(())
    }
}

/// Every node the scheduler may place on, keyed by node id.
#[derive(Debug, Clone)]
pub struct ClusterView<N: NodeKey> {
    nodes: BTreeMap<N, NodeResources>,
    /// Live nodes by (utilisation, id), so that "the least-utilised node
    /// that fits" is found without a scan of every node (SC-7).
    by_util: BTreeSet<(u64, N)>,
    /// Live nodes by (free CPUs, id), so that "no node has the CPUs free"
    /// is known without a scan (SC-9).
    by_free_cpu: BTreeSet<(i64, N)>,
}

impl<N: NodeKey> Default for ClusterView<N> {
    fn default() -> Self {
        ClusterView {
            nodes: BTreeMap::new(),
            by_util: BTreeSet::new(),
            by_free_cpu: BTreeSet::new(),
        }
    }
}

/// An order-preserving key for a utilisation in `[0, 1]` (non-negative
/// floats order as their bits do).
fn util_key(u: f64) -> u64 {
    u.max(0.0).to_bits()
}

impl<N: NodeKey> ClusterView<N> {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    fn unindex(&mut self, id: N) {
        if let Some(n) = self.nodes.get(&id).filter(|n| n.alive) {
            self.by_util.remove(&(util_key(n.util), id));
            self.by_free_cpu.remove(&(n.available.get(CPU).raw(), id));
        }
    }

    fn index(&mut self, id: N) {
        if let Some(n) = self.nodes.get(&id).filter(|n| n.alive) {
            self.by_util.insert((util_key(n.util), id));
            self.by_free_cpu.insert((n.available.get(CPU).raw(), id));
        }
    }

    /// Adds or replaces a node.
    pub fn upsert(&mut self, id: N, node: NodeResources) {
        self.unindex(id);
        self.nodes.insert(id, node);
        self.index(id);
    }

    /// Removes a node from the view.
    pub fn remove(&mut self, id: N) -> Option<NodeResources> {
        self.unindex(id);
        self.nodes.remove(&id)
    }

    /// Marks a node alive or dead; a dead node receives no placement.
    pub fn set_alive(&mut self, id: N, alive: bool) {
        self.unindex(id);
        if let Some(n) = self.nodes.get_mut(&id) {
            n.alive = alive;
        }
        self.index(id);
    }

    /// Live nodes from the least utilised up (ties by id).
    pub fn by_utilization(&self) -> impl Iterator<Item = (N, &NodeResources)> {
        self.by_util.iter().map(|(_, id)| (*id, &self.nodes[id]))
    }

    /// Live nodes from the fewest free CPUs up (ties by id).
    pub fn by_free_cpus(&self) -> impl Iterator<Item = (N, &NodeResources)> {
        self.by_free_cpu
            .iter()
            .map(|(_, id)| (*id, &self.nodes[id]))
    }

    /// The most CPUs free on one live node.
    pub fn max_free_cpus(&self) -> Option<Quantity> {
        self.by_free_cpu.last().map(|(c, _)| Quantity::from_raw(*c))
    }

    /// The lowest utilisation of a live node.
    pub fn min_utilization(&self) -> Option<f64> {
        self.by_utilization().next().map(|(_, n)| n.util)
    }

    /// One node.
    pub fn node(&self, id: N) -> Option<&NodeResources> {
        self.nodes.get(&id)
    }

    /// All nodes in id order.
    pub fn nodes(&self) -> impl Iterator<Item = (N, &NodeResources)> {
        self.nodes.iter().map(|(k, v)| (*k, v))
    }

    /// All live nodes in id order.
    pub fn alive_nodes(&self) -> impl Iterator<Item = (N, &NodeResources)> {
        self.nodes().filter(|(_, n)| n.alive)
    }

    /// The live nodes after `id`, in id order.
    pub fn alive_nodes_after(&self, id: N) -> impl Iterator<Item = (N, &NodeResources)> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.nodes
            .range((Excluded(id), Unbounded))
            .map(|(k, v)| (*k, v))
            .filter(|(_, n)| n.alive)
    }

    /// Number of nodes, live or dead.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the view has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Takes `request` on `node`.
    pub fn allocate(
        &mut self,
        node: N,
        request: &ResourceSet,
    ) -> Result<Allocation<N>, AllocError> {
        self.unindex(node);
        let taken = match self.nodes.get_mut(&node) {
            Some(n) => n.allocate(request),
            None => Err(AllocError::UnknownNode),
        };
        self.index(node);
        let gpus = taken?;
        Ok(Allocation {
            node,
            resources: request.clone(),
            gpus,
        })
    }

    /// Gives an allocation back.
    pub fn release(&mut self, alloc: &Allocation<N>) -> Result<(), AllocError> {
        self.unindex(alloc.node);
        let given = match self.nodes.get_mut(&alloc.node) {
            Some(n) => n.release(&alloc.resources, &alloc.gpus),
            None => Err(AllocError::UnknownNode),
        };
        self.index(alloc.node);
        given
    }
}
