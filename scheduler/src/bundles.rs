//! Placement-group bundles: PACK, SPREAD, STRICT_PACK, STRICT_SPREAD, all or
//! nothing (SC-5: a decision either places every bundle, on nodes that can
//! hold all of them at once, or places none).

use crate::policy::{infeasible, validate, Decision, Infeasible};
use crate::resources::ResourceSet;
use crate::view::{ClusterView, NodeKey, NodeResources};
use std::collections::BTreeMap;

/// How a group's bundles are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PgStrategy {
    /// As few nodes as possible, best effort.
    Pack,
    /// As many nodes as possible, best effort.
    Spread,
    /// All bundles on one node, or wait.
    StrictPack,
    /// Every bundle on a different node (SC-6), or wait.
    StrictSpread,
}

/// The answer for a placement group.
#[derive(Debug, Clone, PartialEq)]
pub enum PgDecision<N> {
    /// Bundle `i` goes to node `nodes[i]`.
    Place(Vec<N>),
    /// The cluster could hold the group but not now.
    Wait,
    /// The cluster can never hold the group.
    Infeasible(Infeasible<N>),
}

/// Decides a node for every bundle, or none.
pub fn place_bundles<N: NodeKey>(
    view: &ClusterView<N>,
    bundles: &[ResourceSet],
    strategy: PgStrategy,
) -> PgDecision<N> {
    for b in bundles {
        if let Err(why) = validate(b) {
            return PgDecision::Infeasible(Infeasible::InvalidRequest(why));
        }
    }
    if bundles.is_empty() {
        return PgDecision::Infeasible(Infeasible::InvalidRequest(
            "a placement group needs at least one bundle".into(),
        ));
    }
    let live: Vec<(N, &NodeResources)> = view.alive_nodes().collect();
    if let Some(nodes) = try_place(&live, bundles, strategy) {
        return PgDecision::Place(nodes);
    }
    // Would it fit on an idle cluster? Then wait; else say why not.
    let idle: Vec<(N, NodeResources)> = live
        .iter()
        .map(|(k, n)| {
            (
                *k,
                NodeResources::new(n.total().clone()).with_labels(n.labels().clone()),
            )
        })
        .collect();
    let idle_refs: Vec<(N, &NodeResources)> = idle.iter().map(|(k, n)| (*k, n)).collect();
    if try_place(&idle_refs, bundles, strategy).is_some() {
        return PgDecision::Wait;
    }
    for b in bundles {
        if let Decision::Infeasible(why) = infeasible(live.iter().copied(), b) {
            if !matches!(why, Infeasible::NoSingleNode(_)) {
                return PgDecision::Infeasible(why);
            }
        }
    }
    PgDecision::Infeasible(match strategy {
        PgStrategy::StrictSpread => Infeasible::NotEnoughNodes {
            needed: bundles.len(),
            usable: live
                .iter()
                .filter(|(_, n)| bundles.iter().any(|b| n.feasible(b)))
                .count(),
        },
        _ => Infeasible::NoSingleNode(sum(bundles)),
    })
}

fn sum(bundles: &[ResourceSet]) -> ResourceSet {
    let mut total = ResourceSet::new();
    bundles.iter().for_each(|b| total.add(b));
    total
}

fn try_place<N: NodeKey>(
    nodes: &[(N, &NodeResources)],
    bundles: &[ResourceSet],
    strategy: PgStrategy,
) -> Option<Vec<N>> {
    match strategy {
        PgStrategy::StrictPack => strict_pack(nodes, bundles),
        PgStrategy::Pack => strict_pack(nodes, bundles).or_else(|| greedy(nodes, bundles, true)),
        PgStrategy::Spread => greedy(nodes, bundles, false),
        PgStrategy::StrictSpread => strict_spread(nodes, bundles),
    }
}

/// All bundles on the first node that holds them together. The sum is a
/// cheap filter; a copy of the node then checks GPU instances exactly.
fn strict_pack<N: NodeKey>(
    nodes: &[(N, &NodeResources)],
    bundles: &[ResourceSet],
) -> Option<Vec<N>> {
    let total = sum(bundles);
    nodes
        .iter()
        .filter(|(_, n)| total.fits_in(n.available()))
        .find_map(|(id, n)| {
            let mut n = (*n).clone();
            bundles
                .iter()
                .all(|b| n.allocate(b).is_ok())
                .then(|| vec![*id; bundles.len()])
        })
}

/// One bundle at a time, copying only the nodes it touches: `pack` prefers
/// nodes the group already uses, spread prefers nodes it does not.
fn greedy<N: NodeKey>(
    nodes: &[(N, &NodeResources)],
    bundles: &[ResourceSet],
    pack: bool,
) -> Option<Vec<N>> {
    let mut touched: BTreeMap<N, NodeResources> = BTreeMap::new();
    let mut used: Vec<N> = Vec::with_capacity(bundles.len());
    for b in bundles {
        let pick = nodes
            .iter()
            .map(|(id, n)| (*id, touched.get(id).unwrap_or(n)))
            .filter(|(_, n)| n.fits_now(b))
            .min_by_key(|(id, _)| {
                (
                    used.contains(id) != pack,
                    used.iter().filter(|u| *u == id).count(),
                )
            })
            .map(|(id, _)| id)?;
        let original = nodes
            .iter()
            .find(|(id, _)| *id == pick)
            .map(|(_, n)| (*n).clone())?;
        touched.entry(pick).or_insert(original).allocate(b).ok()?;
        used.push(pick);
    }
    Some(used)
}

/// A bipartite matching of bundles to distinct nodes (Kuhn's augmenting
/// paths): with one bundle per node, whether a bundle fits a node does not
/// depend on the others, so a matching exists exactly when a placement does.
fn strict_spread<N: NodeKey>(
    nodes: &[(N, &NodeResources)],
    bundles: &[ResourceSet],
) -> Option<Vec<N>> {
    if bundles.len() > nodes.len() {
        return None;
    }
    let ids: Vec<N> = nodes.iter().map(|(id, _)| *id).collect();
    let fits: Vec<Vec<usize>> = bundles
        .iter()
        .map(|b| (0..ids.len()).filter(|&j| nodes[j].1.fits_now(b)).collect())
        .collect();
    let mut owner: Vec<Option<usize>> = vec![None; ids.len()];
    for b in 0..bundles.len() {
        let mut seen = vec![false; ids.len()];
        if !augment(b, &fits, &mut owner, &mut seen) {
            return None;
        }
    }
    let mut out = vec![ids[0]; bundles.len()];
    for (j, o) in owner.iter().enumerate() {
        if let Some(b) = o {
            out[*b] = ids[j];
        }
    }
    Some(out)
}

fn augment(b: usize, fits: &[Vec<usize>], owner: &mut [Option<usize>], seen: &mut [bool]) -> bool {
    for &j in &fits[b] {
        if seen[j] {
            continue;
        }
        seen[j] = true;
        if owner[j].is_none_or(|other| augment(other, fits, owner, seen)) {
            owner[j] = Some(b);
            return true;
        }
    }
    false
}
