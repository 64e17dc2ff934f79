//! Where the dashboard's data comes from: the head, over the same
//! authenticated QUIC connection `prism list` uses (the dashboard is a
//! client of the head core, never an owner of state). Answers are cached
//! for a moment, so many open tabs cost the head one listing, not one each.

use prism::client::{HeadClient, Table};
use prism::proto::head::{HeadRequest, HeadResponse, PeerRole};
use prism::token::JoinToken;
use prism::transport::quic::QuicEndpoint;
use prism::transport::tls::ClientTrust;
use prism::transport::Endpoint;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Asking the head failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No connection to the head.
    #[error("cannot reach the head at {addr}: {detail}")]
    Unreachable {
        /// The head.
        addr: SocketAddr,
        /// Why.
        detail: String,
    },
    /// The head answered with an error.
    #[error("{0}")]
    Head(String),
}

/// A cached answer.
struct Cached {
    at: Instant,
    rows: Arc<Vec<Value>>,
}

/// The head, as the dashboard reads it.
pub struct Source {
    addr: SocketAddr,
    token: JoinToken,
    ttl: Duration,
    endpoint: QuicEndpoint,
    client: Mutex<Option<HeadClient>>,
    cache: Mutex<HashMap<&'static str, Cached>>,
}

impl Source {
    /// A source for the head at `addr`, authenticating with `token`;
    /// listings are reused for `ttl`.
    pub fn new(addr: SocketAddr, token: JoinToken, ttl: Duration) -> std::io::Result<Source> {
        let unspecified = if addr.is_ipv4() {
            [0u8; 4].into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        let endpoint = QuicEndpoint::client(unspecified).map_err(std::io::Error::other)?;
        Ok(Source {
            addr,
            token,
            ttl,
            endpoint,
            client: Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
        })
    }

    async fn client(&self) -> Result<HeadClient, SourceError> {
        let mut held = self.client.lock().await;
        if let Some(c) = held.as_ref() {
            return Ok(c.clone());
        }
        let trust = ClientTrust::Pinned {
            ca_fingerprint: self.token.ca_fingerprint.clone(),
        };
        let config = prism::Config::from_env().unwrap_or_default();
        let c = HeadClient::connect(
            &self.endpoint,
            self.addr,
            &trust,
            Some(&self.token),
            PeerRole::Client,
            &config,
        )
        .await
        .map_err(|e| SourceError::Unreachable {
            addr: self.addr,
            detail: e.to_string(),
        })?;
        *held = Some(c.clone());
        Ok(c)
    }

    /// One request to the head (a dropped connection is dialled again once).
    pub async fn request(&self, req: &HeadRequest) -> Result<HeadResponse, SourceError> {
        for attempt in 0..2 {
            let c = self.client().await?;
            match c.request(req).await {
                Ok(r) => return Ok(r),
                Err(prism::client::ClientError::Refused { message, .. }) => {
                    return Err(SourceError::Head(message))
                }
                Err(e) if attempt == 1 => {
                    return Err(SourceError::Unreachable {
                        addr: self.addr,
                        detail: e.to_string(),
                    })
                }
                Err(_) => {
                    c.close();
                    *self.client.lock().await = None;
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Every row of `table` (cached for the TTL).
    pub async fn rows(&self, table: Table) -> Result<Arc<Vec<Value>>, SourceError> {
        // One listing at a time per table: a second tab waits for the
        // first one's answer instead of asking the head again.
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.get(table.name()) {
            if c.at.elapsed() < self.ttl {
                return Ok(c.rows.clone());
            }
        }
        let client = self.client().await?;
        let rows = match client.rows(table).await {
            Ok(r) => r,
            Err(_) => {
                // One more try on a fresh connection.
                *self.client.lock().await = None;
                let c = self.client().await?;
                c.rows(table)
                    .await
                    .map_err(|e| SourceError::Head(e.to_string()))?
            }
        };
        let rows = Arc::new(rows);
        cache.insert(
            table.name(),
            Cached {
                at: Instant::now(),
                rows: rows.clone(),
            },
        );
        Ok(rows)
    }

    /// A page of tasks filtered by the raylets (not cached: it is cheap).
    pub async fn task_page(
        &self,
        filter: prism::proto::state::TaskFilter,
    ) -> Result<(Vec<Value>, u64), SourceError> {
        let c = self.client().await?;
        match c.task_page(filter.clone()).await {
            Ok(p) => Ok(p),
            Err(prism::client::ClientError::Refused { message, .. }) => {
                Err(SourceError::Head(message))
            }
            Err(_) => {
                *self.client.lock().await = None;
                let c = self.client().await?;
                c.task_page(filter)
                    .await
                    .map_err(|e| SourceError::Head(e.to_string()))
            }
        }
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.endpoint.close();
    }
}
