//! `prism list tasks|objects`: the head asks every live raylet, over its
//! peer endpoint with the head's node certificate, and merges the answers.
//! A raylet that does not answer in time is left out (and logged): the
//! listing is a snapshot, not a consistent cut.

use crate::proto::common::{ClusterStatus, NodeState};
use crate::proto::head::HeadResponse;
use crate::proto::raylet::PeerRequest;
use crate::proto::state::{StateQuery, StateReply};
use crate::transport::rpc::{read_msg, write_msg};
use crate::transport::tls::ClientTrust;
use crate::transport::Endpoint;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// How long one raylet has to answer.
const RAYLET_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer accepted from one raylet.
const MAX_ANSWER: usize = 64 << 20;

/// Asks raylets for their state.
pub(super) struct StateQuerier {
    endpoint: Arc<dyn Endpoint>,
    trust: ClientTrust,
}

impl StateQuerier {
    pub(super) fn new(endpoint: Arc<dyn Endpoint>, trust: ClientTrust) -> Arc<StateQuerier> {
        Arc::new(StateQuerier { endpoint, trust })
    }

    /// Every live node's answer to `query`, merged.
    pub(super) async fn list(
        self: &Arc<Self>,
        status: &ClusterStatus,
        query: StateQuery,
    ) -> HeadResponse {
        let mut asks = tokio::task::JoinSet::new();
        for n in status.nodes.iter().filter(|n| n.state != NodeState::Dead) {
            let (me, node, addr) = (self.clone(), n.node_id, n.address.clone());
            asks.spawn(async move {
                match tokio::time::timeout(RAYLET_TIMEOUT, me.ask(&addr, query)).await {
                    Ok(Ok(reply)) => Some(reply),
                    Ok(Err(e)) => {
                        warn!(%node, "state query failed: {e}");
                        None
                    }
                    Err(_) => {
                        warn!(%node, "state query: no answer in {RAYLET_TIMEOUT:?}");
                        None
                    }
                }
            });
        }
        let mut replies = Vec::new();
        while let Some(r) = asks.join_next().await {
            replies.extend(r.ok().flatten());
        }
        merge(query, replies.into_iter())
    }

    async fn ask(&self, addr: &str, query: StateQuery) -> Result<StateReply, String> {
        let sock: SocketAddr = addr
            .parse()
            .map_err(|e| format!("bad raylet address {addr:?}: {e}"))?;
        let conn = self
            .endpoint
            .connect(sock, &self.trust)
            .await
            .map_err(|e| e.to_string())?;
        let (mut s, mut r) = conn.open_bi().await.map_err(|e| e.to_string())?;
        write_msg(&mut s, &PeerRequest::State(query))
            .await
            .map_err(|e| e.to_string())?;
        read_msg::<StateReply, _>(&mut r, MAX_ANSWER)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the raylet closed the stream".to_string())
    }
}

/// One listing from the raylets' replies (pure).
fn merge(query: StateQuery, replies: impl Iterator<Item = StateReply>) -> HeadResponse {
    let (mut tasks, mut objects) = (Vec::new(), Vec::new());
    for r in replies {
        match r {
            StateReply::Tasks(t) => tasks.extend(t),
            StateReply::Objects(o) => objects.extend(o),
        }
    }
    match query {
        StateQuery::Tasks => {
            tasks.sort_by(|a, b| (a.node_id, &a.task_id).cmp(&(b.node_id, &b.task_id)));
            HeadResponse::Tasks(tasks)
        }
        StateQuery::Objects => {
            objects.sort_by(|a, b| (a.node_id, &a.object_id).cmp(&(b.node_id, &b.object_id)));
            HeadResponse::Objects(objects)
        }
    }
}
