//! A connection to the head, used by raylets, drivers and the CLI.

use crate::config::Config;
use crate::proto::common::ClusterStatus;
use crate::proto::head::{ErrorKind, HeadRequest, HeadResponse, PeerRole};
use crate::proto::PROTOCOL_VERSION;
use crate::token::JoinToken;
use crate::transport::rpc::{call, RpcError};
use crate::transport::tls::ClientTrust;
use crate::transport::{BoxConn, Endpoint};
use std::net::SocketAddr;
use std::time::Duration;

/// Talking to the head failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, framing or decoding failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The head answered with an error.
    #[error("the head refused: {message}")]
    Refused {
        /// Category.
        kind: ErrorKind,
        /// The head's sentence.
        message: String,
    },
    /// The head answered something that does not fit the request.
    #[error("unexpected answer from the head: {0}")]
    Unexpected(String),
    /// No answer in time.
    #[error("the head at {addr} did not answer within {ms} ms")]
    Timeout {
        /// The head.
        addr: SocketAddr,
        /// The limit.
        ms: u64,
    },
}

/// An authenticated connection to the head.
#[derive(Debug, Clone)]
pub struct HeadClient {
    conn: BoxConn,
    max_frame: usize,
    timeout: Duration,
}

impl HeadClient {
    /// Dials the head and says hello. With [`ClientTrust::Pinned`] the token's
    /// secret must be given; with a node certificate it is not needed.
    pub async fn connect(
        endpoint: &dyn Endpoint,
        addr: SocketAddr,
        trust: &ClientTrust,
        token: Option<&JoinToken>,
        role: PeerRole,
        config: &Config,
    ) -> Result<HeadClient, ClientError> {
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        let conn = tokio::time::timeout(timeout, endpoint.connect(addr, trust))
            .await
            .map_err(|_| ClientError::Timeout {
                addr,
                ms: config.connect_timeout_ms,
            })?
            .map_err(RpcError::from)?;
        let client = HeadClient {
            conn,
            max_frame: config.max_frame_bytes,
            timeout,
        };
        let hello = HeadRequest::Hello {
            version: PROTOCOL_VERSION,
            role,
            token: token.map(|t| t.secret.clone()),
        };
        match client.request(&hello).await {
            Ok(HeadResponse::Welcome { .. }) => Ok(client),
            Ok(other) => Err(ClientError::Unexpected(format!("{other:?}"))),
            Err(e) => {
                client.close();
                Err(e)
            }
        }
    }

    /// One request, one answer; an `Error` answer becomes [`ClientError::Refused`].
    pub async fn request(&self, req: &HeadRequest) -> Result<HeadResponse, ClientError> {
        let addr = self.conn.remote_addr();
        let resp = tokio::time::timeout(
            self.timeout,
            call::<HeadRequest, HeadResponse>(&*self.conn, req, self.max_frame),
        )
        .await
        .map_err(|_| ClientError::Timeout {
            addr,
            ms: self.timeout.as_millis() as u64,
        })??;
        match resp {
            HeadResponse::Error { kind, message } => Err(ClientError::Refused { kind, message }),
            other => Ok(other),
        }
    }

    /// The cluster's node table.
    pub async fn status(&self) -> Result<ClusterStatus, ClientError> {
        match self.request(&HeadRequest::GetStatus).await? {
            HeadResponse::Status(s) => Ok(s),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The underlying connection.
    pub fn connection(&self) -> &BoxConn {
        &self.conn
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close("client closed");
    }
}
