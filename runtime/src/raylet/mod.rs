//! The raylet: one per machine (or several on one machine, each with its
//! own session directory and port). It joins the cluster with the token,
//! registers its resources, heartbeats, and registers again as a new
//! incarnation if the head declared it dead.
//!
//! # Layout
//!
//! Three doors, one per side, around one service:
//!
//! - [`local_door`]: drivers and workers on this machine (`tasks.sock`);
//! - [`peer_door`]: other raylets and the head over QUIC (object ranges,
//!   spilled tasks, actor call streams, bundle operations, state listings);
//! - [`head_link`]: this raylet's connection to the head (requests, the
//!   registration and heartbeat loop);
//! - [`service`]: the shell around the pure [`dispatch`] core (queue,
//!   resource ledger, worker pool, actors, bundles): it carries out the
//!   dispatcher's actions and routes each reply by its owner's kind; actor
//!   links (`actor_links`, `actor_route`), bundle operations (`bundle_ops`)
//!   and state listings (`state_view`) are its other faces;
//! - [`store_server`]: the machine's object store on `store.sock`, with
//!   [`transfer`] pulling what it lacks from [`peers`];
//! - [`workers`] (processes) and [`resources`] (detection).

mod actor_links;
mod actor_route;
pub mod borrow_ledger;
pub mod bulk;
mod bundle_ops;
mod copy_report;
pub mod dispatch;
mod drain_copies;
pub mod head_link;
pub mod held_ledger;
mod held_results;
pub mod local_door;
mod object_refs;
pub mod peer_door;
pub mod peers;
mod preemption;
mod reporter;
mod residency_claims;
pub mod resources;
pub mod service;
mod state_view;
pub mod status_mirror;
pub mod store_door;
pub mod store_server;
pub mod task_history;
pub mod transfer;
mod worker_life;
pub mod worker_logs;
pub mod workers;

use crate::client::{ClientError, HeadClient};
use crate::config::Config;
use crate::ids::NodeId;
use crate::proto::common::{GpuInfo, Resources};
use crate::proto::head::{HeadRequest, HeadResponse, PeerRole, RegisterNode};
use crate::session::{SessionDir, SessionError};
use crate::token::JoinToken;
use crate::transport::quic::QuicEndpoint;
use crate::transport::tls::{fingerprint_pem, ClientTrust, NodeIdentity, TlsError};
use crate::transport::{Endpoint, TransportError};
use prism_scheduler::ResourceSet;
use resources::{node_resources, ResourceError, ResourceOverrides};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::info;

/// The raylet could not start or lost the cluster.
#[derive(Debug, thiserror::Error)]
pub enum RayletError {
    /// The head refused the join token or the connection.
    #[error("cannot join the cluster at {head}: {cause}")]
    Join {
        /// The head.
        head: SocketAddr,
        /// Why.
        cause: ClientError,
    },
    /// Registration failed.
    #[error("cannot register with the head at {head}: {cause}")]
    Register {
        /// The head.
        head: SocketAddr,
        /// Why.
        cause: ClientError,
    },
    /// Resource overrides are invalid.
    #[error(transparent)]
    Resources(#[from] ResourceError),
    /// The endpoint could not be bound.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Certificates are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The session directory failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The object store could not be created.
    #[error("cannot create the object store: {0}")]
    Store(#[from] prism_objectstore::StoreError),
    /// The kernel would not allocate the object store's pages at start.
    #[error("cannot pre-fault the object store's {bytes} bytes (PRISM_OBJECT_STORE_PREFAULT is set): {source}; give it less --object-store-memory, or unset PRISM_OBJECT_STORE_PREFAULT")]
    Prefault {
        /// The store's size.
        bytes: u64,
        /// Why the kernel refused.
        source: std::io::Error,
    },
    /// The object store socket could not be bound.
    #[error("cannot bind the object store socket {path}: {source}")]
    StoreSocket {
        /// The socket path.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// How to run a raylet.
#[derive(Debug, Clone)]
pub struct RayletOptions {
    /// Settings.
    pub config: Config,
    /// The head.
    pub head: SocketAddr,
    /// The join token.
    pub token: JoinToken,
    /// Where to bind this raylet's UDP port (port 0 picks one).
    pub bind: SocketAddr,
    /// Stable name; defaults to host and session directory.
    pub node_name: String,
    /// Resource overrides.
    pub resources: ResourceOverrides,
    /// Labels.
    pub labels: Vec<(String, String)>,
    /// Whether this raylet runs beside the head.
    pub is_head: bool,
}

/// A registered raylet.
#[derive(Debug, Clone)]
pub struct RayletReady {
    /// Its node id (of the first incarnation of this run).
    pub node_id: NodeId,
    /// Its QUIC address.
    pub address: SocketAddr,
    /// The local object store's Unix socket.
    pub store_socket: std::path::PathBuf,
    /// The local task socket (drivers and workers).
    pub task_socket: std::path::PathBuf,
}

/// The smallest object store a raylet creates, in bytes.
const MIN_STORE_BYTES: i64 = 1 << 20;

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Gets this node's certificate: from the session directory, or by joining.
async fn identity(opts: &RayletOptions, session: &SessionDir) -> Result<NodeIdentity, RayletError> {
    if let (Some(ca_pem), Some(cert_pem), Some(key_pem)) = (
        session.read("node-ca.pem")?,
        session.read("node.pem")?,
        session.read("node.key")?,
    ) {
        if fingerprint_pem(&ca_pem)?.starts_with(&opts.token.ca_fingerprint) {
            return Ok(NodeIdentity {
                ca_pem,
                cert_pem,
                key_pem,
            });
        }
    }
    let head = opts.head;
    let join = |cause| RayletError::Join { head, cause };
    let ep = QuicEndpoint::client(opts.bind.ip())?;
    let trust = ClientTrust::Pinned {
        ca_fingerprint: opts.token.ca_fingerprint.clone(),
    };
    let client = HeadClient::connect(
        &ep,
        head,
        &trust,
        Some(&opts.token),
        PeerRole::Raylet,
        &opts.config,
    )
    .await
    .map_err(join)?;
    let resp = client
        .request(&HeadRequest::Join {
            node_name: opts.node_name.clone(),
        })
        .await
        .map_err(join)?;
    client.close();
    ep.close();
    let HeadResponse::Joined {
        ca_pem,
        cert_pem,
        key_pem,
    } = resp
    else {
        return Err(join(ClientError::Unexpected(format!("{resp:?}"))));
    };
    session.write_secret("node-ca.pem", &ca_pem)?;
    session.write_secret("node.pem", &cert_pem)?;
    session.write_secret("node.key", &key_pem)?;
    Ok(NodeIdentity {
        ca_pem,
        cert_pem,
        key_pem,
    })
}

/// Runs a raylet until `shutdown` resolves; `on_ready` runs once registered.
pub async fn run_raylet(
    opts: RayletOptions,
    session: &SessionDir,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&RayletReady),
) -> Result<(), RayletError> {
    let (total, gpus): (ResourceSet, Vec<GpuInfo>) = node_resources(&opts.resources)?;
    let id = Arc::new(identity(&opts, session).await?);
    let store_bytes = total.get(resources::OBJECT_STORE_MEMORY).raw() / prism_scheduler::SCALE;
    let mut store = prism_objectstore::Store::new(
        "prism-store",
        store_bytes.max(MIN_STORE_BYTES) as usize,
        Some(session.file("spill")),
    )?;
    if opts.config.object_store_prefault {
        // Before any client maps the segment; about 0.3 s per GB, off the
        // async workers.
        let started = std::time::Instant::now();
        let bytes = store.segment().len() as u64;
        let (back, done) = tokio::task::spawn_blocking(move || {
            let done = store.segment().prefault();
            (store, done)
        })
        .await
        .map_err(|e| RayletError::Prefault {
            bytes,
            source: std::io::Error::other(e.to_string()),
        })?;
        done.map_err(|source| RayletError::Prefault { bytes, source })?;
        store = back;
        let ms = started.elapsed().as_millis() as u64;
        info!(bytes, ms, "object store pre-faulted");
    }
    let store_socket = session.file("store.sock");
    let listener = store_door::bind(&store_socket).map_err(|source| RayletError::StoreSocket {
        path: store_socket.clone(),
        source,
    })?;
    let server =
        store_server::StoreServer::new(store).map_err(|source| RayletError::StoreSocket {
            path: store_socket.clone(),
            source,
        })?;
    server.set_max_clients(opts.config.max_local_clients);
    store_door::serve(listener, server.clone()).map_err(|source| RayletError::StoreSocket {
        path: store_socket.clone(),
        source,
    })?;
    let idle = Duration::from_millis(opts.config.idle_timeout_ms);
    let endpoint: Arc<dyn Endpoint> = Arc::new(QuicEndpoint::bind(opts.bind, &id, idle)?);
    let address = endpoint.local_addr();
    // Object bytes for peers also go out over TLS on TCP, at the same port
    // number (the bulk channel, `bulk.rs`).
    let bulk = bulk::listen(address, &id, server.clone()).await;
    if let Some((at, _)) = &bulk {
        info!(%at, "bulk channel listening");
    }
    let trust = ClientTrust::Mutual(id);
    let head = opts.head;
    let link = Arc::new(head_link::HeadLink::new(
        endpoint.clone(),
        head,
        trust.clone(),
        opts.config.clone(),
    ));
    let registration = RegisterNode {
        node_name: opts.node_name.clone(),
        address: address.to_string(),
        resources: Resources::from(&total),
        labels: opts.labels.clone(),
        gpus,
        is_head: opts.is_head,
        pid: std::process::id(),
    };
    let register_err = |cause| RayletError::Register { head, cause };
    let client = link.connect().await.map_err(register_err)?;
    let (node_id, incarnation, spill_key) = head_link::register(&client, &registration)
        .await
        .map_err(register_err)?;
    // Held in memory only: the head hands it over at every start.
    server.set_spill_key(spill_key.as_ref());
    info!(node = %node_id, %address, incarnation, resources = %total, "raylet registered");
    let chunk_timeout = Duration::from_millis(opts.config.transfer_chunk_timeout_ms);
    let peers = peers::Peers::new(endpoint.clone(), trust.clone());
    let transfer = transfer::Transfer::new(
        link.clone(),
        node_id,
        peers,
        Arc::new(bulk::BulkClient::new(&trust)),
        chunk_timeout,
        opts.labels.clone(),
    );
    server.set_transfer(transfer.clone());
    let copies = tokio::spawn(transfer.clone().report_copies(server.clone()));
    let task_socket = local_door::socket_path(session.path());
    let task_listener =
        local_door::bind(&task_socket).map_err(|source| RayletError::StoreSocket {
            path: task_socket.clone(),
            source,
        })?;
    let local = prism_scheduler::NodeResources::new(total.clone())
        .with_labels(opts.labels.iter().cloned().collect());
    let tasks = service::TaskService::new(
        node_id,
        local,
        workers::WorkerEnv {
            task_socket: task_socket.clone(),
            store_socket: store_socket.clone(),
            binaries: std::path::Path::new(&opts.config.temp_dir).join("binaries"),
            node_address: address.to_string(),
            hello_timeout: Duration::from_millis(opts.config.worker_start_timeout_ms),
            malloc_hugepages: opts.config.worker_malloc_hugepages,
            labels: opts
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect(),
        },
        server.clone(),
        transfer.clone(),
        Duration::from_millis(opts.config.infeasible_timeout_ms),
        opts.config.task_history,
    );
    let task_accept = tokio::spawn(local_door::serve(task_listener, tasks.clone()));
    if !opts.config.preemption_file.is_empty() {
        let path = std::path::PathBuf::from(&opts.config.preemption_file);
        tasks.watch_preemption(path, opts.config.heartbeat_interval());
    }
    let peers = tokio::spawn(peer_door::serve_peers(
        endpoint.clone(),
        server.clone(),
        tasks.clone(),
    ));
    on_ready(&RayletReady {
        node_id,
        address,
        store_socket: store_socket.clone(),
        task_socket: task_socket.clone(),
    });

    let beats = head_link::Heartbeats {
        link: &link,
        registration,
        interval: opts.config.heartbeat_interval(),
    };
    let node_id = beats.run(client, node_id, &tasks, shutdown).await;
    peers.abort();
    copies.abort();
    task_accept.abort();
    if let Some((_, accept)) = bulk {
        accept.abort();
    }
    tasks.kill_all();
    let _ = std::fs::remove_file(&task_socket);
    store_door::stop(&store_socket, &server);
    endpoint.close();
    info!(node = %node_id, "raylet stopped");
    Ok(())
}
