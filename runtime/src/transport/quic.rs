//! QUIC (quinn + rustls): the only module that names quinn.

use super::tls::{client_config, server_config, ClientTrust, NodeIdentity, CLUSTER_SERVER_NAME};
use super::{
    BoxConn, BoxFut, Connection, Endpoint, Incoming, PeerIdentity, RecvHalf, SendHalf,
    TransportError,
};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A QUIC endpoint on one UDP port, serving and dialing.
#[derive(Debug, Clone)]
pub struct QuicEndpoint {
    inner: quinn::Endpoint,
    /// Incoming handshakes being worked on now.
    handshaking: Arc<AtomicUsize>,
}

/// Incoming handshakes a server endpoint works on at once. More are
/// refused at once — the dialler backs off and comes again — instead of
/// being queued until they time out after costing the server their
/// cryptography: what a restarted head meets when thousands of nodes come
/// back together.
pub const MAX_HANDSHAKES: usize = 256;

/// Counts one handshake in progress while it lives.
struct Handshake(Arc<AtomicUsize>);

impl Drop for Handshake {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn transport_config(idle_timeout: Duration) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(idle_timeout.try_into().ok());
    t.keep_alive_interval(Some(idle_timeout / 4));
    t.max_concurrent_bidi_streams(1024u32.into());
    Arc::new(t)
}

impl QuicEndpoint {
    /// Binds `addr` (port 0 picks a free one) serving with `identity`.
    /// Must be called inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        identity: &NodeIdentity,
        idle_timeout: Duration,
    ) -> Result<QuicEndpoint, TransportError> {
        let tls = QuicServerConfig::try_from(server_config(identity)?)
            .map_err(|e| TransportError::Tls(super::tls::TlsError::Verifier(e.to_string())))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(tls));
        server.transport_config(transport_config(idle_timeout));
        let inner = quinn::Endpoint::server(server, addr)
            .map_err(|source| TransportError::Bind { addr, source })?;
        Ok(QuicEndpoint {
            inner,
            handshaking: Arc::default(),
        })
    }

    /// A client-only endpoint on an ephemeral port.
    pub fn client(bind_ip: std::net::IpAddr) -> Result<QuicEndpoint, TransportError> {
        let addr = SocketAddr::new(bind_ip, 0);
        let inner = quinn::Endpoint::client(addr)
            .map_err(|source| TransportError::Bind { addr, source })?;
        Ok(QuicEndpoint {
            inner,
            handshaking: Arc::default(),
        })
    }
}

impl Endpoint for QuicEndpoint {
    fn local_addr(&self) -> SocketAddr {
        self.inner
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    fn accept(&self) -> BoxFut<'_, Option<Incoming>> {
        Box::pin(async move {
            let incoming = loop {
                let incoming = self.inner.accept().await?;
                if self.handshaking.fetch_add(1, Ordering::AcqRel) < MAX_HANDSHAKES {
                    break incoming;
                }
                self.handshaking.fetch_sub(1, Ordering::AcqRel);
                tracing::debug!(peer = %incoming.remote_address(), "too many handshakes at once; refused");
                incoming.refuse();
            };
            let counted = Handshake(self.handshaking.clone());
            let addr = incoming.remote_address();
            let fut: Incoming = Box::pin(async move {
                let _counted = counted;
                let conn = incoming.await.map_err(|e| TransportError::Incoming {
                    addr,
                    why: e.to_string(),
                })?;
                Ok(Arc::new(QuicConnection::new(conn)) as BoxConn)
            });
            Some(fut)
        })
    }

    fn connect(
        &self,
        addr: SocketAddr,
        trust: &ClientTrust,
    ) -> BoxFut<'_, Result<BoxConn, TransportError>> {
        let cfg = client_config(trust);
        Box::pin(async move {
            let err = |why: String| TransportError::Connect { addr, why };
            let tls = QuicClientConfig::try_from(cfg?).map_err(|e| err(e.to_string()))?;
            let mut cfg = quinn::ClientConfig::new(Arc::new(tls));
            cfg.transport_config(transport_config(Duration::from_secs(30)));
            let connecting = self
                .inner
                .connect_with(cfg, addr, CLUSTER_SERVER_NAME)
                .map_err(|e| err(e.to_string()))?;
            let conn = connecting.await.map_err(|e| err(e.to_string()))?;
            Ok(Arc::new(QuicConnection::new(conn)) as BoxConn)
        })
    }

    fn close(&self) {
        self.inner.close(0u32.into(), b"endpoint closed");
    }
}

impl QuicEndpoint {
    /// Waits until every connection's close has been sent (so peers learn
    /// of it at once rather than by idle timeout).
    pub async fn wait_idle(&self) {
        self.inner.wait_idle().await;
    }
}

/// One QUIC connection.
#[derive(Debug)]
struct QuicConnection {
    conn: quinn::Connection,
    peer: PeerIdentity,
}

impl QuicConnection {
    fn new(conn: quinn::Connection) -> QuicConnection {
        // rustls only hands over client certificates that the CA verifier accepted.
        let peer = match conn.peer_identity() {
            Some(any) => match any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>() {
                Ok(chain) if !chain.is_empty() => {
                    let digest = ring::digest::digest(&ring::digest::SHA256, chain[0].as_ref());
                    let mut cert = [0u8; 32];
                    cert.copy_from_slice(digest.as_ref());
                    PeerIdentity::ClusterNode { cert }
                }
                _ => PeerIdentity::Anonymous,
            },
            None => PeerIdentity::Anonymous,
        };
        QuicConnection { conn, peer }
    }
}

fn closed(e: impl std::fmt::Display) -> TransportError {
    TransportError::Closed(e.to_string())
}

impl Connection for QuicConnection {
    fn open_bi(&self) -> BoxFut<'_, Result<(SendHalf, RecvHalf), TransportError>> {
        Box::pin(async move {
            let (s, r) = self.conn.open_bi().await.map_err(closed)?;
            Ok((Box::new(s) as SendHalf, Box::new(r) as RecvHalf))
        })
    }

    fn accept_bi(&self) -> BoxFut<'_, Result<(SendHalf, RecvHalf), TransportError>> {
        Box::pin(async move {
            let (s, r) = self.conn.accept_bi().await.map_err(closed)?;
            Ok((Box::new(s) as SendHalf, Box::new(r) as RecvHalf))
        })
    }

    fn remote_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    fn peer(&self) -> PeerIdentity {
        self.peer.clone()
    }

    fn close(&self, reason: &str) {
        self.conn.close(1u32.into(), reason.as_bytes());
    }

    fn closed(&self) -> BoxFut<'_, String> {
        Box::pin(async move { self.conn.closed().await.to_string() })
    }
}
