//! The raylet's door for peers: other raylets and the head reach it over
//! QUIC with a node certificate from the cluster CA. Each stream carries
//! one request: a byte range of a local object (a pull), a spilled task
//! ([`Owner::Spilled`], answered when it ends), an ordered call stream to a
//! local actor ([`Owner::PeerStream`]), placement-group bundle operations,
//! or a state listing. A stream whose request does not arrive in time is
//! closed; bytes that are not a frame drop the whole connection.

use super::dispatch::Owner;
use super::service::TaskService;
use super::store_server::StoreServer;
use crate::ids::{ActorId, NodeId, TaskId};
use crate::proto::codec;
use crate::proto::raylet::{PeerActorResult, PeerRequest, PeerResponse, PeerTaskResponse};
use crate::proto::task::{Failure, Outcome, PeerSubmit, TaskSpec, MAX_TASK_FRAME};
use crate::transport::rpc::{read_msg, write_frame, write_msg, RpcError};
use crate::transport::{BoxConn, Endpoint, RecvHalf, SendHalf};
use prism_objectstore::ObjectId;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

const MAX_PEER_FRAME: usize = MAX_TASK_FRAME;

/// Serves peer raylets: byte ranges of local objects, and spilled tasks.
pub async fn serve_peers(
    endpoint: Arc<dyn Endpoint>,
    server: Arc<StoreServer>,
    tasks: Arc<TaskService>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let server = server.clone();
        let tasks = tasks.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            if !conn.peer().is_node() {
                conn.close("peer requests need a node certificate from the cluster CA");
                return;
            }
            while let Ok((s, r)) = conn.accept_bi().await {
                let server = server.clone();
                let tasks = tasks.clone();
                let conn = conn.clone();
                tokio::spawn(async move { serve_stream(s, r, &conn, &server, &tasks).await });
            }
        });
    }
}

/// How long a peer's new stream may take to carry its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_stream(
    mut s: SendHalf,
    mut r: RecvHalf,
    conn: &BoxConn,
    server: &Arc<StoreServer>,
    tasks: &Arc<TaskService>,
) {
    let first = tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_msg::<PeerRequest, _>(&mut r, MAX_PEER_FRAME),
    )
    .await
    .unwrap_or_else(|_| Err(RpcError::NoResponse));
    match first {
        Ok(Some(PeerRequest::Pull {
            object,
            offset,
            len,
        })) => serve_chunk(s, object, offset, len, server).await,
        Ok(Some(PeerRequest::ActorStream { actor_id })) => {
            tasks.serve_actor_stream(actor_id, s, r).await
        }
        Ok(Some(PeerRequest::State(query))) => {
            let reply = tasks.state(query);
            let _ = write_msg(&mut s, &reply).await;
        }
        Ok(Some(PeerRequest::Logs { job_id, lines })) => {
            tasks.deliver_logs(job_id, lines);
            let _ = write_msg(&mut s, &true).await;
        }
        Ok(Some(PeerRequest::ReadLog { pid, offset })) => {
            let reply = tasks.read_log(pid, offset).await;
            let _ = write_msg(&mut s, &reply).await;
        }
        Ok(Some(PeerRequest::FreeObjects(objects))) => {
            tasks.drop_copies(&objects);
            let _ = write_msg(&mut s, &true).await;
        }
        Ok(Some(PeerRequest::Borrows {
            from,
            conn,
            objects,
            release,
        })) => {
            let handed = tasks.deliver_lent(from, conn, objects, release);
            let _ = write_msg(&mut s, &handed).await;
        }
        Ok(Some(PeerRequest::ReleaseHeld {
            from,
            conn,
            results,
        })) => {
            let handed = tasks.deliver_peer_release_held(from, conn, results);
            let _ = write_msg(&mut s, &handed).await;
        }
        Ok(Some(PeerRequest::HeldFor {
            holder,
            owner_conn,
            results,
        })) => {
            let noted = tasks.deliver_held_for(holder, owner_conn, results);
            let _ = write_msg(&mut s, &noted).await;
        }
        Ok(Some(PeerRequest::Bundles { to, ops })) => {
            let reply = tasks.bundle_ops(to, ops).await;
            let _ = write_msg(&mut s, &reply).await;
        }
        Ok(Some(PeerRequest::TakeCopies {
            objects,
            deadline_ms,
        })) => {
            let reply = tasks.take_copies(objects, deadline_ms).await;
            let _ = write_msg(&mut s, &reply).await;
        }
        Ok(Some(PeerRequest::Submit { to, task })) => {
            let resp = tasks.serve_peer_submit(to, *task).await;
            let _ = write_msg(&mut s, &resp).await;
        }
        Ok(None) => {}
        Err(RpcError::NoResponse) => {
            warn!(peer = %conn.remote_addr(), "a peer stream carried no request within {REQUEST_TIMEOUT:?}; closing it");
        }
        // A peer that sends what is not a frame is broken or hostile: the
        // whole connection goes (P-1), not just this stream.
        Err(e) => {
            warn!(peer = %conn.remote_addr(), "bad peer request ({e}); dropping the connection");
            conn.close(&e.to_string());
        }
    }
}

async fn serve_chunk(
    mut s: SendHalf,
    id: ObjectId,
    offset: u64,
    len: u64,
    server: &Arc<StoreServer>,
) {
    let refuse = |message: String| PeerResponse::Error { message };
    let held = match server.hold_for_send(id) {
        Ok(h) => h,
        Err(e) => {
            let _ = write_msg(&mut s, &refuse(e.to_string())).await;
            return;
        }
    };
    let bytes = match held.range(offset, len) {
        Ok(b) => b,
        Err(why) => {
            let _ = write_msg(&mut s, &refuse(why)).await;
            return;
        }
    };
    if write_frame(&mut s, &PeerResponse::Chunk { len })
        .await
        .is_err()
    {
        return;
    }
    if s.write_all(bytes).await.is_ok() {
        server
            .bytes_sent
            .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        let _ = s.shutdown().await;
    }
}

/// DF-6: how long work for this raylet's next id waits for the id.
const NEXT_ID_WAIT: Duration = Duration::from_secs(5);

impl TaskService {
    /// Runs a task a peer spilled here (or the head placed here) for node
    /// `to`; answers when it ends, or at once where this raylet is no
    /// longer `to` (DF-6).
    pub async fn serve_peer_submit(
        self: &Arc<Self>,
        to: NodeId,
        sub: PeerSubmit,
    ) -> PeerTaskResponse {
        let me = self.node();
        if to != me && !self.is_me(to) && self.peers.lost_reason(to).is_none() {
            // DF-6: maybe placed on this raylet's next id before it knew it.
            self.became(to, NEXT_ID_WAIT).await;
        }
        let n = self.next_id();
        let owner = Owner::Spilled(n);
        let (tx, rx) = oneshot::channel();
        self.spilled.insert(n, tx);
        self.jobs.entry(sub.job.job_id).or_insert(sub.job);
        // Judged in the dispatcher's turn that takes it: a fence (which
        // needs that turn) comes wholly before it, and refuses it, or
        // wholly after, and ends it (DF-4).
        let mut refused = None;
        self.act(|d| {
            let me = self.node();
            let earlier = to != me && self.is_me(to);
            let fenced = self.peers.lost_reason(to);
            let pinned = super::dispatch::fence::pinned(&sub.task);
            refused = super::dispatch::fence::refuse_for(to, me, earlier, fenced, pinned);
            match &refused {
                Some(_) => {
                    d.count_refused();
                    Vec::new()
                }
                None => {
                    self.arrived(&sub.task);
                    d.submit(sub.task, owner)
                }
            }
        });
        if let Some(failure) = refused {
            self.spilled.remove(&n);
            warn!(%to, me = %self.node(), "refused work meant for another incarnation: {}", failure.summary());
            return PeerTaskResponse {
                outcome: Outcome::Failed(failure),
            };
        }
        let outcome = rx.await.unwrap_or_else(|_| {
            Outcome::Failed(Failure::NodeDied {
                node: self.node(),
                detail: "the raylet stopped".into(),
            })
        });
        PeerTaskResponse { outcome }
    }

    /// Serves an ordered call stream from a peer raylet to an actor here.
    pub async fn serve_actor_stream(
        self: &Arc<Self>,
        actor: ActorId,
        mut s: SendHalf,
        mut r: RecvHalf,
    ) {
        // DF-5: a fence ends the stream; the peer re-sends what it had.
        let mut fences = self.fences.subscribe();
        let n = self.next_id();
        let owner = Owner::PeerStream(n);
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        self.peer_sinks.insert(n, tx);
        let writer = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if s.write_all(&frame).await.is_err() {
                    return;
                }
            }
        });
        loop {
            let read = tokio::select! {
                biased;
                _ = fences.changed() => break,
                read = read_msg::<TaskSpec, _>(&mut r, MAX_TASK_FRAME) => read,
            };
            match read {
                Ok(Some(spec)) => {
                    self.submit(spec, owner);
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(%actor, "actor call stream failed: {e}");
                    break;
                }
            }
        }
        // Results already made still reach the peer (it would otherwise
        // run them again), then the stream ends.
        self.peer_sinks.remove(&n);
        let mut writer = writer;
        if tokio::time::timeout(std::time::Duration::from_secs(5), &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }

    /// Sends a result down peer stream `n`.
    pub(super) fn reply_to_peer_stream(&self, n: u64, task_id: TaskId, outcome: Outcome) {
        let Some(tx) = self.peer_sinks.get(&n) else {
            return;
        };
        match codec::encode(&PeerActorResult { task_id, outcome }) {
            Ok(frame) => {
                let _ = tx.send(frame);
            }
            Err(e) => warn!("cannot encode an actor result: {e}"),
        }
    }
}
