//! Starting a whole node in this process: a head node (the head and, unless
//! `head_only`, a raylet beside it) or a worker node (a raylet). The CLI's
//! daemons and the embedded local cluster both come through here.

use crate::config::Config;
use crate::head::{run_head, HeadError, HeadSetup, Persistence};
use crate::raylet::resources::ResourceOverrides;
use crate::raylet::{hostname, run_raylet, RayletError, RayletOptions, RayletReady};
use crate::session::{ClusterInfo, SessionDir, SessionError};
use crate::token::JoinToken;
use crate::transport::quic::QuicEndpoint;
use crate::transport::{Endpoint, TransportError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The head failed.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// The raylet failed.
    #[error(transparent)]
    Raylet(#[from] RayletError),
    /// The head's port could not be bound.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The session directory failed.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// How to start a head node.
#[derive(Debug, Clone)]
pub struct HeadNodeOptions {
    /// Settings.
    pub config: Config,
    /// The head's UDP address (port 0 picks one).
    pub bind: SocketAddr,
    /// Run the head alone, with no raylet beside it.
    pub head_only: bool,
    /// The local raylet's resources.
    pub resources: ResourceOverrides,
    /// The local raylet's labels.
    pub labels: Vec<(String, String)>,
    /// Whether the head keeps its state across restarts.
    pub persistence: Persistence,
    /// The local raylet's name (default: host and session directory).
    pub node_name: Option<String>,
    /// The CA and join token of a new cluster, made ahead (`prism start
    /// --head --identity`, a Kubernetes Secret); `None` draws fresh ones.
    pub identity: Option<crate::head::identity::ClusterIdentity>,
}

/// A head node that serves.
#[derive(Debug, Clone)]
pub struct HeadReady {
    /// The head's address.
    pub head_address: SocketAddr,
    /// The join token.
    pub token: JoinToken,
    /// The local raylet, unless head-only.
    pub raylet: Option<RayletReady>,
    /// `c-… (N nodes, M actors, J jobs)` when this head recovered a cluster.
    pub recovered: Option<String>,
}

/// The default node name: host and session directory, stable across restarts
/// of a raylet that reuses its session directory.
pub fn default_node_name(session: &SessionDir) -> String {
    let dir = session
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{}/{dir}", hostname())
}

/// Runs a head node until `shutdown` resolves.
pub async fn run_head_node(
    opts: HeadNodeOptions,
    session: &SessionDir,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&HeadReady),
) -> Result<(), NodeError> {
    let setup = HeadSetup::open(
        opts.config.clone(),
        session,
        opts.persistence,
        opts.identity.as_ref(),
    )?;
    let recovered = setup
        .recovered
        .as_ref()
        .map(|s| format!("{} ({})", setup.cluster_id, s.summary()));
    let idle = Duration::from_millis(opts.config.idle_timeout_ms);
    let endpoint: Arc<dyn Endpoint> =
        Arc::new(QuicEndpoint::bind(opts.bind, &setup.identity()?, idle)?);
    let head_address = endpoint.local_addr();
    let token = setup.token.clone();
    session.write_json(
        "cluster.json",
        &ClusterInfo {
            head_address: head_address.to_string(),
            token: token.to_string(),
        },
    )?;
    let (stop_head, head_stopped) = tokio::sync::oneshot::channel::<()>();
    let head = tokio::spawn(run_head(setup, endpoint, async move {
        let _ = head_stopped.await;
    }));
    let result = if opts.head_only {
        on_ready(&HeadReady {
            head_address,
            token,
            raylet: None,
            recovered,
        });
        shutdown.await;
        Ok(())
    } else {
        let raylet = RayletOptions {
            config: opts.config.clone(),
            head: head_address,
            token: token.clone(),
            bind: SocketAddr::new(head_address.ip(), 0),
            node_name: opts
                .node_name
                .clone()
                .unwrap_or_else(|| default_node_name(session)),
            resources: opts.resources,
            labels: opts.labels,
            is_head: true,
        };
        run_raylet(raylet, session, shutdown, |r| {
            on_ready(&HeadReady {
                head_address,
                token: token.clone(),
                raylet: Some(r.clone()),
                recovered: recovered.clone(),
            })
        })
        .await
        .map_err(NodeError::from)
    };
    let _ = stop_head.send(());
    match head.await {
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => tracing::error!("head task failed: {e}"),
        Ok(Ok(())) => {}
    }
    result
}

/// Runs a worker node (a raylet joining `opts.head`) until `shutdown` resolves.
pub async fn run_worker_node(
    opts: RayletOptions,
    session: &SessionDir,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&RayletReady),
) -> Result<(), NodeError> {
    session.write_json(
        "cluster.json",
        &ClusterInfo {
            head_address: opts.head.to_string(),
            token: opts.token.to_string(),
        },
    )?;
    Ok(run_raylet(opts, session, shutdown, on_ready).await?)
}
