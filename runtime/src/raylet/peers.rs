//! The raylet's peers: where each live node listens, which nodes the head
//! has declared dead (both from the head's status, refreshed at every
//! heartbeat), and one cached QUIC connection per peer. Invariant:
//!
//! - **PE-1** every wait on a peer (a spilled task's answer, an actor call
//!   stream, an object pull, an address lookup) ends when the head declares
//!   that peer dead: [`Peers::lost`] resolves as soon as the status that says
//!   so arrives, without waiting for QUIC's idle timeout (30 s), which is far
//!   longer than failure detection.

use crate::ids::NodeId;
use crate::proto::common::{ClusterStatus, NodeState};
use crate::transport::tls::ClientTrust;
use crate::transport::{BoxConn, Endpoint};
use prism_scheduler::NodeResources;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Default)]
struct View {
    addrs: HashMap<NodeId, SocketAddr>,
    lost: HashMap<NodeId, String>,
}

/// What this raylet knows of the other nodes, and its connections to them.
#[derive(Debug)]
pub struct Peers {
    endpoint: Arc<dyn Endpoint>,
    trust: ClientTrust,
    conns: tokio::sync::Mutex<HashMap<SocketAddr, BoxConn>>,
    view: Mutex<View>,
    /// Bumped whenever the view changes (addresses learned, nodes lost).
    changed: watch::Sender<u64>,
}

impl Peers {
    /// Peers dialled from `endpoint` with `trust` (this node's certificate).
    pub fn new(endpoint: Arc<dyn Endpoint>, trust: ClientTrust) -> Arc<Peers> {
        Arc::new(Peers {
            endpoint,
            trust,
            conns: tokio::sync::Mutex::new(HashMap::new()),
            view: Mutex::new(View::default()),
            changed: watch::channel(0).0,
        })
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes in the head's status; returns the live nodes other than `me`
    /// with their resources, for the local scheduler's view.
    pub fn update(&self, status: &ClusterStatus, me: NodeId) -> Vec<(NodeId, NodeResources)> {
        let mut addrs = HashMap::new();
        let mut alive = Vec::new();
        let mut view = self.view();
        for n in &status.nodes {
            if n.state == NodeState::Dead {
                let why = n
                    .death_reason
                    .clone()
                    .unwrap_or_else(|| "declared dead".into());
                view.lost.entry(n.node_id).or_insert(why);
            }
            if n.node_id == me || n.state != NodeState::Alive {
                continue;
            }
            if let Ok(a) = n.address.parse() {
                addrs.insert(n.node_id, a);
            }
            // DR-1: a draining peer still serves its calls and objects, but
            // takes no new work.
            if n.draining.is_none() {
                alive.push((n.node_id, n.to_resources()));
            }
        }
        view.addrs = addrs;
        drop(view);
        self.changed.send_modify(|v| *v += 1);
        alive
    }

    /// The head declared `node` dead (this node's own old id, heard from
    /// the head before the status that says so): waits on it end (PE-1).
    pub fn declare_lost(&self, node: NodeId, why: &str) {
        self.view()
            .lost
            .entry(node)
            .or_insert_with(|| why.to_string());
        self.changed.send_modify(|v| *v += 1);
    }

    /// Why the head declared `node` dead, if it did.
    pub fn lost_reason(&self, node: NodeId) -> Option<String> {
        self.view().lost.get(&node).cloned()
    }

    /// Resolves with why, once the head has declared `node` dead (PE-1).
    pub async fn lost(&self, node: NodeId) -> String {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(why) = self.lost_reason(node) {
                return why;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Runs `fut` unless the head declares `node` dead first; then `Err`
    /// says so (PE-1).
    pub async fn unless_lost<T>(
        &self,
        node: NodeId,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, String> {
        tokio::select! {
            r = fut => Ok(r),
            why = self.lost(node) => Err(format!("node {node} died ({why})")),
        }
    }

    /// The address of `node`. A node the head has just placed something on
    /// (a placement-group bundle) may be newer than this raylet's last
    /// status refresh: wait up to `wait` for it, unless it is declared dead.
    pub async fn addr(&self, node: NodeId, wait: Duration) -> Option<SocketAddr> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            {
                let view = self.view();
                if let Some(a) = view.addrs.get(&node) {
                    return Some(*a);
                }
                if view.lost.contains_key(&node) {
                    return None;
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// A cached connection to the raylet at `addr`. The cache is not held
    /// while dialling: a peer that does not answer delays no other.
    pub async fn connect(&self, addr: SocketAddr) -> Result<BoxConn, String> {
        if let Some(c) = self.conns.lock().await.get(&addr) {
            return Ok(c.clone());
        }
        let c = self
            .endpoint
            .connect(addr, &self.trust)
            .await
            .map_err(|e| e.to_string())?;
        Ok(self.conns.lock().await.entry(addr).or_insert(c).clone())
    }

    /// Forgets a cached connection that failed.
    pub fn forget(self: &Arc<Self>, addr: SocketAddr) {
        let me = self.clone();
        tokio::spawn(async move {
            me.conns.lock().await.remove(&addr);
        });
    }
}
