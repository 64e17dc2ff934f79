//! Moving objects between machines.
//!
//! - **Directory.** When an object is sealed (or pulled) on a raylet, or
//!   its copy there is freed or evicted, the raylet tells the head (in
//!   order, batched: `object_refs.rs`), which keeps object → nodes; a dead
//!   node's copies are dropped from it.
//! - **Pull.** A local `Get` that misses asks the head where copies are and
//!   pulls from one peer raylet, over its TLS-on-TCP bulk channel where it
//!   has one (`bulk.rs`), else over QUIC: the object is created here
//!   (unpinned: a secondary copy), then 8 MiB chunks are fetched on up to
//!   four parallel connections or streams, each read straight into this
//!   raylet's segment, and the object is sealed. Concurrent pulls of one object share one
//!   transfer. A chunk that makes no progress within the chunk timeout
//!   abandons that source and the next copy is tried; when none is left
//!   the `Get` fails with a typed error naming each source and why.
//! - **Serve.** A peer with a node certificate asks for byte ranges of a
//!   sealed object; the raylet holds a reference while it writes the range
//!   straight from its segment.

use super::head_link::HeadLink;
use super::peers::Peers;
use super::store_server::{PullError, Remote, StoreServer};
use crate::client::ClientError;
use crate::ids::NodeId;
use crate::proto::head::{HeadRequest, HeadResponse};
use crate::proto::raylet::{PeerRequest, PeerResponse};
use crate::transport::rpc::{read_msg, write_msg};
use crate::transport::BoxConn;
use prism_objectstore::ObjectId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;
use tracing::{info, warn};

/// Bytes per chunk.
pub const CHUNK: u64 = 8 << 20;
/// Chunks in flight per pull.
pub const PARALLEL_STREAMS: usize = 4;
const MAX_PEER_FRAME: usize = crate::proto::task::MAX_TASK_FRAME;

/// Pulls, serves and reports objects for one raylet.
#[derive(Debug)]
pub struct Transfer {
    pub(super) link: Arc<HeadLink>,
    /// Wakes the loop that reports copies (`object_refs.rs`).
    pub(super) wake: tokio::sync::Notify,
    /// Frees for the head, oldest first.
    pub(super) frees: Mutex<Vec<ObjectId>>,
    node_id: Mutex<NodeId>,
    peers: Arc<Peers>,
    bulk: Arc<super::bulk::BulkClient>,
    inflight: Mutex<HashMap<ObjectId, Arc<tokio::sync::Mutex<()>>>>,
    chunk_timeout: Duration,
    /// This node's labels (residency claims are checked against them).
    pub(super) labels: Vec<(String, String)>,
    /// Residency rules granted here and not yet sent to the head.
    pub(super) rules: Mutex<Vec<(ObjectId, crate::proto::common::Residency)>>,
}

impl Transfer {
    /// Transfer for a registered raylet.
    pub fn new(
        link: Arc<HeadLink>,
        node_id: NodeId,
        peers: Arc<Peers>,
        bulk: Arc<super::bulk::BulkClient>,
        chunk_timeout: Duration,
        labels: Vec<(String, String)>,
    ) -> Arc<Transfer> {
        Arc::new(Transfer {
            link,
            wake: tokio::sync::Notify::new(),
            frees: Mutex::new(Vec::new()),
            node_id: Mutex::new(node_id),
            peers,
            bulk,
            inflight: Mutex::new(HashMap::new()),
            chunk_timeout,
            labels,
            rules: Mutex::default(),
        })
    }

    pub(super) fn node_id(&self) -> NodeId {
        *self.node_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The raylet registered again under a new id.
    pub fn set_node_id(&self, id: NodeId) {
        *self.node_id.lock().unwrap_or_else(|p| p.into_inner()) = id;
    }

    /// Wakes the loop that tells the head of this store's copies.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Makes `id` local by pulling it from a peer; concurrent callers share one transfer.
    pub async fn pull(
        &self,
        server: &Arc<StoreServer>,
        id: ObjectId,
        deadline: Instant,
    ) -> Result<(), PullError> {
        let gate = self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_default()
            .clone();
        let result = {
            let _turn = gate.lock().await;
            if server.contains(id) {
                Ok(())
            } else {
                self.pull_once(server, id, deadline).await
            }
        };
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if inflight.get(&id).is_some_and(|g| Arc::ptr_eq(g, &gate)) && Arc::strong_count(&gate) <= 2
        {
            inflight.remove(&id);
        }
        result
    }

    async fn pull_once(
        &self,
        server: &Arc<StoreServer>,
        id: ObjectId,
        deadline: Instant,
    ) -> Result<(), PullError> {
        let me = self.node_id();
        let (size, nodes) = match self
            .link
            .request(&HeadRequest::GetObjectLocations { object: id })
            .await
        {
            Ok(HeadResponse::ObjectLocations {
                nodes,
                lost: Some(why),
                ..
            }) if nodes.is_empty() => return Err(PullError::Lost { id, why }),
            Ok(HeadResponse::ObjectLocations { size, nodes, .. }) => (size, nodes),
            Ok(other) => {
                return Err(PullError::Failed {
                    id,
                    tried: vec![format!("head answered {other:?}")],
                })
            }
            Err(e) => {
                return Err(PullError::Failed {
                    id,
                    tried: vec![format!("head: {e}")],
                })
            }
        };
        let sources: Vec<(NodeId, String)> = nodes.into_iter().filter(|(n, _)| *n != me).collect();
        if sources.is_empty() {
            return Err(PullError::NoLocation(id));
        }
        let mut tried = Vec::new();
        for (node, addr) in sources {
            let started = Instant::now();
            match self
                .pull_from(server, id, size, node, &addr, deadline)
                .await
            {
                Ok(via) => {
                    let secs = started.elapsed().as_secs_f64();
                    info!(object = %id, from = %node, size, via, mb_per_s = size as f64 / secs / 1e6, "pulled object");
                    self.wake();
                    return Ok(());
                }
                Err(why) => {
                    warn!(object = %id, from = %node, %addr, "pull failed: {why}");
                    tried.push(format!("{node} at {addr}: {why}"));
                }
            }
        }
        Err(PullError::Failed { id, tried })
    }

    /// One request to the head.
    pub async fn head_request(&self, req: &HeadRequest) -> Result<HeadResponse, ClientError> {
        self.link.request(req).await
    }

    /// The peers this raylet pulls from.
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    async fn pull_from(
        &self,
        server: &Arc<StoreServer>,
        id: ObjectId,
        size: u64,
        node: NodeId,
        addr: &str,
        deadline: Instant,
    ) -> Result<&'static str, String> {
        let sock: SocketAddr = addr
            .parse()
            .map_err(|e| format!("bad peer address {addr:?}: {e}"))?;
        let conn = self
            .peers
            .unless_lost(node, self.peers.connect(sock))
            .await??;
        // BK-3: the bulk channel where the peer has one, else QUIC.
        let quic = match self.bulk.open(sock).await {
            Ok(()) => None,
            Err(why) => {
                tracing::debug!(%sock, "no bulk channel, pulling over QUIC: {why}");
                Some(conn)
            }
        };
        let via = if quic.is_some() { "quic" } else { "tls" };
        // PE-1: the pull ends when the head declares the source dead.
        let lost = self.peers.lost(node);
        tokio::pin!(lost);
        let base = server
            .create_for_pull(id, size)
            .map_err(|e| e.to_string())?;
        let mut chunks =
            (0..size.div_ceil(CHUNK)).map(|i| (i * CHUNK, CHUNK.min(size - i * CHUNK)));
        let mut set = JoinSet::new();
        let mut failure = None;
        loop {
            while set.len() < PARALLEL_STREAMS && failure.is_none() {
                let Some((off, len)) = chunks.next() else {
                    break;
                };
                let (quic, bulk, server) = (quic.clone(), self.bulk.clone(), server.clone());
                let limit = self.chunk_timeout;
                let limit = limit.min(deadline.saturating_duration_since(Instant::now()));
                set.spawn(async move {
                    let fetch = async {
                        match quic {
                            Some(conn) => fetch_chunk(conn, server, id, base, off, len).await,
                            None => bulk.fetch(sock, &server, id, base, off, len).await,
                        }
                    };
                    tokio::time::timeout(limit, fetch)
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!(
                                "no progress for {} ms on bytes {off}..{}",
                                limit.as_millis(),
                                off + len
                            ))
                        })
                });
            }
            let next = tokio::select! {
                next = set.join_next() => next,
                why = &mut lost, if failure.is_none() => {
                    failure = Some(format!("node {node} died ({why})"));
                    set.abort_all();
                    continue;
                }
            };
            match next {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => failure = failure.or(Some(e)),
                Some(Err(e)) if e.is_cancelled() => {}
                Some(Err(e)) => failure = failure.or(Some(format!("chunk task failed: {e}"))),
            }
            if failure.is_some() {
                set.abort_all();
            }
        }
        // Every chunk task has ended (the loop drains the set), so no write
        // into the object can follow its abort.
        if let Some(why) = failure {
            server.abort_pull(id);
            self.peers.forget(sock);
            self.bulk.forget(sock);
            return Err(why);
        }
        server.seal_pull(id).map_err(|e| e.to_string())?;
        Ok(via)
    }
}

async fn fetch_chunk(
    conn: BoxConn,
    server: Arc<StoreServer>,
    id: ObjectId,
    base: usize,
    off: u64,
    len: u64,
) -> Result<(), String> {
    let (mut s, mut r) = conn.open_bi().await.map_err(|e| e.to_string())?;
    write_msg(
        &mut s,
        &PeerRequest::Pull {
            object: id,
            offset: off,
            len,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    // The answer (`Chunk` and the bytes) goes straight into the object;
    // the bulk channel reads it with the same two steps.
    chunk_header(&mut r, len)
        .await
        .map_err(ChunkError::into_message)?;
    chunk_body(&mut r, &server, base, off, len).await
}

/// Why a chunk's answer did not start.
pub(super) enum ChunkError {
    /// The peer answered with a refusal.
    Refused(String),
    /// No answer, or not one this side understands.
    Broken(String),
}

impl ChunkError {
    pub(super) fn into_message(self) -> String {
        match self {
            ChunkError::Refused(why) => format!("peer refused: {why}"),
            ChunkError::Broken(why) => why,
        }
    }
}

/// Reads the start of the answer to a request for `len` bytes.
pub(super) async fn chunk_header<R>(r: &mut R, len: u64) -> Result<(), ChunkError>
where
    R: tokio::io::AsyncRead + Unpin + ?Sized,
{
    match read_msg::<PeerResponse, _>(r, MAX_PEER_FRAME).await {
        Ok(Some(PeerResponse::Chunk { len: n })) if n == len => Ok(()),
        Ok(Some(PeerResponse::Error { message })) => Err(ChunkError::Refused(message)),
        Ok(other) => Err(ChunkError::Broken(format!(
            "unexpected peer answer {other:?}"
        ))),
        Err(e) => Err(ChunkError::Broken(e.to_string())),
    }
}

/// Reads a chunk's `len` bytes (after its header) into bytes
/// `off..off + len` of the object created for the pull at `base`.
pub(super) async fn chunk_body<R>(
    r: &mut R,
    server: &StoreServer,
    base: usize,
    off: u64,
    len: u64,
) -> Result<(), String>
where
    R: tokio::io::AsyncRead + Unpin + ?Sized,
{
    // SAFETY: the range lies in an object this raylet created for this pull
    // and has not sealed; each chunk task writes a disjoint range and no
    // reader can see the object before `seal_pull`.
    let dst = unsafe {
        server
            .segment()
            .bytes_mut(base + off as usize, len as usize)
    }
    .map_err(|e| e.to_string())?;
    r.read_exact(dst)
        .await
        .map_err(|e| format!("transfer broke off: {e}"))?;
    server
        .bytes_received
        .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

impl Remote for Transfer {
    fn pull<'a>(
        &'a self,
        server: &'a Arc<StoreServer>,
        id: ObjectId,
        deadline: Instant,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PullError>> + Send + 'a>>
    {
        Box::pin(Transfer::pull(self, server, id, deadline))
    }

    fn freed(&self, ids: &[ObjectId]) {
        self.queue_frees(ids)
    }

    fn report(&self, _id: ObjectId, _size: u64) {
        // The store logged the seal (OS-7); the loop sends it.
        self.wake()
    }
}
