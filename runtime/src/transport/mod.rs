//! Connections between Prism processes, behind traits so that only
//! [`quic`] names quinn and a local (in-machine) transport can slot in.
//!
//! A [`Connection`] carries independent bidirectional streams; Prism sends one
//! request and one response per stream ([`rpc`]).

pub mod backoff;
pub mod quic;
pub mod rpc;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// A boxed, sendable future.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// The sending half of a stream.
pub type SendHalf = Box<dyn AsyncWrite + Send + Unpin>;
/// The receiving half of a stream.
pub type RecvHalf = Box<dyn AsyncRead + Send + Unpin>;
impl PeerIdentity {
    /// Whether the peer proved a node certificate from the cluster CA.
    pub fn is_node(&self) -> bool {
        matches!(self, PeerIdentity::ClusterNode { .. })
    }
}

/// A shared connection.
pub type BoxConn = Arc<dyn Connection>;

/// Who is on the other end, as far as TLS proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// The peer presented a certificate issued by the cluster CA; `cert` is
    /// the SHA-256 of that certificate (what binds a node id to one raylet).
    ClusterNode {
        /// SHA-256 of the peer's certificate (DER).
        cert: [u8; 32],
    },
    /// The peer presented no certificate; it must prove itself with the token.
    Anonymous,
}

/// A transport failure.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Could not reach or handshake with the peer.
    #[error("cannot connect to {addr}: {why}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// The handshake or network error.
        why: String,
    },
    /// An incoming connection failed its handshake.
    #[error("incoming connection from {addr} failed: {why}")]
    Incoming {
        /// From where.
        addr: SocketAddr,
        /// The handshake error.
        why: String,
    },
    /// The connection is closed.
    #[error("connection closed: {0}")]
    Closed(String),
    /// Socket setup failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Certificates or TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// One connection to a peer.
pub trait Connection: Send + Sync + std::fmt::Debug {
    /// Opens a new stream to the peer.
    fn open_bi(&self) -> BoxFut<'_, Result<(SendHalf, RecvHalf), TransportError>>;
    /// Waits for the peer to open a stream.
    fn accept_bi(&self) -> BoxFut<'_, Result<(SendHalf, RecvHalf), TransportError>>;
    /// The peer's address.
    fn remote_addr(&self) -> SocketAddr;
    /// What TLS proved about the peer.
    fn peer(&self) -> PeerIdentity;
    /// Closes the connection, telling the peer why.
    fn close(&self, reason: &str);
    /// Resolves when the connection is closed, with the reason.
    fn closed(&self) -> BoxFut<'_, String>;
}

/// An incoming connection still in its handshake.
pub type Incoming = BoxFut<'static, Result<BoxConn, TransportError>>;

/// A bound endpoint that accepts and dials connections.
pub trait Endpoint: Send + Sync + std::fmt::Debug {
    /// The bound address (with the real port when bound to port 0).
    fn local_addr(&self) -> SocketAddr;
    /// The next incoming connection; `None` once the endpoint is closed.
    fn accept(&self) -> BoxFut<'_, Option<Incoming>>;
    /// Dials a peer.
    fn connect(
        &self,
        addr: SocketAddr,
        trust: &tls::ClientTrust,
    ) -> BoxFut<'_, Result<BoxConn, TransportError>>;
    /// Closes every connection and stops accepting.
    fn close(&self);
}
