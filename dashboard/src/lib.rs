//! Prism's dashboard: an HTTP server beside the head (`prism start --head`
//! runs it; port 8265 by default, like Ray's) with pages for the cluster,
//! jobs, actors, tasks (with a timeline), objects, placement groups,
//! workers and their logs; the JSON state API they read (`/api/v0/*`, the
//! same rows as `prism list --json`); and Prometheus metrics for the whole
//! cluster at `/metrics`. Every request is authenticated ([`auth`]).
//!
//! It is a client of the head — it asks over the same QUIC connection the
//! CLI uses and keeps no state of its own but a short cache — and it lives
//! in this crate so that job binaries never link an HTTP stack.
//!
//! # Layout
//!
//! - [`auth`]: tokens, the login form, the session cookie, 401s.
//! - [`source`]: the head connection and the listing cache.
//! - [`api`] serves `/api/v0/*`.
//! - [`metrics`] serves `/metrics`.
//! - [`pages`]: the HTML shells and the static assets (`assets/`).

#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod metrics;
pub mod pages;
pub mod serving;
pub mod source;

use axum::routing::{get, post};
use axum::Router;
use prism::token::JoinToken;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What the handlers share.
pub struct App {
    /// The head.
    pub source: Arc<source::Source>,
}

/// How to run a dashboard.
#[derive(Debug, Clone)]
pub struct DashboardOptions {
    /// Where to listen.
    pub bind: SocketAddr,
    /// When the port is taken, take any free one instead (the default
    /// port; an explicit one fails).
    pub any_port_if_taken: bool,
    /// The head's address.
    pub head: SocketAddr,
    /// The cluster's join token: the dashboard's own credential at the
    /// head, and the admin token of its users.
    pub token: JoinToken,
    /// The read-only token for viewers.
    pub viewer_token: String,
    /// The namespaces the read-only token sees (`*`: all): the head lets
    /// it read state and logs there only.
    pub viewer_namespaces: Vec<String>,
    /// How long a listing is reused.
    pub cache: Duration,
}

/// The dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The port could not be bound.
    #[error("the dashboard cannot listen on {addr}: {source} (choose another with --dashboard-port, or --no-dashboard)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No client endpoint for the head.
    #[error("the dashboard cannot open a connection endpoint: {0}")]
    Endpoint(std::io::Error),
}

/// A fresh read-only token: 32 hex digits.
pub fn new_viewer_token() -> String {
    let b: [u8; 16] = rand::random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every route, behind authentication.
pub fn router(app: Arc<App>, auth: Arc<auth::Auth>) -> Router {
    let api = Router::new()
        .route("/api/v0/summary", get(api::summary))
        .route("/api/v0/logs", get(api::logs))
        .route("/api/v0/timeline", get(api::timeline))
        .route("/api/v0/whoami", get(api::whoami))
        .route("/api/v0/jobs/{id}/stop", post(api::stop_job))
        .route("/api/v0/runs", get(api::runs))
        .route("/api/v0/runs/{id}", get(api::run))
        .route("/api/v0/models", get(api::models))
        .route("/api/v0/models/{name}", get(api::model))
        .route("/api/v0/serve", get(serving::serve))
        .route("/api/v0/{table}", get(api::table))
        .route("/metrics", get(metrics::scrape))
        .route("/", get(pages::page))
        .route("/{page}", get(pages::page))
        .route("/nodes/{id}", get(pages::node))
        .route("/logs", get(pages::log))
        .route("/static/app.js", get(pages::app_js))
        .route("/static/style.css", get(pages::style_css))
        .with_state(app);
    let login = Router::new()
        .route("/login", get(auth::login_get).post(auth::login_post))
        .with_state(auth.clone());
    api.merge(login)
        .layer(axum::middleware::from_fn_with_state(auth, auth::require))
}

/// A dashboard listening on its port.
pub struct Dashboard {
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    auth: Arc<auth::Auth>,
}

impl Dashboard {
    /// Binds the port now (so the caller can print the address); must be
    /// called inside a tokio runtime.
    pub fn bind(opts: DashboardOptions) -> Result<Dashboard, DashboardError> {
        let listen = |addr: SocketAddr| {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(l)
        };
        let listener = match listen(opts.bind) {
            Ok(l) => l,
            Err(e) if opts.any_port_if_taken && e.kind() == std::io::ErrorKind::AddrInUse => {
                let any = SocketAddr::new(opts.bind.ip(), 0);
                listen(any).map_err(|source| DashboardError::Bind { addr: any, source })?
            }
            Err(source) => {
                return Err(DashboardError::Bind {
                    addr: opts.bind,
                    source,
                })
            }
        };
        let source = Arc::new(
            source::Source::new(
                opts.head,
                opts.token.clone(),
                opts.viewer_namespaces.clone(),
                opts.cache,
            )
            .map_err(DashboardError::Endpoint)?,
        );
        let auth = auth::Auth::new(&opts.token, &opts.viewer_token, Some(source.clone()));
        Ok(Dashboard {
            listener,
            app: Arc::new(App { source }),
            auth: Arc::new(auth),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        let app = self.app.clone();
        let router = router(self.app, self.auth);
        if let Err(e) = axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!("the dashboard stopped: {e}");
        }
        app.source.close();
    }
}
