//! The two-phase reservation of placement-group bundles on raylets, as a
//! pure step machine in the head core (the requests are `groups.rs`). A pass (HC-2: one at a time) goes through its phases, each a
//! batch of [`Effect::Bundles`] (one per node) whose replies come back
//! through [`HeadCore::bundles_done`]:
//!
//! ```text
//! Return   give back bundles of removed groups (so the plan sees the room)
//! Prepare  plan every waiting group on the nodes' free resources, then
//!          reserve: one Prepare per node (commit at once for a group on one node)
//! Commit   commit the groups that span nodes and were prepared everywhere
//! Undo     give back what a refusal (or a removal meanwhile) left half-held
//! ```
//!
//! Groups that cannot be placed stay pending (or infeasible) with the
//! reason, and are tried again every [`RETRY_EVERY`] or when something
//! changes (a node joins, a group is created or removed).

use super::{Clock, Effect, HeadCore};
use crate::head::pg_table::PlaceWork;
use crate::ids::{NodeId, PlacementGroupId};
use crate::proto::common::{NodeState, Resources};
use crate::proto::placement::{BundleOp, BundleReply, BundleSpec, PgState, PgStrategyWire};
use prism_scheduler::{place_bundles, ClusterView, PgDecision, ResourceSet};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tracing::debug;

/// How often waiting groups are tried again without a nudge.
pub const RETRY_EVERY: Duration = Duration::from_millis(500);
/// The longest `Wait` a caller may ask for.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(3600);

/// The placement machinery's state.
#[derive(Debug, Default)]
pub(crate) struct Placing {
    pass: Option<Pass>,
    next_pass: u64,
    /// Something changed since the last pass started.
    pub(super) nudged: bool,
    /// When the last pass started.
    pub(super) last_pass: Option<Instant>,
    /// Bundles to give back at the start of the next pass.
    pub(super) returns: Vec<(NodeId, String, BundleOp)>,
    pub(super) waiters: Vec<Waiter>,
    pub(super) next_waiter: u64,
}

impl Placing {
    /// Something changed: run a pass soon.
    pub(crate) fn nudge(&mut self) {
        self.nudged = true;
    }
}

/// The plan index each operation to a node serves (`None`: a return or
/// an undo), in send order.
type Tags = Vec<Option<usize>>;

/// One operation for a node, tagged with the plan it serves.
type TaggedOp = (NodeId, String, BundleOp, Option<usize>);

#[derive(Debug)]
pub(super) struct Waiter {
    pub(super) id: u64,
    pub(super) pg: PlacementGroupId,
    pub(super) deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Return,
    Prepare,
    Commit,
    Undo,
}

#[derive(Debug)]
struct Pass {
    id: u64,
    phase: Phase,
    planned: Vec<Planned>,
    addrs: HashMap<NodeId, String>,
    /// Nodes asked in this phase and not answered yet, with the plan index
    /// each of their operations serves (`None`: a return or an undo).
    waiting: HashMap<NodeId, Tags>,
}

/// One group's plan in a pass.
#[derive(Debug)]
struct Planned {
    work: PlaceWork,
    nodes: Vec<NodeId>,
    prepared: Vec<NodeId>,
    /// Nodes whose prepare got no answer: they may hold it all the same.
    unanswered: Vec<NodeId>,
    failure: Option<String>,
}

impl Planned {
    /// The whole group on one node (not a reschedule): prepare and commit
    /// in one step.
    fn one_step(&self) -> bool {
        self.work.holding.is_empty() && self.nodes_used().len() == 1
    }

    fn nodes_used(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = Vec::new();
        for n in &self.nodes {
            if !v.contains(n) {
                v.push(*n);
            }
        }
        v
    }

    /// This attempt's bundles on `node`.
    fn bundles_on(&self, node: NodeId) -> impl Iterator<Item = &(u32, ResourceSet)> {
        self.work
            .bundles
            .iter()
            .zip(&self.nodes)
            .filter(move |(_, n)| **n == node)
            .map(|(b, _)| b)
    }
}

pub(super) fn settled(state: PgState) -> bool {
    matches!(
        state,
        PgState::Created | PgState::Infeasible | PgState::Removed
    )
}

impl HeadCore {
    /// Answers settled or expired waits; starts a pass when one is due.
    pub(super) fn placement_step(&mut self, now: Clock) {
        self.answer_waiters(now);
        if self.placing.pass.is_some() {
            return;
        }
        let due = self
            .placing
            .last_pass
            .is_none_or(|t| now.at.duration_since(t) >= RETRY_EVERY)
            && !self.groups.work().is_empty();
        if self.placing.nudged || due {
            self.start_pass(now);
        }
    }

    pub(super) fn placement_tick(&mut self, now: Clock) {
        self.placement_step(now);
    }

    fn start_pass(&mut self, now: Clock) {
        let p = &mut self.placing;
        p.nudged = false;
        p.last_pass = Some(now.at);
        p.next_pass += 1;
        let returns = std::mem::take(&mut p.returns);
        let mut pass = Pass {
            id: p.next_pass,
            phase: Phase::Return,
            planned: Vec::new(),
            addrs: HashMap::new(),
            waiting: HashMap::new(),
        };
        if returns.is_empty() {
            self.plan_and_prepare(now, pass);
        } else {
            let ops = returns.into_iter().map(|(n, a, op)| (n, a, op, None));
            self.send_phase(&mut pass, ops.collect());
            self.placing.pass = Some(pass);
        }
    }

    /// Sends one phase's operations, batched per node.
    fn send_phase(&mut self, pass: &mut Pass, ops: Vec<TaggedOp>) {
        let mut per_node: Vec<(NodeId, String, Vec<BundleOp>, Tags)> = Vec::new();
        for (node, addr, op, tag) in ops {
            match per_node.iter_mut().find(|(n, ..)| *n == node) {
                Some((_, _, v, t)) => {
                    v.push(op);
                    t.push(tag);
                }
                None => per_node.push((node, addr, vec![op], vec![tag])),
            }
        }
        for (node, addr, ops, tags) in per_node {
            pass.waiting.insert(node, tags);
            self.push(Effect::Bundles {
                pass: pass.id,
                node,
                addr,
                ops,
            });
        }
    }

    /// Plans every waiting group on the nodes' free resources and sends the
    /// prepares; ends the pass if there is nothing to reserve.
    fn plan_and_prepare(&mut self, now: Clock, mut pass: Pass) {
        pass.phase = Phase::Prepare;
        let work = self.groups.work();
        // Free resources first; what leases hold (taken back for bundles,
        // L-3) only for groups that do not fit without it, so that a node
        // whose CPUs are only leased is never preferred to a free one.
        let mut view: ClusterView<NodeId> = ClusterView::new();
        let mut leased_too: ClusterView<NodeId> = ClusterView::new();
        for n in self.nodes.status(now.at) {
            // DR-1: no new bundle on a draining node.
            if n.state == NodeState::Alive && n.draining.is_none() {
                view.upsert(n.node_id, n.to_resources());
                leased_too.upsert(n.node_id, n.to_bundle_resources());
                pass.addrs.insert(n.node_id, n.address.clone());
            }
        }
        for w in work {
            let decision = match plan(&view, &w) {
                PgDecision::Wait => plan(&leased_too, &w),
                other => other,
            };
            match decision {
                PgDecision::Place(nodes) => {
                    for ((_, res), node) in w.bundles.iter().zip(&nodes) {
                        let _ = view.allocate(*node, res);
                        let _ = leased_too.allocate(*node, res);
                    }
                    pass.planned.push(Planned {
                        work: w,
                        nodes,
                        prepared: Vec::new(),
                        unanswered: Vec::new(),
                        failure: None,
                    });
                }
                PgDecision::Wait => {
                    let why = "waiting for resources: the cluster can hold it, but not with what is free now";
                    self.groups.not_placed(w.pg, why.into(), false);
                }
                PgDecision::Infeasible(why) => {
                    self.groups
                        .not_placed(w.pg, format!("infeasible: {why}"), true);
                }
            }
        }
        let mut ops = Vec::new();
        for (i, p) in pass.planned.iter().enumerate() {
            for node in p.nodes_used() {
                let bundles = p
                    .bundles_on(node)
                    .map(|(index, res)| BundleSpec {
                        index: *index,
                        resources: Resources::from(res),
                    })
                    .collect();
                let op = BundleOp::Prepare {
                    pg: p.work.pg,
                    bundles,
                    commit: p.one_step(),
                };
                ops.push((node, addr_of(&pass, node), op, Some(i)));
            }
        }
        self.send_or_advance(now, pass, ops);
    }

    /// Sends `ops` as the pass's current phase, or moves on if there are none.
    fn send_or_advance(&mut self, now: Clock, mut pass: Pass, ops: Vec<TaggedOp>) {
        if ops.is_empty() {
            self.advance(now, pass);
        } else {
            self.send_phase(&mut pass, ops);
            self.placing.pass = Some(pass);
        }
    }

    /// A raylet answered (or could not be asked) the operations of `pass`
    /// sent to `node`: one reply per operation, in order.
    pub fn bundles_done(
        &mut self,
        now: Clock,
        pass: u64,
        node: NodeId,
        result: Result<Vec<BundleReply>, String>,
    ) {
        if let Ok(replies) = &result {
            if let Some(free) = replies.iter().rev().find_map(|r| match r {
                BundleReply::Done { available } => Some(available.to_set()),
                BundleReply::Refused { .. } => None,
            }) {
                self.nodes.set_available(node, free);
            }
        }
        let Some(mut p) = self.placing.pass.take().filter(|p| p.id == pass) else {
            self.placement_step(now);
            return;
        };
        let Some(tags) = p.waiting.remove(&node) else {
            self.placing.pass = Some(p);
            return;
        };
        // No answer, or not one per operation: it may hold them anyway.
        let unanswered = !matches!(&result, Ok(r) if r.len() == tags.len());
        let outcomes: Vec<Result<(), String>> = match result {
            Ok(r) if r.len() == tags.len() => r
                .into_iter()
                .map(|r| match r {
                    BundleReply::Done { .. } => Ok(()),
                    BundleReply::Refused { reason } => Err(reason),
                })
                .collect(),
            Ok(r) => {
                let e = format!("{} answers to {} operations", r.len(), tags.len());
                vec![Err(e); tags.len()]
            }
            Err(e) => vec![Err(e); tags.len()],
        };
        for (tag, outcome) in tags.into_iter().zip(outcomes) {
            let Some(i) = tag else { continue };
            let planned = &mut p.planned[i];
            match (p.phase, outcome) {
                (Phase::Prepare, Ok(())) => planned.prepared.push(node),
                (Phase::Prepare, Err(e)) => {
                    if unanswered {
                        planned.unanswered.push(node);
                    }
                    planned
                        .failure
                        .get_or_insert(format!("node {node} refused: {e}"));
                }
                (Phase::Commit, Err(e)) => {
                    planned
                        .failure
                        .get_or_insert(format!("node {node} could not commit: {e}"));
                }
                _ => {}
            }
        }
        if p.waiting.is_empty() {
            self.advance(now, p);
        } else {
            self.placing.pass = Some(p);
        }
    }

    /// Every node answered this phase: on to the next.
    fn advance(&mut self, now: Clock, mut pass: Pass) {
        match pass.phase {
            Phase::Return => self.plan_and_prepare(now, pass),
            Phase::Prepare => {
                pass.phase = Phase::Commit;
                let mut ops = Vec::new();
                for (i, p) in pass.planned.iter().enumerate() {
                    if !p.one_step() && p.failure.is_none() {
                        for node in &p.prepared {
                            let op = BundleOp::Commit { pg: p.work.pg };
                            ops.push((*node, addr_of(&pass, *node), op, Some(i)));
                        }
                    }
                }
                self.send_or_advance(now, pass, ops);
            }
            Phase::Commit => {
                pass.phase = Phase::Undo;
                let undo = self.record(&pass);
                self.send_or_advance(now, pass, undo);
            }
            Phase::Undo => {
                self.placing.pass = None;
                self.placement_step(now);
            }
        }
    }

    /// Records each group's outcome; returns what must be given back
    /// (a refusal, or a removal that overtook the reservation).
    fn record(&mut self, pass: &Pass) -> Vec<TaggedOp> {
        let mut undo = Vec::new();
        for p in &pass.planned {
            let at: Vec<(u32, NodeId, String)> = p
                .work
                .bundles
                .iter()
                .zip(&p.nodes)
                .map(|((i, _), n)| (*i, *n, addr_of(pass, *n)))
                .collect();
            if p.failure.is_none() && self.groups.placed(p.work.pg, &at) {
                debug!(pg = %p.work.pg, bundles = at.len(), "placement group reserved");
                continue;
            }
            // A node that did not answer may have prepared (late, after
            // the call's deadline): it is told to give back too, which
            // changes nothing where it holds nothing.
            for node in p.prepared.iter().chain(&p.unanswered) {
                // Only this attempt's bundles: a rescheduled group may hold
                // surviving bundles on the same node.
                let only = p.bundles_on(*node).map(|(i, _)| *i).collect();
                let op = BundleOp::Return {
                    pg: p.work.pg,
                    reason: "placement attempt abandoned".into(),
                    only,
                };
                undo.push((*node, addr_of(pass, *node), op, None));
            }
            if let Some(why) = &p.failure {
                self.groups.not_placed(p.work.pg, why.clone(), false);
            }
        }
        undo
    }
}

fn addr_of(pass: &Pass, node: NodeId) -> String {
    pass.addrs.get(&node).cloned().unwrap_or_default()
}

/// Where the bundles that need a node go. Re-placing after a node loss
/// keeps the strategy's promise against the bundles that survived.
fn plan(view: &ClusterView<NodeId>, w: &PlaceWork) -> PgDecision<NodeId> {
    let bundles: Vec<ResourceSet> = w.bundles.iter().map(|(_, b)| b.clone()).collect();
    let strategy = w.strategy.into();
    if w.holding.is_empty() {
        return place_bundles(view, &bundles, strategy);
    }
    let mut narrowed = ClusterView::new();
    for (id, n) in view.nodes() {
        let keep = match w.strategy {
            PgStrategyWire::StrictSpread => !w.holding.contains(&id),
            PgStrategyWire::StrictPack => w.holding.contains(&id),
            _ => true,
        };
        if keep {
            narrowed.upsert(id, n.clone());
        }
    }
    place_bundles(&narrowed, &bundles, strategy)
}
