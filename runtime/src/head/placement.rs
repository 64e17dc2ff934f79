//! The head's placement-group manager: the table's I/O shell. One task
//! places waiting groups in turn (so two groups never race for the same
//! free resources): it plans with `prism_scheduler::place_bundles` on the
//! nodes' last reported free resources, then reserves on the raylets in two
//! phases (prepare everywhere, then commit everywhere; any refusal gives
//! back what was prepared and leaves the group pending). A group on one
//! node is prepared and committed in one step.

use super::pg_table::{PgTable, PlaceWork};
use crate::ids::{JobId, NodeId, PlacementGroupId};
use crate::proto::common::{ClusterStatus, NodeState, Resources};
use crate::proto::head::{ErrorKind, HeadResponse};
use crate::proto::placement::{BundleOp, BundleReply, BundleSpec, PgCreate, PgState};
use crate::proto::raylet::PeerRequest;
use crate::transport::rpc::{read_msg, write_msg};
use crate::transport::tls::ClientTrust;
use crate::transport::{BoxConn, Endpoint};
use prism_scheduler::{place_bundles, ClusterView, PgDecision, ResourceSet};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

/// How often waiting groups are tried again without a nudge.
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// The reason of a group no placement attempt has looked at yet.
pub(super) const NOT_TRIED: &str = "not placed yet";
/// A raylet that does not answer a bundle operation in time refused it.
const RAYLET_TIMEOUT: Duration = Duration::from_secs(5);

enum Event {
    Nudge,
    Return {
        pg: PlacementGroupId,
        nodes: Vec<(NodeId, String)>,
        reason: String,
    },
}

/// What the placer needs from the head's node table.
pub(super) trait NodeSource: Send + Sync + 'static {
    /// The cluster as the head sees it now.
    fn status(&self) -> impl std::future::Future<Output = Option<ClusterStatus>> + Send;
    /// A raylet told us what it has free after a bundle operation.
    fn available(&self, node: NodeId, free: ResourceSet);
}

/// Shared by the request handlers and the placing task.
#[derive(Debug)]
pub(super) struct Placer {
    table: Mutex<PgTable>,
    tx: mpsc::UnboundedSender<Event>,
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Event::Nudge => "Nudge",
            Event::Return { .. } => "Return",
        })
    }
}

fn bad(message: String) -> HeadResponse {
    HeadResponse::Error {
        kind: ErrorKind::BadRequest,
        message,
    }
}

impl Placer {
    fn lock(&self) -> std::sync::MutexGuard<'_, PgTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Records a group and starts placing it; answers at once (pending).
    pub fn create(&self, req: PgCreate) -> HeadResponse {
        let pg = req.pg;
        if let Err(e) = self.lock().create(req) {
            return bad(e);
        }
        let _ = self.tx.send(Event::Nudge);
        HeadResponse::PlacementGroup(self.lock().get(pg).cloned())
    }

    /// One group now.
    pub fn get(&self, pg: PlacementGroupId) -> HeadResponse {
        HeadResponse::PlacementGroup(self.lock().get(pg).cloned())
    }

    /// Every group.
    pub fn list(&self) -> HeadResponse {
        HeadResponse::PlacementGroups(self.lock().list())
    }

    /// Waits until the group is created, infeasible or removed, or
    /// `timeout` (an id not known yet may be a creation still on its way).
    pub async fn wait(&self, pg: PlacementGroupId, timeout: Duration) -> HeadResponse {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let info = self.lock().get(pg).cloned();
            let settled = info.as_ref().is_some_and(|g| {
                matches!(
                    g.state,
                    PgState::Created | PgState::Infeasible | PgState::Removed
                )
            });
            if settled || tokio::time::Instant::now() >= deadline {
                let also_created = self.lock().recent_created(pg);
                return HeadResponse::PlacementGroupWaited {
                    group: info,
                    also_created,
                };
            }
            let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
        }
    }

    /// Removes a group; its bundles are given back in the background.
    pub fn remove(&self, pg: PlacementGroupId, reason: &str) -> HeadResponse {
        match self.lock().remove(pg, reason) {
            Ok(nodes) => {
                let reason = reason.to_string();
                let _ = self.tx.send(Event::Return { pg, nodes, reason });
                self.bump();
                HeadResponse::Ok
            }
            Err(e) => bad(e),
        }
    }

    /// A node died: place its bundles again.
    pub fn node_died(&self, node: NodeId) {
        let hit = self.lock().node_died(node);
        if !hit.is_empty() {
            warn!(%node, groups = hit.len(), "node held placement-group bundles; rescheduling them");
            self.bump();
            let _ = self.tx.send(Event::Nudge);
        }
    }

    /// A job ended: remove the groups it owned (not detached).
    pub fn job_ended(&self, job: JobId) {
        let owned = self.lock().owned_by(job);
        for pg in owned {
            self.remove(pg, &format!("its job {job} ended"));
        }
    }
}

/// Starts the placer; the task ends when the returned `Arc` is dropped
/// everywhere (its channel closes).
pub(super) fn start(
    nodes: impl NodeSource,
    endpoint: Arc<dyn Endpoint>,
    trust: ClientTrust,
) -> Arc<Placer> {
    let (tx, rx) = mpsc::unbounded_channel();
    let placer = Arc::new(Placer {
        table: Mutex::new(PgTable::default()),
        tx,
        changed: watch::channel(0).0,
    });
    let mut worker = Worker {
        placer: Arc::downgrade(&placer),
        nodes,
        endpoint,
        trust,
        conns: HashMap::new(),
    };
    tokio::spawn(async move { worker.run(rx).await });
    placer
}

struct Worker<S> {
    placer: std::sync::Weak<Placer>,
    nodes: S,
    endpoint: Arc<dyn Endpoint>,
    trust: ClientTrust,
    conns: HashMap<SocketAddr, BoxConn>,
}

/// One group's plan in a pass.
struct Planned {
    work: PlaceWork,
    nodes: Vec<NodeId>,
    prepared: Vec<NodeId>,
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
}

impl<S: NodeSource> Worker<S> {
    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        loop {
            let first = match tokio::time::timeout(RETRY_EVERY, rx.recv()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(_) => Event::Nudge,
            };
            let Some(placer) = self.placer.upgrade() else {
                return;
            };
            // Everything queued is handled together: returns batched per
            // node, and one placement pass covers every nudge.
            let mut nudged = false;
            let mut returns: Vec<(NodeId, String, BundleOp)> = Vec::new();
            let mut ev = Some(first);
            while let Some(e) = ev.take().or_else(|| rx.try_recv().ok()) {
                match e {
                    Event::Nudge => nudged = true,
                    Event::Return { pg, nodes, reason } => {
                        for (node, addr) in nodes {
                            let op = BundleOp::Return {
                                pg,
                                reason: reason.clone(),
                                only: Vec::new(),
                            };
                            returns.push((node, addr, op));
                        }
                    }
                }
            }
            if !returns.is_empty() {
                for (node, addr, ops) in by_node(returns) {
                    if let Err(e) = self.call(node, &addr, ops).await {
                        warn!(%node, "cannot return placement-group bundles: {e}");
                    }
                }
                // Freed resources may let waiting groups in.
                nudged = true;
            }
            if nudged {
                self.pass(&placer).await;
            }
        }
    }

    /// Tries every waiting group once: plans them all against the nodes'
    /// free resources, then prepares (one request per node for all the
    /// groups on it), commits the groups that span nodes, and gives back
    /// whatever a refusal left half-reserved.
    async fn pass(&mut self, placer: &Placer) {
        let work = placer.lock().work();
        if work.is_empty() {
            return;
        }
        let Some(status) = self.nodes.status().await else {
            return;
        };
        let mut view: ClusterView<NodeId> = ClusterView::new();
        let mut addrs: HashMap<NodeId, String> = HashMap::new();
        for n in status.nodes.iter().filter(|n| n.state == NodeState::Alive) {
            view.upsert(n.node_id, n.to_resources());
            addrs.insert(n.node_id, n.address.clone());
        }
        let addr = |n: &NodeId| addrs.get(n).cloned().unwrap_or_default();
        let mut planned: Vec<Planned> = Vec::new();
        for w in work {
            match plan(&view, &w) {
                PgDecision::Place(nodes) => {
                    for ((_, res), node) in w.bundles.iter().zip(&nodes) {
                        let _ = view.allocate(*node, res);
                    }
                    planned.push(Planned {
                        work: w,
                        nodes,
                        prepared: Vec::new(),
                        failure: None,
                    });
                }
                PgDecision::Wait => {
                    let why = "waiting for resources: the cluster can hold it, but not with what is free now";
                    placer.lock().not_placed(w.pg, why.into(), false);
                }
                PgDecision::Infeasible(why) => {
                    let why = format!("infeasible: {why}");
                    placer.lock().not_placed(w.pg, why, true);
                }
            }
        }
        // Phase 1: prepare (and commit, for groups on one node).
        let mut ops: Vec<(NodeId, String, BundleOp, usize)> = Vec::new();
        for (i, p) in planned.iter().enumerate() {
            for node in p.nodes_used() {
                let bundles = p
                    .work
                    .bundles
                    .iter()
                    .zip(&p.nodes)
                    .filter(|(_, n)| **n == node)
                    .map(|((index, res), _)| BundleSpec {
                        index: *index,
                        resources: Resources::from(res),
                    })
                    .collect();
                let op = BundleOp::Prepare {
                    pg: p.work.pg,
                    bundles,
                    commit: p.one_step(),
                };
                ops.push((node, addr(&node), op, i));
            }
        }
        for (node, i, r) in self.run_ops(ops).await {
            match r {
                Ok(()) => planned[i].prepared.push(node),
                Err(e) => {
                    let f = &mut planned[i].failure;
                    f.get_or_insert(format!("node {node} refused: {e}"));
                }
            }
        }
        // Phase 2: commit what spans nodes and was prepared everywhere.
        let mut ops = Vec::new();
        for (i, p) in planned.iter().enumerate() {
            if !p.one_step() && p.failure.is_none() {
                for node in &p.prepared {
                    ops.push((*node, addr(node), BundleOp::Commit { pg: p.work.pg }, i));
                }
            }
        }
        for (node, i, r) in self.run_ops(ops).await {
            if let Err(e) = r {
                let f = &mut planned[i].failure;
                f.get_or_insert(format!("node {node} could not commit: {e}"));
            }
        }
        // Record; give back what a refusal (or a removal meanwhile) left.
        let mut undo = Vec::new();
        for p in &planned {
            let at: Vec<(u32, NodeId, String)> = p
                .work
                .bundles
                .iter()
                .zip(&p.nodes)
                .map(|((i, _), n)| (*i, *n, addr(n)))
                .collect();
            let kept = p.failure.is_none() && placer.lock().placed(p.work.pg, &at);
            if kept {
                debug!(pg = %p.work.pg, bundles = at.len(), "placement group reserved");
                continue;
            }
            for node in &p.prepared {
                // Only this attempt's bundles: a rescheduled group may hold
                // surviving bundles on the same node.
                let only = p
                    .work
                    .bundles
                    .iter()
                    .zip(&p.nodes)
                    .filter(|(_, n)| *n == node)
                    .map(|((i, _), _)| *i)
                    .collect();
                let reason = "placement attempt abandoned".to_string();
                let op = BundleOp::Return {
                    pg: p.work.pg,
                    reason,
                    only,
                };
                undo.push((*node, addr(node), op));
            }
            if let Some(why) = &p.failure {
                placer.lock().not_placed(p.work.pg, why.clone(), false);
            }
        }
        for (node, addr, ops) in by_node(undo) {
            let _ = self.call(node, &addr, ops).await;
        }
        placer.bump();
    }

    /// Sends `ops` batched per node; each op's outcome with its tag.
    async fn run_ops(
        &mut self,
        ops: Vec<(NodeId, String, BundleOp, usize)>,
    ) -> Vec<(NodeId, usize, Result<(), String>)> {
        let mut out = Vec::new();
        let tagged = ops.into_iter().map(|(n, a, op, tag)| (n, a, (op, tag)));
        for (node, addr, items) in by_node(tagged.collect()) {
            let (ops, tags): (Vec<BundleOp>, Vec<usize>) = items.into_iter().unzip();
            match self.call(node, &addr, ops).await {
                Ok(replies) => {
                    for (tag, r) in tags.into_iter().zip(replies) {
                        out.push((node, tag, r));
                    }
                }
                Err(e) => {
                    for tag in tags {
                        out.push((node, tag, Err(e.clone())));
                    }
                }
            }
        }
        out
    }

    /// Bundle operations on one raylet, in order, in one request; the
    /// last `Done` updates the head's view of the node.
    async fn call(
        &mut self,
        node: NodeId,
        addr: &str,
        ops: Vec<BundleOp>,
    ) -> Result<Vec<Result<(), String>>, String> {
        let sock: SocketAddr = addr
            .parse()
            .map_err(|e| format!("bad raylet address {addr:?}: {e}"))?;
        let mut last = String::new();
        for _ in 0..2 {
            let conn = match self.conns.get(&sock) {
                Some(c) => c.clone(),
                None => {
                    let c = tokio::time::timeout(
                        RAYLET_TIMEOUT,
                        self.endpoint.connect(sock, &self.trust),
                    )
                    .await
                    .map_err(|_| format!("no answer from {sock}"))?
                    .map_err(|e| e.to_string())?;
                    self.conns.insert(sock, c.clone());
                    c
                }
            };
            match tokio::time::timeout(RAYLET_TIMEOUT, one_call(&conn, &ops)).await {
                Ok(Ok(replies)) if replies.len() == ops.len() => {
                    let mut free = None;
                    let out = replies
                        .into_iter()
                        .map(|r| match r {
                            BundleReply::Done { available } => {
                                free = Some(available);
                                Ok(())
                            }
                            BundleReply::Refused { reason } => Err(reason),
                        })
                        .collect();
                    if let Some(available) = free {
                        self.nodes.available(node, available.to_set());
                    }
                    return Ok(out);
                }
                Ok(Ok(r)) => last = format!("{} answers to {} operations", r.len(), ops.len()),
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("no answer from {sock} in {RAYLET_TIMEOUT:?}"),
            }
            self.conns.remove(&sock);
        }
        Err(last)
    }
}

/// Items grouped per node (with its address), in first-seen order.
type PerNode<T> = Vec<(NodeId, String, Vec<T>)>;

/// Groups `(node, addr, item)` by node, keeping order.
fn by_node<T>(items: Vec<(NodeId, String, T)>) -> PerNode<T> {
    let mut out: PerNode<T> = Vec::new();
    for (node, addr, op) in items {
        match out.iter_mut().find(|(n, _, _)| *n == node) {
            Some((_, _, v)) => v.push(op),
            None => out.push((node, addr, vec![op])),
        }
    }
    out
}

async fn one_call(conn: &BoxConn, ops: &[BundleOp]) -> Result<Vec<BundleReply>, String> {
    let (mut s, mut r) = conn.open_bi().await.map_err(|e| e.to_string())?;
    write_msg(&mut s, &PeerRequest::Bundles(ops.to_vec()))
        .await
        .map_err(|e| e.to_string())?;
    read_msg::<Vec<BundleReply>, _>(&mut r, 16 << 20)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the raylet closed the stream".to_string())
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
            crate::proto::placement::PgStrategyWire::StrictSpread => !w.holding.contains(&id),
            crate::proto::placement::PgStrategyWire::StrictPack => w.holding.contains(&id),
            _ => true,
        };
        if keep {
            narrowed.upsert(id, n.clone());
        }
    }
    place_bundles(&narrowed, &bundles, strategy)
}
