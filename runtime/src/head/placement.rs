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
use tracing::{info, warn};

/// How often waiting groups are tried again without a nudge.
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// How long `create` waits for the group's first placement attempt.
const FIRST_ATTEMPT_WAIT: Duration = Duration::from_secs(2);
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

    /// Records a group and answers after the first placement attempt
    /// (created, or pending/infeasible with the reason), or after a short
    /// bound if the placer is busy.
    pub async fn create(&self, req: PgCreate) -> HeadResponse {
        let pg = req.pg;
        let mut rx = self.changed.subscribe();
        if let Err(e) = self.lock().create(req) {
            return bad(e);
        }
        let _ = self.tx.send(Event::Nudge);
        let deadline = tokio::time::Instant::now() + FIRST_ATTEMPT_WAIT;
        loop {
            let info = self.lock().get(pg).cloned();
            let tried = info
                .as_ref()
                .is_none_or(|g| g.reason.as_deref() != Some(NOT_TRIED));
            if tried || tokio::time::Instant::now() >= deadline {
                return HeadResponse::PlacementGroup(info);
            }
            let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
        }
    }

    /// One group now.
    pub fn get(&self, pg: PlacementGroupId) -> HeadResponse {
        HeadResponse::PlacementGroup(self.lock().get(pg).cloned())
    }

    /// Every group.
    pub fn list(&self) -> HeadResponse {
        HeadResponse::PlacementGroups(self.lock().list())
    }

    /// Waits until the group is created, infeasible or removed, or `timeout`.
    pub async fn wait(&self, pg: PlacementGroupId, timeout: Duration) -> HeadResponse {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let info = self.lock().get(pg).cloned();
            let settled = info.as_ref().is_none_or(|g| {
                matches!(
                    g.state,
                    PgState::Created | PgState::Infeasible | PgState::Removed
                )
            });
            if settled || tokio::time::Instant::now() >= deadline {
                return HeadResponse::PlacementGroup(info);
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

impl<S: NodeSource> Worker<S> {
    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        loop {
            let ev = match tokio::time::timeout(RETRY_EVERY, rx.recv()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(_) => Event::Nudge,
            };
            let Some(placer) = self.placer.upgrade() else {
                return;
            };
            match ev {
                Event::Return { pg, nodes, reason } => {
                    for (node, addr) in nodes {
                        let op = BundleOp::Return {
                            pg,
                            reason: reason.clone(),
                        };
                        if let Err(e) = self.call(node, &addr, op).await {
                            warn!(%pg, %node, "cannot return bundles: {e}");
                        }
                    }
                }
                Event::Nudge => {
                    // Later nudges are covered by this pass.
                    while let Ok(Event::Nudge) = rx.try_recv() {}
                    self.pass(&placer).await;
                }
            }
        }
    }

    /// Tries every waiting group once.
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
        for w in work {
            self.place(placer, &mut view, &addrs, w).await;
            placer.bump();
        }
    }

    async fn place(
        &mut self,
        placer: &Placer,
        view: &mut ClusterView<NodeId>,
        addrs: &HashMap<NodeId, String>,
        w: PlaceWork,
    ) {
        let nodes = match plan(view, &w) {
            PgDecision::Place(nodes) => nodes,
            PgDecision::Wait => {
                let why =
                    "waiting for resources: the cluster can hold it, but not with what is free now";
                placer.lock().not_placed(w.pg, why.into(), false);
                return;
            }
            PgDecision::Infeasible(why) => {
                placer
                    .lock()
                    .not_placed(w.pg, format!("infeasible: {why}"), true);
                return;
            }
        };
        // Group the bundles by node, keeping each bundle's index.
        let mut per_node: Vec<(NodeId, Vec<BundleSpec>)> = Vec::new();
        for ((index, res), node) in w.bundles.iter().zip(&nodes) {
            let spec = BundleSpec {
                index: *index,
                resources: Resources::from(res),
            };
            match per_node.iter_mut().find(|(n, _)| n == node) {
                Some((_, v)) => v.push(spec),
                None => per_node.push((*node, vec![spec])),
            }
        }
        let one_step = per_node.len() == 1 && w.holding.is_empty();
        let mut prepared: Vec<NodeId> = Vec::new();
        let mut failure = None;
        for (node, specs) in &per_node {
            let addr = addrs.get(node).cloned().unwrap_or_default();
            let op = BundleOp::Prepare {
                pg: w.pg,
                bundles: specs.clone(),
                commit: one_step,
            };
            match self.call(*node, &addr, op).await {
                Ok(()) => prepared.push(*node),
                Err(e) => {
                    failure = Some(format!("node {node} refused: {e}"));
                    break;
                }
            }
        }
        if failure.is_none() && !one_step {
            for node in &prepared {
                let addr = addrs.get(node).cloned().unwrap_or_default();
                if let Err(e) = self.call(*node, &addr, BundleOp::Commit { pg: w.pg }).await {
                    failure = Some(format!("node {node} could not commit: {e}"));
                    break;
                }
            }
        }
        let at: Vec<(u32, NodeId, String)> = w
            .bundles
            .iter()
            .zip(&nodes)
            .map(|((i, _), n)| (*i, *n, addrs.get(n).cloned().unwrap_or_default()))
            .collect();
        let kept = failure.is_none() && placer.lock().placed(w.pg, &at);
        if kept {
            for ((_, res), node) in w.bundles.iter().zip(&nodes) {
                let _ = view.allocate(*node, res);
            }
            info!(pg = %w.pg, bundles = w.bundles.len(), "placement group reserved");
            return;
        }
        // Give back what was reserved (a refusal, or removed meanwhile).
        for node in prepared {
            let addr = addrs.get(&node).cloned().unwrap_or_default();
            let reason = "placement attempt abandoned".to_string();
            let _ = self
                .call(node, &addr, BundleOp::Return { pg: w.pg, reason })
                .await;
        }
        if let Some(why) = failure {
            placer.lock().not_placed(w.pg, why, false);
        }
    }

    /// One bundle operation on a raylet; `Done` updates the head's view.
    async fn call(&mut self, node: NodeId, addr: &str, op: BundleOp) -> Result<(), String> {
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
            match tokio::time::timeout(RAYLET_TIMEOUT, one_call(&conn, &op)).await {
                Ok(Ok(BundleReply::Done { available })) => {
                    self.nodes.available(node, available.to_set());
                    return Ok(());
                }
                Ok(Ok(BundleReply::Refused { reason })) => return Err(reason),
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("no answer from {sock} in {RAYLET_TIMEOUT:?}"),
            }
            self.conns.remove(&sock);
        }
        Err(last)
    }
}

async fn one_call(conn: &BoxConn, op: &BundleOp) -> Result<BundleReply, String> {
    let (mut s, mut r) = conn.open_bi().await.map_err(|e| e.to_string())?;
    write_msg(&mut s, &PeerRequest::Bundles(op.clone()))
        .await
        .map_err(|e| e.to_string())?;
    read_msg::<BundleReply, _>(&mut r, 1 << 20)
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
