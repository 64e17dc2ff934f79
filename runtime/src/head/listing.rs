//! `prism list tasks|objects`: the head asks every live raylet, over its
//! peer endpoint with the head's node certificate, and merges the answers.
//! A raylet that does not answer in time is left out (and logged): the
//! listing is a snapshot, not a consistent cut.

use super::dialer::RayletDialer;
use crate::proto::common::{ClusterStatus, NodeState};
use crate::proto::head::HeadResponse;
use crate::proto::raylet::PeerRequest;
use crate::proto::state::{StateQuery, StateReply};
use std::sync::Arc;
use tracing::warn;

/// Every live node's answer to `query`, merged.
pub(super) async fn list(
    dialer: &Arc<RayletDialer>,
    status: &ClusterStatus,
    query: StateQuery,
) -> HeadResponse {
    let mut asks = tokio::task::JoinSet::new();
    for n in status.nodes.iter().filter(|n| n.state != NodeState::Dead) {
        let (dialer, node, addr) = (dialer.clone(), n.node_id, n.address.clone());
        let query = query.clone();
        asks.spawn(async move {
            match dialer
                .call::<_, StateReply>(&addr, &PeerRequest::State(query))
                .await
            {
                Ok(reply) => Some(reply),
                Err(e) => {
                    warn!(%node, "state query failed: {e}");
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

/// The jobs the worker `pid` served on the raylet at `addr`
/// ([`StateQuery::PidJobs`]).
pub(super) async fn worker_jobs(
    dialer: &Arc<RayletDialer>,
    addr: &str,
    pid: u32,
) -> Result<Vec<crate::ids::JobId>, String> {
    let req = PeerRequest::State(StateQuery::PidJobs { pid });
    match dialer.call::<_, StateReply>(addr, &req).await {
        Ok(StateReply::Jobs(jobs)) => Ok(jobs),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// One listing from the raylets' replies (pure).
fn merge(query: StateQuery, replies: impl Iterator<Item = StateReply>) -> HeadResponse {
    let (mut tasks, mut objects, mut workers) = (Vec::new(), Vec::new(), Vec::new());
    let mut metrics = Vec::new();
    let mut total = 0;
    for r in replies {
        match r {
            StateReply::Tasks(t) => tasks.extend(t),
            StateReply::Objects(o) => objects.extend(o),
            StateReply::Workers(w) => workers.extend(w),
            StateReply::Metrics(m) => metrics.push(m),
            StateReply::Jobs(_) => {}
            StateReply::TaskPage { rows, total: n } => {
                tasks.extend(rows);
                total += n;
            }
        }
    }
    match query {
        StateQuery::Tasks => {
            tasks.sort_by(|a, b| (a.node_id, &a.task_id).cmp(&(b.node_id, &b.task_id)));
            HeadResponse::Tasks(tasks)
        }
        StateQuery::TaskPage(filter) => {
            filter.newest_first(&mut tasks);
            HeadResponse::TaskPage { rows: tasks, total }
        }
        StateQuery::Objects => {
            objects.sort_by(|a, b| (a.node_id, &a.object_id).cmp(&(b.node_id, &b.object_id)));
            HeadResponse::Objects(objects)
        }
        StateQuery::Workers => {
            workers.sort_by_key(|w| (w.node_id, w.worker_id));
            HeadResponse::Workers(workers)
        }
        StateQuery::PidJobs { .. } => HeadResponse::Error {
            kind: crate::proto::head::ErrorKind::BadRequest,
            message: "a worker's jobs are asked of its own node, not listed".into(),
        },
        StateQuery::Metrics => {
            metrics.sort_by_key(|m| m.node_id);
            HeadResponse::Metrics {
                head_requests: Default::default(),
                nodes: metrics,
            }
        }
    }
}
