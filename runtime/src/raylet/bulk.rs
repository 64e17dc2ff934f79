//! The bulk channel: object bytes between raylets over TLS on TCP.
//!
//! Pulls over QUIC are CPU-bound in quinn's single endpoint driver (~0.2
//! GB/s on loopback here). Every raylet therefore also listens on TCP, at
//! the port number of its QUIC (UDP) address, for TLS 1.3 connections that
//! carry nothing but byte ranges of its sealed objects, and a puller asks
//! for chunks there first. The kernel's TCP and rustls' AES-GCM move the
//! bytes; each chunk is read straight into the object's place in the
//! puller's segment, as on QUIC.
//!
//! - **BK-1** only a peer with a node certificate of the cluster CA gets
//!   past the handshake (client authentication is required, unlike the
//!   QUIC door that also takes drivers with the token), and the puller
//!   checks the server's certificate against the same CA: the channel is
//!   as mutually authenticated and encrypted as QUIC.
//! - **BK-2** a connection carries one request at a time — a
//!   [`PeerRequest::Pull`] frame, answered by [`PeerResponse::Chunk`] and
//!   the bytes, or [`PeerResponse::Error`] — so after a whole chunk it is
//!   at a frame boundary and the puller keeps it for the next one; a
//!   connection that failed mid-chunk is dropped, never reused. Idle
//!   connections are kept for less time than the server keeps them open,
//!   and a kept one that fails before its chunk starts (its peer
//!   restarted) is replaced by a fresh one, once.
//! - **BK-3** where no bulk channel can be opened (the TCP port was taken
//!   on the peer, a firewall, `PRISM_BULK_CHANNEL=off` there), the pull
//!   goes over QUIC as before.

use super::store_server::StoreServer;
use super::transfer::{chunk_body, chunk_header, ChunkError};
use crate::proto::raylet::{PeerRequest, PeerResponse};
use crate::proto::task::MAX_TASK_FRAME;
use crate::transport::rpc::{read_msg, write_frame};
use crate::transport::tls::{self, ClientTrust, NodeIdentity, CLUSTER_SERVER_NAME};
use prism_objectstore::ObjectId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

/// `off` turns this raylet's bulk channel off (peers then pull from it
/// over QUIC): an operator's switch, and the benchmark's A/B.
pub const BULK_ENV: &str = "PRISM_BULK_CHANNEL";
/// How long a TCP connect plus TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(5);
/// An idle server-side connection is closed after this long, and a chunk
/// the peer does not take within it is abandoned.
const IDLE: Duration = Duration::from_secs(60);
/// The puller keeps an idle connection for at most this long (well inside
/// the server's `IDLE`, so a kept connection is not one it closed).
const KEPT_FOR: Duration = Duration::from_secs(20);
/// Idle connections kept per peer.
const KEPT_PER_PEER: usize = 8;
/// How long a peer whose bulk channel could not be opened is pulled from
/// over QUIC without trying again.
const RETRY_AFTER: Duration = Duration::from_secs(60);

type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;
/// An idle connection and when it was last used.
type Kept = (ClientStream, std::time::Instant);

/// Listens for bulk connections on TCP at `addr` (the QUIC address): the
/// listening address and the task to abort at shutdown; `None`, with a
/// warning, when it cannot (pulls from here then use QUIC).
pub async fn listen(
    addr: SocketAddr,
    id: &NodeIdentity,
    server: Arc<StoreServer>,
) -> Option<(SocketAddr, tokio::task::JoinHandle<()>)> {
    if std::env::var(BULK_ENV).is_ok_and(|v| v == "off") {
        tracing::info!("no bulk channel ({BULK_ENV}=off): pulls from this node use QUIC");
        return None;
    }
    let config = match tls::bulk_server_config(id) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            warn!("no bulk channel: {e}; pulls from this node use QUIC");
            return None;
        }
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%addr, "no bulk channel: cannot listen on TCP: {e}; pulls from this node use QUIC");
            return None;
        }
    };
    let local = listener.local_addr().ok()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let accept = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    warn!("bulk channel: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, server) = (acceptor.clone(), server.clone());
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => serve(tls, &server).await,
                    // BK-1: no node certificate of this cluster, no bytes.
                    Ok(Err(e)) => warn!(%peer, "bulk channel refused: {e}"),
                    Err(_) => debug!(%peer, "bulk channel: handshake timed out"),
                }
            });
        }
    });
    Some((local, accept))
}

/// Answers one peer's chunk requests, one at a time (BK-2).
async fn serve<S>(mut s: S, server: &Arc<StoreServer>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let req = match tokio::time::timeout(IDLE, read_msg(&mut s, MAX_TASK_FRAME)).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) | Err(_) => return,
            Ok(Err(e)) => {
                warn!("bulk channel: bad request ({e}); closing it");
                return;
            }
        };
        let PeerRequest::Pull {
            object,
            offset,
            len,
        } = req
        else {
            let refused = PeerResponse::Error {
                message: "the bulk channel carries object pulls only".into(),
            };
            let _ = write_frame(&mut s, &refused).await;
            let _ = s.shutdown().await;
            return;
        };
        // A peer that stops reading does not hold the object forever.
        let sent = tokio::time::timeout(IDLE, send_range(&mut s, server, object, offset, len));
        if !matches!(sent.await, Ok(Ok(()))) {
            return;
        }
    }
}

/// Writes `len` bytes of `id` from `offset`, or why not.
async fn send_range<S>(
    s: &mut S,
    server: &Arc<StoreServer>,
    id: ObjectId,
    offset: u64,
    len: u64,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    let refuse = |message: String| PeerResponse::Error { message };
    let frame_err = |e: crate::transport::rpc::RpcError| std::io::Error::other(e.to_string());
    let held = match server.hold_for_send(id) {
        Ok(h) => h,
        Err(e) => {
            write_frame(s, &refuse(e.to_string()))
                .await
                .map_err(frame_err)?;
            return s.flush().await;
        }
    };
    let bytes = match held.range(offset, len) {
        Ok(b) => b,
        Err(why) => {
            write_frame(s, &refuse(why)).await.map_err(frame_err)?;
            return s.flush().await;
        }
    };
    write_frame(s, &PeerResponse::Chunk { len })
        .await
        .map_err(frame_err)?;
    s.write_all(bytes).await?;
    s.flush().await?;
    server
        .bytes_sent
        .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// The puller's side: TLS connections to peers' bulk channels, kept idle
/// between chunks.
pub struct BulkClient {
    connector: Option<tokio_rustls::TlsConnector>,
    /// Idle connections per peer, with when each was last used.
    idle: Mutex<HashMap<SocketAddr, Vec<Kept>>>,
    /// Peers whose channel could not be opened, and when.
    failed: Mutex<HashMap<SocketAddr, std::time::Instant>>,
}

impl std::fmt::Debug for BulkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkClient")
            .field("enabled", &self.connector.is_some())
            .finish_non_exhaustive()
    }
}

impl BulkClient {
    /// A client presenting this node's certificate (`trust`); without a
    /// usable config every pull goes over QUIC.
    pub fn new(trust: &ClientTrust) -> BulkClient {
        let connector = match tls::client_config(trust) {
            Ok(c) => Some(tokio_rustls::TlsConnector::from(Arc::new(c))),
            Err(e) => {
                warn!("no bulk channel: {e}; pulls use QUIC");
                None
            }
        };
        BulkClient {
            connector,
            idle: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<Kept>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A kept connection to `addr`'s bulk channel (`true`), or a new one.
    async fn take(&self, addr: SocketAddr) -> Result<(ClientStream, bool), String> {
        let kept = {
            let mut idle = self.idle();
            let kept = idle.entry(addr).or_default();
            kept.retain(|(_, at)| at.elapsed() < KEPT_FOR);
            kept.pop()
        };
        match kept {
            Some((s, _)) => Ok((s, true)),
            None => self.dial(addr).await.map(|s| (s, false)),
        }
    }

    /// A new connection to `addr`'s bulk channel.
    async fn dial(&self, addr: SocketAddr) -> Result<ClientStream, String> {
        let connector = self.connector.as_ref().ok_or("no TLS client config")?;
        let name = rustls::pki_types::ServerName::try_from(CLUSTER_SERVER_NAME)
            .map_err(|e| e.to_string())?;
        let dial = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))
        };
        tokio::time::timeout(HANDSHAKE, dial)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {HANDSHAKE:?}")))
    }

    fn give_back(&self, addr: SocketAddr, s: ClientStream) {
        let mut idle = self.idle();
        let kept = idle.entry(addr).or_default();
        if kept.len() < KEPT_PER_PEER {
            kept.push((s, std::time::Instant::now()));
        }
    }

    /// Whether `addr` has a bulk channel this node may use (BK-3): one
    /// connection is opened (or found) and kept. A peer whose channel
    /// could not be opened is not tried again for a minute (a port taken
    /// by something that never answers would otherwise cost every pull
    /// the handshake's timeout).
    pub async fn open(&self, addr: SocketAddr) -> Result<(), String> {
        let lock = || self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = lock().get(&addr) {
            if at.elapsed() < RETRY_AFTER {
                return Err("its bulk channel could not be opened a moment ago".into());
            }
        }
        match self.take(addr).await {
            Ok((s, _)) => {
                lock().remove(&addr);
                self.give_back(addr, s);
                Ok(())
            }
            Err(why) => {
                lock().insert(addr, std::time::Instant::now());
                Err(why)
            }
        }
    }

    /// Drops the idle connections to `addr` (its pull failed).
    pub fn forget(&self, addr: SocketAddr) {
        self.idle().remove(&addr);
    }

    /// Fetches bytes `off..off + len` of `id` from `addr` into the object
    /// this raylet created for the pull at `base` of its segment.
    pub async fn fetch(
        &self,
        addr: SocketAddr,
        server: &StoreServer,
        id: ObjectId,
        base: usize,
        off: u64,
        len: u64,
    ) -> Result<(), String> {
        let pull = PeerRequest::Pull {
            object: id,
            offset: off,
            len,
        };
        let (mut s, kept) = self.take(addr).await?;
        match ask(&mut s, &pull, len).await {
            Ok(()) => {}
            // A kept connection its peer has closed (it restarted, or
            // dropped it idle) breaks before any answer: once more on a
            // fresh one. A refusal is an answer.
            Err(ChunkError::Broken(_)) if kept => {
                s = self.dial(addr).await?;
                ask(&mut s, &pull, len)
                    .await
                    .map_err(ChunkError::into_message)?;
            }
            Err(e) => return Err(e.into_message()),
        }
        chunk_body(&mut s, server, base, off, len).await?;
        self.give_back(addr, s);
        Ok(())
    }
}

/// Sends a request for `len` bytes and reads the start of its answer.
async fn ask(s: &mut ClientStream, pull: &PeerRequest, len: u64) -> Result<(), ChunkError> {
    let broken = |e: String| ChunkError::Broken(e);
    write_frame(s, pull)
        .await
        .map_err(|e| broken(e.to_string()))?;
    s.flush().await.map_err(|e| broken(e.to_string()))?;
    chunk_header(s, len).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tls::ClusterCa;

    fn store(name: &str) -> Arc<StoreServer> {
        let store = prism_objectstore::Store::new(name, 8 << 20, None).unwrap();
        StoreServer::new(store).unwrap()
    }

    /// BK-1 and BK-2 over real TCP on 127.0.0.1: a node of the cluster
    /// pulls byte ranges through one kept connection; a node certified by
    /// another CA is refused in the handshake.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bk_1_only_the_clusters_nodes_open_the_channel_and_bytes_arrive_whole() {
        let ca = ClusterCa::generate().unwrap();
        let src = store("prism-bulk-test-src");
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let id = ObjectId::random();
        super::super::store_door::put_local(&src, id, &bytes).unwrap();
        let (at, _accept) = listen("127.0.0.1:0".parse().unwrap(), &ca.issue("a").unwrap(), src)
            .await
            .unwrap();

        // A node of another cluster does not trust this one's certificate;
        // one that trusts it but shows a certificate of another CA is
        // refused by the server (in TLS 1.3 its client may only learn so
        // at its first read): neither gets a byte.
        let stranger = ClusterCa::generate().unwrap().issue("x").unwrap();
        let forged = NodeIdentity {
            ca_pem: ca.issue("y").unwrap().ca_pem,
            ..stranger.clone()
        };
        let other = BulkClient::new(&ClientTrust::Mutual(Arc::new(stranger)));
        let err = other.open(at).await.unwrap_err();
        assert!(err.contains("TLS handshake"), "{err}");
        let forger = BulkClient::new(&ClientTrust::Mutual(Arc::new(forged)));
        let sink = store("prism-bulk-test-sink");
        let base = sink.create_for_pull(id, bytes.len() as u64).unwrap();
        let got = match forger.open(at).await {
            Ok(()) => forger.fetch(at, &sink, id, base, 0, 10).await,
            Err(e) => Err(e),
        };
        assert!(got.is_err(), "a certificate of another CA got bytes");
        assert_eq!(
            sink.bytes_received
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );

        let client = BulkClient::new(&ClientTrust::Mutual(Arc::new(ca.issue("b").unwrap())));
        client.open(at).await.unwrap();
        let dst = store("prism-bulk-test-dst");
        let base = dst.create_for_pull(id, bytes.len() as u64).unwrap();
        let half = bytes.len() as u64 / 2;
        for (off, len) in [(0, half), (half, bytes.len() as u64 - half)] {
            client.fetch(at, &dst, id, base, off, len).await.unwrap();
        }
        assert_eq!(
            client.idle().get(&at).map(Vec::len),
            Some(1),
            "BK-2: one kept connection"
        );
        dst.seal_pull(id).unwrap();
        assert_eq!(dst.hold_for_send(id).unwrap().bytes(), &bytes[..]);
        // A range outside the object is refused, and the channel goes on.
        let err = client
            .fetch(at, &dst, id, base, half, half * 4)
            .await
            .unwrap_err();
        assert!(err.contains("is outside"), "{err}");
        let missing = client.fetch(at, &dst, ObjectId::random(), base, 0, 1).await;
        assert!(missing.unwrap_err().contains("peer refused"));
    }
}
