//! Where the dashboard's data comes from: the head, over the same
//! authenticated QUIC connection `prism list` uses (the dashboard is a
//! client of the head core, never an owner of state). Answers are cached
//! for a moment, so many open tabs cost the head one listing, not one each.
//!
//! A person logged in with their own token reads through their own
//! connection ([`Source::view`]), so the head's gate decides what they see
//! and may do (their namespaces, their role), and a revoked token fails on
//! the next request of an open session; each user has their own cache.

use prism::client::{HeadClient, Table};
use prism::proto::head::{ErrorKind, HeadRequest, HeadResponse};
use prism::token::{Credential, JoinToken, UserToken};
use prism::transport::quic::QuicEndpoint;
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
    /// The head refused this user (role, namespace, revoked or wrong token).
    #[error("{0}")]
    Forbidden(String),
}

/// A refusal from the head, as a [`SourceError`].
fn refused(kind: ErrorKind, message: String) -> SourceError {
    match kind {
        ErrorKind::Forbidden | ErrorKind::Unauthorized => SourceError::Forbidden(message),
        _ => SourceError::Head(message),
    }
}

/// A cached answer.
struct Cached {
    at: Instant,
    rows: Arc<Vec<Value>>,
}

/// Who a link reads the head as.
enum Who {
    /// The join token: the cluster's admin.
    Admin,
    /// The join token, as a viewer of these namespaces only.
    Viewer(Vec<String>),
    /// A person, with their own token.
    User(UserToken),
}

/// One identity's connection to the head and its cache.
struct Link {
    who: Who,
    client: Mutex<Option<HeadClient>>,
    cache: Mutex<HashMap<&'static str, Cached>>,
}

impl Link {
    fn new(who: Who) -> Arc<Link> {
        Arc::new(Link {
            who,
            client: Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
        })
    }
}

/// The head, as the dashboard reads it.
pub struct Source {
    addr: SocketAddr,
    token: JoinToken,
    ttl: Duration,
    endpoint: QuicEndpoint,
    /// The cluster token's connection (admins).
    admin: Arc<Link>,
    /// The read-only token's: the join token, as a viewer of some
    /// namespaces.
    viewer: Arc<Link>,
    /// Each logged-in user's, by their token.
    users: std::sync::Mutex<HashMap<String, Arc<Link>>>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("head", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The head as one identity reads it.
pub struct View<'a> {
    src: &'a Source,
    link: Arc<Link>,
}

impl Source {
    /// A source for the head at `addr`, authenticating with `token` (as a
    /// viewer of `viewer_namespaces` for the read-only token); listings are
    /// reused for `ttl`.
    pub fn new(
        addr: SocketAddr,
        token: JoinToken,
        viewer_namespaces: Vec<String>,
        ttl: Duration,
    ) -> std::io::Result<Source> {
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
            admin: Link::new(Who::Admin),
            viewer: Link::new(Who::Viewer(viewer_namespaces)),
            users: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The head as the cluster token reads it.
    pub fn admin(&self) -> View<'_> {
        View {
            src: self,
            link: self.admin.clone(),
        }
    }

    /// The head as `role` reads it.
    pub fn view(&self, role: &crate::auth::Role) -> View<'_> {
        let user = match role {
            crate::auth::Role::Admin => return self.admin(),
            crate::auth::Role::Viewer => {
                return View {
                    src: self,
                    link: self.viewer.clone(),
                }
            }
            crate::auth::Role::User(user) => user,
        };
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let link = users
            .entry(user.to_string())
            .or_insert_with(|| Link::new(Who::User(UserToken::clone(user))))
            .clone();
        View { src: self, link }
    }

    /// Closes the connections.
    pub fn close(&self) {
        self.endpoint.close();
    }
}

impl View<'_> {
    async fn client(&self) -> Result<HeadClient, SourceError> {
        let mut held = self.link.client.lock().await;
        if let Some(c) = held.as_ref() {
            return Ok(c.clone());
        }
        let src = self.src;
        let config = prism::Config::from_env().unwrap_or_default();
        let c = match &self.link.who {
            Who::Admin => {
                let cred = Credential::Join(src.token.clone());
                HeadClient::connect_as(&src.endpoint, src.addr, &cred, &config).await
            }
            Who::User(user) => {
                let cred = Credential::User(user.clone());
                HeadClient::connect_as(&src.endpoint, src.addr, &cred, &config).await
            }
            Who::Viewer(ns) => {
                let ns = ns.clone();
                HeadClient::connect_viewer(&src.endpoint, src.addr, &src.token, ns, &config).await
            }
        };
        let c = c.map_err(|e| match e {
            prism::client::ClientError::Refused { kind, message } => refused(kind, message),
            e => SourceError::Unreachable {
                addr: src.addr,
                detail: e.to_string(),
            },
        })?;
        *held = Some(c.clone());
        Ok(c)
    }

    async fn forget_client(&self) {
        *self.link.client.lock().await = None;
    }

    /// One request to the head (a dropped connection is dialled again once).
    pub async fn request(&self, req: &HeadRequest) -> Result<HeadResponse, SourceError> {
        let c = self.client().await?;
        match c.request(req).await {
            Ok(r) => Ok(r),
            Err(prism::client::ClientError::Refused { kind, message }) => {
                Err(refused(kind, message))
            }
            Err(_) => {
                c.close();
                self.forget_client().await;
                let c = self.client().await?;
                c.request(req).await.map_err(|e| match e {
                    prism::client::ClientError::Refused { kind, message } => refused(kind, message),
                    e => SourceError::Unreachable {
                        addr: self.src.addr,
                        detail: e.to_string(),
                    },
                })
            }
        }
    }

    /// Every row of `table` (cached for the TTL).
    pub async fn rows(&self, table: Table) -> Result<Arc<Vec<Value>>, SourceError> {
        // One listing at a time per table: a second tab waits for the
        // first one's answer instead of asking the head again.
        let mut cache = self.link.cache.lock().await;
        // A user's listings are never reused: a revocation holds at once.
        let reuse = !matches!(self.link.who, Who::User(_));
        if let Some(c) = cache.get(table.name()).filter(|_| reuse) {
            if c.at.elapsed() < self.src.ttl {
                return Ok(c.rows.clone());
            }
        }
        let client = self.client().await?;
        let rows = match client.rows(table).await {
            Ok(r) => r,
            Err(prism::client::ClientError::Refused { kind, message }) => {
                return Err(refused(kind, message))
            }
            Err(_) => {
                // One more try on a fresh connection.
                self.forget_client().await;
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
            Err(prism::client::ClientError::Refused { kind, message }) => {
                Err(refused(kind, message))
            }
            Err(_) => {
                self.forget_client().await;
                let c = self.client().await?;
                c.task_page(filter)
                    .await
                    .map_err(|e| SourceError::Head(e.to_string()))
            }
        }
    }
}
