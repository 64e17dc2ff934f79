//! Restarting an actor whose node died (AT-4 in [`super::actor_table`]):
//! the head picks a live node for its constructor with the same policy the
//! raylets use ([`choose_node`], pure), then hands the creation to that
//! raylet as a spilled task ([`Restarter`], the I/O shell). The new raylet
//! runs the constructor on a fresh worker and reports the actor alive, with
//! its node, like any actor; callers' raylets find it there through
//! `GetActor`.

use super::actor_table::{ActorTable, NodeLoss};
use crate::ids::{ActorId, NodeId};
use crate::proto::common::{ClusterStatus, NodeState};
use crate::proto::raylet::{PeerRequest, PeerSubmit, PeerTaskResponse};
use crate::proto::task::{Failure, Outcome, TaskSpec};
use crate::raylet::dispatch::to_strategy;
use crate::transport::rpc::{read_msg, write_msg};
use crate::transport::tls::ClientTrust;
use crate::transport::Endpoint;
use prism_scheduler::{ClusterView, Decision, Scheduler};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// How long the head waits to reach the chosen raylet.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer accepted (an outcome; results are inline or stored).
const MAX_ANSWER: usize = 16 << 20;

/// Where a lost actor's constructor runs next: a live node that fits its
/// resources and placement, by the raylets' own policy. `Err` says why
/// there is none.
pub(super) fn choose_node(
    status: &ClusterStatus,
    task: &TaskSpec,
) -> Result<(NodeId, String), String> {
    let mut view: ClusterView<NodeId> = ClusterView::new();
    for n in status.nodes.iter().filter(|n| n.state == NodeState::Alive) {
        view.upsert(n.node_id, n.to_resources());
    }
    let strategy = to_strategy(&task.strategy)?;
    let request = task.resources.to_set();
    match Scheduler::new().decide(&view, &request, &strategy, None) {
        Decision::Place(n) | Decision::Queue(n) => {
            let addr = status
                .nodes
                .iter()
                .find(|s| s.node_id == n)
                .map(|s| s.address.clone())
                .unwrap_or_default();
            Ok((n, addr))
        }
        Decision::Infeasible(why) => Err(format!("no live node can host it: {why}")),
    }
}

/// Dials raylets with the head's node certificate to recreate actors.
pub(super) struct Restarter {
    endpoint: Arc<dyn Endpoint>,
    trust: ClientTrust,
}

impl Restarter {
    pub(super) fn new(endpoint: Arc<dyn Endpoint>, trust: ClientTrust) -> Arc<Restarter> {
        Arc::new(Restarter { endpoint, trust })
    }

    /// Acts on what [`ActorTable::node_died`] decided for the actors of the
    /// lost `node`: each restart goes to the node [`choose_node`] picks, or
    /// the actor dies saying why none fits. `failed` hears of restarts that
    /// could not be started (the head marks those actors dead).
    pub(super) fn handle(
        self: &Arc<Self>,
        actors: &mut ActorTable,
        status: &ClusterStatus,
        node: NodeId,
        losses: Vec<NodeLoss>,
        failed: impl Fn(ActorId, String) + Clone + Send + 'static,
    ) {
        for loss in losses {
            let (actor, create) = match loss {
                NodeLoss::Dead(a) => {
                    warn!(actor = %a, %node, "actor dead with its node");
                    continue;
                }
                NodeLoss::Restart(a, create) => (a, create),
            };
            match choose_node(status, &create.task) {
                Ok((target, addr)) => {
                    let failed = failed.clone();
                    self.restart(actor, target, addr, *create, move |why| failed(actor, why));
                }
                Err(why) => {
                    warn!(%actor, %node, "cannot restart the actor: {why}");
                    actors.restart_failed(actor, &format!("it cannot restart: {why}"));
                }
            }
        }
    }

    /// Runs `create` on `node` in the background. `failed` is called with
    /// the reason if the raylet could not be reached or the stream broke
    /// before the constructor's outcome came back; a constructor that
    /// fails there is reported dead by that raylet itself.
    pub(super) fn restart(
        self: &Arc<Self>,
        actor: ActorId,
        node: NodeId,
        addr: String,
        create: PeerSubmit,
        failed: impl FnOnce(String) + Send + 'static,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            info!(%actor, %node, "restarting an actor whose node died");
            match me.submit(&addr, create).await {
                Ok(Outcome::Failed(f)) => {
                    let why = describe(&f);
                    warn!(%actor, %node, "the actor's restart failed: {why}");
                }
                Ok(_) => info!(%actor, %node, "actor restarted"),
                Err(e) => {
                    warn!(%actor, %node, "cannot restart the actor: {e}");
                    failed(format!("its restart on node {node} failed: {e}"));
                }
            }
        });
    }

    async fn submit(&self, addr: &str, create: PeerSubmit) -> Result<Outcome, String> {
        let sock: SocketAddr = addr
            .parse()
            .map_err(|e| format!("bad raylet address {addr:?}: {e}"))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, self.endpoint.connect(sock, &self.trust))
            .await
            .map_err(|_| format!("no answer from {sock}"))?
            .map_err(|e| e.to_string())?;
        let (mut s, mut r) = conn.open_bi().await.map_err(|e| e.to_string())?;
        write_msg(&mut s, &PeerRequest::Submit(Box::new(create)))
            .await
            .map_err(|e| e.to_string())?;
        let resp = read_msg::<PeerTaskResponse, _>(&mut r, MAX_ANSWER)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the raylet closed the stream".to_string())?;
        Ok(resp.outcome)
    }
}

fn describe(f: &Failure) -> String {
    match f {
        Failure::ActorDied { detail, .. } => detail.clone(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ClusterId, JobId};
    use crate::proto::common::{NodeStatus, Resources};
    use crate::proto::task::{TaskKind, WireStrategy};
    use prism_scheduler::{Quantity, ResourceSet};

    fn node(state: NodeState, x: i64) -> NodeStatus {
        let mut total = ResourceSet::new().with("CPU", Quantity::from_f64(2.0).unwrap());
        if x > 0 {
            total.set("x", Quantity::from_f64(x as f64).unwrap());
        }
        let res = Resources::from(&total);
        NodeStatus {
            node_id: NodeId::random(),
            name: String::new(),
            address: "127.0.0.1:1".into(),
            state,
            death_reason: None,
            incarnation: 1,
            is_head: false,
            total: res.clone(),
            available: res,
            labels: Vec::new(),
            gpus: Vec::new(),
            last_heartbeat_ms_ago: 0,
            pid: 0,
        }
    }

    fn status(nodes: Vec<NodeStatus>) -> ClusterStatus {
        ClusterStatus {
            cluster_id: ClusterId::random(),
            head_address: String::new(),
            nodes,
            demand: Vec::new(),
            ended_jobs: Vec::new(),
        }
    }

    fn wants_x() -> TaskSpec {
        let mut t = TaskSpec::new([1; 16], JobId::random(), "C", "C", TaskKind::Task);
        let req = ResourceSet::new().with("x", Quantity::from_f64(1.0).unwrap());
        t.resources = Resources::from(&req);
        t
    }

    #[test]
    fn a_restart_goes_to_a_live_node_that_fits() {
        let s = status(vec![
            node(NodeState::Alive, 0),
            node(NodeState::Dead, 1),
            node(NodeState::Alive, 1),
        ]);
        let (n, addr) = choose_node(&s, &wants_x()).unwrap();
        assert_eq!(n, s.nodes[2].node_id);
        assert_eq!(addr, "127.0.0.1:1");
    }

    #[test]
    fn no_live_node_fits_says_why() {
        let s = status(vec![node(NodeState::Alive, 0), node(NodeState::Dead, 1)]);
        let e = choose_node(&s, &wants_x()).unwrap_err();
        assert!(e.contains("no live node"), "{e}");
        let mut t = wants_x();
        t.strategy = WireStrategy::Labels("zone=a".into());
        assert!(choose_node(&s, &t).is_err());
    }
}
