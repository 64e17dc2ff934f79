//! Placement of one task or actor: hybrid, spread, node affinity and label
//! selectors. Pure: the same view, request and cursor give the same answer.

use crate::labels::LabelSelector;
use crate::quantity::Quantity;
use crate::resources::{ResourceSet, CPU, GPU};
use crate::view::{ClusterView, NodeKey, NodeResources};

/// Where a request may go.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy<N> {
    /// Pack on the preferred node until it is busier than the threshold, then
    /// on the least-utilised node (Ray's default).
    Hybrid,
    /// Round-robin over nodes that can take it.
    Spread,
    /// On this node; when `soft`, elsewhere if it is dead or can never fit it.
    NodeAffinity {
        /// The node.
        node: N,
        /// Fall back to hybrid when the node is gone or infeasible.
        soft: bool,
    },
    /// Hybrid among the nodes whose labels match.
    Labels(LabelSelector),
    /// Round-robin over the nodes whose labels match (a spread kept inside
    /// a residency rule).
    SpreadLabels(LabelSelector),
    /// On this node while it is alive, matches and can ever fit the
    /// request; else hybrid among the nodes that match (a soft affinity
    /// kept inside a residency rule).
    PreferNode {
        /// The node.
        node: N,
        /// The labels every node it may go to must match.
        within: LabelSelector,
    },
}

/// Why no node can ever run a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Infeasible<N> {
    /// No node has enough of this resource in total.
    MissingResource {
        /// The resource.
        resource: String,
        /// The amount asked.
        requested: Quantity,
        /// The largest total any candidate node has.
        largest_total: Quantity,
    },
    /// Every resource exists in enough amount somewhere, but never together.
    NoSingleNode(ResourceSet),
    /// A hard node-affinity target is unknown or dead.
    NodeUnavailable(N),
    /// No live node matches the label selector.
    NoMatchingLabels(String),
    /// STRICT_SPREAD needs more distinct nodes than can hold the bundles.
    NotEnoughNodes {
        /// Bundles to spread.
        needed: usize,
        /// Nodes that could hold one at most.
        usable: usize,
    },
    /// The request itself is malformed.
    InvalidRequest(String),
    /// The cluster has no live node that may take the request.
    NoLiveNodes,
}

impl<N: std::fmt::Debug> std::fmt::Display for Infeasible<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Infeasible::MissingResource {
                resource,
                requested,
                largest_total,
            } => write!(
                f,
                "no node has {requested} {resource} (the largest has {largest_total})"
            ),
            Infeasible::NoSingleNode(r) => write!(f, "no single node has all of {r}"),
            Infeasible::NodeUnavailable(n) => write!(f, "node {n:?} is unknown or dead"),
            Infeasible::NoMatchingLabels(s) => write!(f, "no live node matches labels {s:?}"),
            Infeasible::NotEnoughNodes { needed, usable } => write!(
                f,
                "STRICT_SPREAD needs {needed} distinct nodes but only {usable} can hold a bundle"
            ),
            Infeasible::InvalidRequest(why) => write!(f, "invalid request: {why}"),
            Infeasible::NoLiveNodes => write!(f, "no live node may take the request"),
        }
    }
}

/// The scheduler's answer for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<N> {
    /// Run it there now.
    Place(N),
    /// Feasible but busy: queue it at this node until resources free up.
    Queue(N),
    /// No node can ever run it.
    Infeasible(Infeasible<N>),
}

/// Checks a request's shape: more than one GPU must be whole.
pub fn validate(request: &ResourceSet) -> Result<(), String> {
    let gpu = request.get(GPU);
    if gpu > Quantity::ONE && !gpu.is_whole() {
        return Err(format!(
            "a GPU request above 1 must be a whole number, got {gpu}"
        ));
    }
    Ok(())
}

/// Placement policy with the little state a policy needs (the spread
/// cursor: the node spread placed on last, as any node key type).
#[derive(Debug, Clone)]
pub struct Scheduler {
    /// Utilisation below which hybrid keeps packing (default 0.5).
    pub spread_threshold: f64,
    cursor: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler {
            spread_threshold: 0.5,
            cursor: None,
        }
    }
}

impl Scheduler {
    /// A scheduler with the default threshold.
    pub fn new() -> Scheduler {
        Scheduler::default()
    }

    /// Decides where `request` goes. `preferred` is the node asking (its
    /// local raylet), which hybrid packs first.
    pub fn decide<N: NodeKey>(
        &mut self,
        view: &ClusterView<N>,
        request: &ResourceSet,
        strategy: &Strategy<N>,
        preferred: Option<N>,
    ) -> Decision<N> {
        if let Err(why) = validate(request) {
            return Decision::Infeasible(Infeasible::InvalidRequest(why));
        }
        match strategy {
            Strategy::Hybrid => self.hybrid(view, request, preferred, |_| true),
            Strategy::Spread => self.spread(view, request, |_| true),
            Strategy::SpreadLabels(sel) => no_match(view, sel)
                .unwrap_or_else(|| self.spread(view, request, |n| sel.matches(n.labels()))),
            Strategy::PreferNode { node, within } => {
                on_node(view, request, *node, |n| within.matches(n.labels()))
                    .unwrap_or_else(|| self.labels(view, request, preferred, within))
            }
            Strategy::NodeAffinity { node, soft } => {
                if let Some(d) = on_node(view, request, *node, |_| true) {
                    return d;
                }
                match view.node(*node).filter(|n| n.is_alive()) {
                    Some(_) if !soft => {
                        infeasible(view.alive_nodes().filter(|(k, _)| k == node), request)
                    }
                    None if !soft => Decision::Infeasible(Infeasible::NodeUnavailable(*node)),
                    _ => self.hybrid(view, request, preferred, |_| true),
                }
            }
            Strategy::Labels(sel) => self.labels(view, request, preferred, sel),
        }
    }

    /// Hybrid among the nodes `sel` matches; infeasible when no live node does.
    fn labels<N: NodeKey>(
        &mut self,
        view: &ClusterView<N>,
        request: &ResourceSet,
        preferred: Option<N>,
        sel: &LabelSelector,
    ) -> Decision<N> {
        no_match(view, sel)
            .unwrap_or_else(|| self.hybrid(view, request, preferred, |n| sel.matches(n.labels())))
    }

    fn hybrid<N: NodeKey>(
        &mut self,
        view: &ClusterView<N>,
        request: &ResourceSet,
        preferred: Option<N>,
        allowed: impl Fn(&NodeResources) -> bool,
    ) -> Decision<N> {
        let threshold = self.spread_threshold;
        // No live node has the CPUs free (a saturated cluster): nothing
        // fits now, so it queues or is infeasible — found without trying
        // every node (SC-9).
        let cpus = request.get(CPU);
        if !cpus.is_zero() && view.max_free_cpus().is_none_or(|free| cpus > free) {
            return self.queue_or_infeasible(view, request, preferred, allowed);
        }
        let pref = preferred.and_then(|p| view.node(p).map(|n| (p, n)));
        // Every live node at or over the threshold: each scores its own
        // utilisation, so the winner is the first node that fits in the
        // utilisation index (ties: lowest id), or the preferred node if it
        // fits at the same utilisation (it comes first in traversal order).
        // No scan of every node (SC-7); what cannot be placed now falls
        // through to the scan below (queue or infeasible).
        if view.min_utilization().is_some_and(|u| u >= threshold) {
            let usable = |n: &NodeResources| n.is_alive() && allowed(n) && n.fits_now(request);
            if let Some((id, n)) = view.by_utilization().find(|(_, n)| usable(n)) {
                return Decision::Place(match pref {
                    Some((p, pn)) if usable(pn) && pn.utilization() <= n.utilization() => p,
                    _ => id,
                });
            }
        }
        self.scan(view, request, preferred, allowed)
    }

    /// Where a request nothing can take now waits, as [`Scheduler::scan`]
    /// decides it: the preferred node if it can ever run it; else the
    /// lowest-scoring node that can (below the threshold every node scores
    /// 0 and the lowest id wins; above it the least utilised, then the
    /// lowest id); else infeasible. Visits nodes only until it finds one.
    fn queue_or_infeasible<N: NodeKey>(
        &self,
        view: &ClusterView<N>,
        request: &ResourceSet,
        preferred: Option<N>,
        allowed: impl Fn(&NodeResources) -> bool,
    ) -> Decision<N> {
        let ok = |n: &NodeResources| n.is_alive() && allowed(n) && n.feasible(request);
        if let Some(p) = preferred.filter(|p| view.node(*p).is_some_and(ok)) {
            return Decision::Queue(p);
        }
        let threshold = self.spread_threshold;
        if view.min_utilization().is_some_and(|u| u < threshold) {
            let zero = view
                .alive_nodes()
                .find(|(_, n)| n.utilization() < threshold && ok(n));
            if let Some((id, _)) = zero {
                return Decision::Queue(id);
            }
        }
        match view
            .by_utilization()
            .find(|(_, n)| n.utilization() >= threshold && ok(n))
        {
            Some((id, _)) => Decision::Queue(id),
            None => infeasible(view.alive_nodes().filter(|(_, n)| allowed(n)), request),
        }
    }

    /// Hybrid by visiting every node: the preferred one, then the others
    /// by id (the reference the indexed path must agree with).
    pub(crate) fn scan<N: NodeKey>(
        &self,
        view: &ClusterView<N>,
        request: &ResourceSet,
        preferred: Option<N>,
        allowed: impl Fn(&NodeResources) -> bool,
    ) -> Decision<N> {
        let threshold = self.spread_threshold;
        let pref = preferred.and_then(|p| view.node(p).map(|n| (p, n)));
        // Traversal order: the preferred node, then the others by id.
        let order = pref
            .into_iter()
            .chain(view.nodes().filter(|(k, _)| Some(*k) != preferred))
            .filter(|(_, n)| n.is_alive() && allowed(n));
        // Below the threshold every node scores 0, so the first in traversal
        // order wins (pack); above it the least-utilised wins (spread).
        let mut best: Option<(f64, N)> = None;
        let mut queue_at: Option<(f64, N)> = None;
        for (id, n) in order {
            let u = n.utilization();
            let score = if u < threshold { 0.0 } else { u };
            if n.fits_now(request) {
                if best.is_none_or(|(s, _)| score < s) {
                    best = Some((score, id));
                    if score == 0.0 {
                        break;
                    }
                }
            } else if queue_at.is_none_or(|(s, _)| score < s) && n.feasible(request) {
                queue_at = Some((score, id));
            }
        }
        if let Some((_, id)) = best {
            return Decision::Place(id);
        }
        if let Some((_, id)) = queue_at {
            // Queue locally when the local node can ever run it.
            let id = match pref {
                Some((p, n)) if n.is_alive() && allowed(n) && n.feasible(request) => p,
                _ => id,
            };
            return Decision::Queue(id);
        }
        infeasible(view.alive_nodes().filter(|(_, n)| allowed(n)), request)
    }

    /// Round robin over the live nodes in id order: the first that fits
    /// after the node placed on last, wrapping (SC-8: the same choices as
    /// walking a list of the live nodes by position, without building it:
    /// a decision visits only the nodes it passes over).
    fn spread<N: NodeKey>(
        &mut self,
        view: &ClusterView<N>,
        request: &ResourceSet,
        allowed: impl Fn(&NodeResources) -> bool,
    ) -> Decision<N> {
        let fits = |(_, n): &(N, &NodeResources)| allowed(n) && n.fits_now(request);
        let last = self
            .cursor
            .as_ref()
            .and_then(|c| c.downcast_ref::<N>())
            .copied();
        let found = match last {
            Some(last) => view
                .alive_nodes_after(last)
                .find(fits)
                .or_else(|| view.alive_nodes().find(fits)),
            None => view.alive_nodes().find(fits),
        };
        match found {
            Some((id, _)) => {
                // Overwritten in place: no allocation per decision.
                let slot = self
                    .cursor
                    .as_mut()
                    .and_then(std::sync::Arc::get_mut)
                    .and_then(|c| c.downcast_mut::<N>());
                match slot {
                    Some(c) => *c = id,
                    None => self.cursor = Some(std::sync::Arc::new(id)),
                }
                Decision::Place(id)
            }
            None if view.alive_nodes().next().is_none() => infeasible(view.alive_nodes(), request),
            None => self.hybrid(view, request, None, allowed),
        }
    }

    /// The spread choice as it was made before SC-8, by position in a list
    /// of the live nodes (the reference the cursor by id must agree with).
    #[cfg(test)]
    pub(crate) fn spread_by_position<N: NodeKey>(
        &mut self,
        cursor: &mut usize,
        view: &ClusterView<N>,
        request: &ResourceSet,
    ) -> Decision<N> {
        let nodes: Vec<(N, &NodeResources)> = view.alive_nodes().collect();
        if nodes.is_empty() {
            return infeasible(nodes.into_iter(), request);
        }
        let start = *cursor % nodes.len();
        for step in 0..nodes.len() {
            let i = (start + step) % nodes.len();
            if nodes[i].1.fits_now(request) {
                *cursor = i + 1;
                return Decision::Place(nodes[i].0);
            }
        }
        self.hybrid(view, request, None, |_| true)
    }
}

/// Placed on, or queued at, `node` when it is alive, `allowed` and can
/// ever run `request`; `None` otherwise (the caller falls back).
fn on_node<N: NodeKey>(
    view: &ClusterView<N>,
    request: &ResourceSet,
    node: N,
    allowed: impl Fn(&NodeResources) -> bool,
) -> Option<Decision<N>> {
    let n = view.node(node).filter(|n| n.is_alive() && allowed(n))?;
    if n.fits_now(request) {
        Some(Decision::Place(node))
    } else {
        n.feasible(request).then_some(Decision::Queue(node))
    }
}

/// Infeasible when no live node matches `sel`.
fn no_match<N: NodeKey>(view: &ClusterView<N>, sel: &LabelSelector) -> Option<Decision<N>> {
    let any = view.alive_nodes().any(|(_, n)| sel.matches(n.labels()));
    (!any).then(|| Decision::Infeasible(Infeasible::NoMatchingLabels(sel.to_string())))
}

/// Explains why no node in `candidates` can ever run `request`.
pub(crate) fn infeasible<'a, N: NodeKey + 'a>(
    candidates: impl Iterator<Item = (N, &'a NodeResources)>,
    request: &ResourceSet,
) -> Decision<N> {
    let mut largest = ResourceSet::new();
    let mut any = false;
    for (_, n) in candidates {
        any = true;
        for (name, _) in request.iter() {
            let t = n.total().get(name);
            if t > largest.get(name) {
                largest.set(name, t);
            }
        }
    }
    let why = match request.first_shortfall(&largest) {
        _ if !any => Infeasible::NoLiveNodes,
        Some((name, asked, have)) => Infeasible::MissingResource {
            resource: name.to_string(),
            requested: asked,
            largest_total: have,
        },
        None => Infeasible::NoSingleNode(request.clone()),
    };
    Decision::Infeasible(why)
}
