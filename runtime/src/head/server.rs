//! The head's shell: accepts connections, checks who they are, decodes
//! requests and hands them to the actor that owns the node table.

use super::actor_restart::Restarter;
use super::actor_table::ActorTable;
use super::jobs::JobManager;
use super::node_table::{FailureDetector, HeartbeatOutcome, NodeEvent, NodeTable};
use super::object_directory::ObjectDirectory;
use super::placement::{self, NodeSource, Placer};
use super::state_query::StateQuerier;
use super::{HeadError, HeadSetup};
use crate::ids::{ActorId, ClusterId, JobId, NodeId};
use crate::proto::common::NodeState;
use crate::proto::common::{ClusterStatus, Demand};
use crate::proto::head::{ErrorKind, HeadRequest, HeadResponse, RegisterNode};
use crate::proto::state::StateQuery;
use crate::proto::PROTOCOL_VERSION;
use crate::transport::rpc::{read_msg, write_msg, RpcError};
use crate::transport::tls::{ClientTrust, ClusterCa};
use crate::transport::{BoxConn, Endpoint, PeerIdentity, RecvHalf, SendHalf};
use prism_scheduler::ResourceSet;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

enum HeadMsg {
    Register(RegisterNode, RpcReplyPort<HeadResponse>),
    Heartbeat(NodeId, ResourceSet, Vec<Demand>, RpcReplyPort<HeadResponse>),
    Unregister(NodeId, RpcReplyPort<HeadResponse>),
    Status(RpcReplyPort<ClusterStatus>),
    AddLocation(NodeId, [u8; 16], u64, RpcReplyPort<HeadResponse>),
    GetLocations([u8; 16], RpcReplyPort<HeadResponse>),
    Actors(HeadRequest, RpcReplyPort<HeadResponse>),
    /// A raylet's free resources after a bundle operation.
    Available(NodeId, ResourceSet),
    /// An actor's restart on another node could not be started.
    RestartFailed(ActorId, String),
    Tick,
}

/// The placer's window on the node table.
struct ActorNodes(Arc<std::sync::OnceLock<ActorRef<HeadMsg>>>);

impl NodeSource for ActorNodes {
    async fn status(&self) -> Option<ClusterStatus> {
        let actor = self.0.get()?;
        ractor::call!(actor, HeadMsg::Status).ok()
    }

    fn available(&self, node: NodeId, free: ResourceSet) {
        if let Some(actor) = self.0.get() {
            let _ = actor.cast(HeadMsg::Available(node, free));
        }
    }
}

struct HeadState {
    table: NodeTable,
    directory: ObjectDirectory,
    cluster_id: ClusterId,
    head_address: String,
    demand: std::collections::HashMap<NodeId, Vec<Demand>>,
    actors: ActorTable,
    placer: Arc<Placer>,
    restarter: Arc<Restarter>,
    me: Option<ActorRef<HeadMsg>>,
}

impl HeadState {
    fn register(&mut self, now: Instant, reg: RegisterNode) -> HeadResponse {
        let node_id = NodeId::random();
        let incarnation = self.table.handle_register(now, node_id, reg);
        HeadResponse::Registered {
            node_id,
            incarnation,
            heartbeat_interval_ms: self.table.detector().interval.as_millis() as u64,
        }
    }

    fn heartbeat(&mut self, now: Instant, id: NodeId, available: ResourceSet) -> HeadResponse {
        match self.table.handle_heartbeat(now, id, available) {
            HeartbeatOutcome::Ack => HeadResponse::HeartbeatAck,
            HeartbeatOutcome::ReRegister(reason) => HeadResponse::ReRegister { reason },
        }
    }

    fn status(&self, now: Instant) -> ClusterStatus {
        ClusterStatus {
            cluster_id: self.cluster_id,
            head_address: self.head_address.clone(),
            nodes: self.table.status(now),
            demand: self
                .demand
                .iter()
                .filter(|(id, _)| {
                    self.table
                        .node(**id)
                        .is_some_and(|n| n.state != NodeState::Dead)
                })
                .flat_map(|(_, d)| d.iter().cloned())
                .collect(),
            ended_jobs: Vec::new(),
        }
    }

    fn add_location(&mut self, node: NodeId, object: [u8; 16], size: u64) -> HeadResponse {
        match self.table.node(node) {
            Some(n) if n.state != NodeState::Dead => {
                self.directory.add(object, node, size);
                HeadResponse::Ok
            }
            _ => HeadResponse::Error {
                kind: ErrorKind::BadRequest,
                message: format!("node {node} is not alive; it cannot hold objects"),
            },
        }
    }

    fn locations(&self, object: &[u8; 16]) -> HeadResponse {
        let (size, holders) = self.directory.locations(object).unwrap_or((0, Vec::new()));
        let nodes = holders
            .into_iter()
            .filter_map(|id| {
                self.table
                    .node(id)
                    .filter(|n| n.state != NodeState::Dead)
                    .map(|n| (id, n.reg.address.clone()))
            })
            .collect();
        HeadResponse::ObjectLocations { size, nodes }
    }

    fn actor_request(&mut self, req: HeadRequest) -> HeadResponse {
        match req {
            HeadRequest::RegisterActor(info, create) => {
                match self.actors.register(info, create.map(|c| *c)) {
                    Ok(()) => HeadResponse::Ok,
                    Err(message) => HeadResponse::Error {
                        kind: ErrorKind::BadRequest,
                        message,
                    },
                }
            }
            HeadRequest::UpdateActor {
                actor_id,
                state,
                node,
                restarts,
                reason,
            } => {
                // A late report from a node declared dead must not pull the
                // actor back there (it may be restarting elsewhere).
                let from_dead = node.as_ref().is_some_and(|(n, _)| {
                    self.table
                        .node(*n)
                        .is_none_or(|n| n.state == NodeState::Dead)
                });
                if !from_dead {
                    self.actors.update(actor_id, state, node, restarts, reason);
                }
                HeadResponse::Ok
            }
            HeadRequest::GetActor { actor_id } => {
                HeadResponse::Actor(self.actors.get(actor_id).cloned())
            }
            HeadRequest::GetNamedActor { namespace, name } => {
                HeadResponse::Actor(self.actors.by_name(&namespace, &name).cloned())
            }
            HeadRequest::ListActors => HeadResponse::Actors(self.actors.list()),
            other => HeadResponse::Error {
                kind: ErrorKind::Internal,
                message: format!("not an actor request: {other:?}"),
            },
        }
    }

    /// Actors lost with `node`: restart those that may move (AT-4).
    fn actors_lost(&mut self, now: Instant, node: NodeId, reason: &str) {
        let losses = self.actors.node_died(node, reason);
        if losses.is_empty() {
            return;
        }
        let status = self.status(now);
        let me = self.me.clone();
        let failed = move |actor, why| {
            if let Some(me) = &me {
                let _ = me.cast(HeadMsg::RestartFailed(actor, why));
            }
        };
        let restarter = self.restarter.clone();
        restarter.handle(&mut self.actors, &status, node, losses, failed);
    }

    fn log_events(&mut self, now: Instant) {
        while let Some(ev) = self.table.poll_event() {
            match ev {
                NodeEvent::Registered { id, incarnation } => {
                    let name = self
                        .table
                        .node(id)
                        .map(|n| n.reg.node_name.clone())
                        .unwrap_or_default();
                    info!(node = %id, %name, incarnation, "node registered");
                }
                NodeEvent::Suspected(id) => warn!(node = %id, "node missed heartbeats: suspect"),
                NodeEvent::Recovered(id) => {
                    info!(node = %id, "suspect node heartbeat again: alive")
                }
                NodeEvent::Died { id, reason } => {
                    self.directory.remove_node(id);
                    warn!(node = %id, %reason, "node dead");
                    self.actors_lost(now, id, &reason);
                    self.placer.node_died(id);
                }
            }
        }
    }
}

struct HeadActor;

impl Actor for HeadActor {
    type Msg = HeadMsg;
    type State = HeadState;
    type Arguments = HeadState;

    async fn pre_start(
        &self,
        me: ActorRef<HeadMsg>,
        mut state: HeadState,
    ) -> Result<HeadState, ActorProcessingErr> {
        state.me = Some(me);
        Ok(state)
    }

    async fn handle(
        &self,
        _me: ActorRef<HeadMsg>,
        msg: HeadMsg,
        st: &mut HeadState,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        // A dropped reply port means the caller gave up; nothing to do.
        match msg {
            HeadMsg::Register(reg, reply) => drop(reply.send(st.register(now, reg))),
            HeadMsg::Heartbeat(id, free, demand, reply) => {
                let r = st.heartbeat(now, id, free);
                if r == HeadResponse::HeartbeatAck {
                    st.demand.insert(id, demand);
                }
                drop(reply.send(r))
            }
            HeadMsg::Unregister(id, reply) => drop(reply.send(unregister(&mut st.table, id))),
            HeadMsg::Status(reply) => drop(reply.send(st.status(now))),
            HeadMsg::AddLocation(node, object, size, reply) => {
                drop(reply.send(st.add_location(node, object, size)))
            }
            HeadMsg::GetLocations(object, reply) => drop(reply.send(st.locations(&object))),
            HeadMsg::Actors(req, reply) => drop(reply.send(st.actor_request(req))),
            HeadMsg::Available(id, free) => {
                let _ = st.table.handle_heartbeat(now, id, free);
            }
            HeadMsg::RestartFailed(actor, why) => st.actors.restart_failed(actor, &why),
            HeadMsg::Tick => st.table.tick(now),
        }
        st.log_events(now);
        Ok(())
    }
}

fn unregister(table: &mut NodeTable, id: NodeId) -> HeadResponse {
    table.handle_unregister(id);
    HeadResponse::Ok
}

/// Shared by every connection task.
struct Ctx {
    actor: ActorRef<HeadMsg>,
    ca: ClusterCa,
    token: crate::token::JoinToken,
    cluster_id: ClusterId,
    max_frame: usize,
    jobs: Arc<JobManager>,
    placer: Arc<Placer>,
    state: Arc<StateQuerier>,
}

/// What a connection proved in its `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// A node certificate from the cluster CA.
    Node,
    /// The join token, no certificate.
    Client,
}

/// Runs the head on a bound endpoint until `shutdown` resolves.
pub async fn run_head(
    setup: HeadSetup,
    endpoint: Arc<dyn Endpoint>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), HeadError> {
    let cfg = &setup.config;
    let detector = FailureDetector {
        interval: cfg.heartbeat_interval(),
        suspect_after: cfg.suspect_after_missed,
        dead_after: cfg.dead_after_missed,
    };
    let actor_slot = Arc::new(std::sync::OnceLock::new());
    let trust = ClientTrust::Mutual(Arc::new(setup.ca.issue("head")?));
    let restarter = Restarter::new(endpoint.clone(), trust.clone());
    let querier = StateQuerier::new(endpoint.clone(), trust.clone());
    let placer = placement::start(ActorNodes(actor_slot.clone()), endpoint.clone(), trust);
    let state = HeadState {
        restarter,
        me: None,
        placer: placer.clone(),
        table: NodeTable::new(detector),
        directory: ObjectDirectory::default(),
        cluster_id: setup.cluster_id,
        head_address: endpoint.local_addr().to_string(),
        demand: Default::default(),
        actors: ActorTable::default(),
    };
    let (actor, handle) = Actor::spawn(None, HeadActor, state)
        .await
        .map_err(|e| HeadError::Actor(e.to_string()))?;
    let _ = actor_slot.set(actor.clone());
    let jobs = JobManager::new(
        setup.session_dir.clone(),
        cfg.temp_dir.clone(),
        endpoint.local_addr().to_string(),
        setup.token.to_string(),
    );
    let ctx = Arc::new(Ctx {
        state: querier,
        jobs,
        placer,
        actor: actor.clone(),
        ca: setup.ca,
        token: setup.token,
        cluster_id: setup.cluster_id,
        max_frame: cfg.max_frame_bytes,
    });
    let ticker = {
        let actor = actor.clone();
        let period = (detector.interval / 2).max(Duration::from_millis(5));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                if actor.cast(HeadMsg::Tick).is_err() {
                    return;
                }
            }
        })
    };
    info!(address = %endpoint.local_addr(), cluster = %setup.cluster_id, "head serving");
    tokio::select! {
        _ = shutdown => info!("head shutting down"),
        _ = accept_loop(endpoint.clone(), ctx) => warn!("head endpoint closed"),
    }
    ticker.abort();
    endpoint.close();
    actor.stop(None);
    let _ = handle.await;
    Ok(())
}

async fn accept_loop(endpoint: Arc<dyn Endpoint>, ctx: Arc<Ctx>) {
    while let Some(incoming) = endpoint.accept().await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => serve_conn(conn, ctx).await,
                Err(e) => warn!("{e}"),
            }
        });
    }
}

async fn serve_conn(conn: BoxConn, ctx: Arc<Ctx>) {
    let addr = conn.remote_addr();
    // An unauthenticated peer gets a small frame limit and a deadline.
    let hello = async {
        let (s, r) = conn.accept_bi().await.ok()?;
        handshake(&conn, s, r, &ctx).await
    };
    let Ok(Some(auth)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, hello).await else {
        conn.close("no valid Hello in time");
        return;
    };
    debug!(%addr, ?auth, "connection authenticated");
    let drivers: Arc<std::sync::Mutex<Vec<JobId>>> = Arc::default();
    while let Ok((s, r)) = conn.accept_bi().await {
        let (conn, ctx, drivers) = (conn.clone(), ctx.clone(), drivers.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_stream(auth, s, r, &conn, &ctx, &drivers).await {
                drop_connection(&conn, &e);
            }
        });
    }
    for job in drivers.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        info!(%job, "driver disconnected; job ended");
        ctx.jobs.disconnected(job);
        ctx.placer.job_ended(job);
    }
}

fn drop_connection(conn: &BoxConn, e: &RpcError) {
    let addr = conn.remote_addr();
    match e {
        RpcError::Codec(c) => warn!(%addr, error = %c, "malformed frame; dropping the connection"),
        other => debug!(%addr, error = %other, "stream failed; dropping the connection"),
    }
    conn.close(&e.to_string());
}

/// How long a new connection has to say a valid `Hello`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest frame accepted before authentication.
const HELLO_MAX_FRAME: usize = 64 << 10;

/// The first stream must carry `Hello`; returns how the peer authenticated.
async fn handshake(conn: &BoxConn, mut s: SendHalf, mut r: RecvHalf, ctx: &Ctx) -> Option<Auth> {
    let addr = conn.remote_addr();
    let refuse = |kind, message: String| HeadResponse::Error { kind, message };
    let (reply, auth) = match read_msg::<HeadRequest, _>(&mut r, HELLO_MAX_FRAME.min(ctx.max_frame)).await {
        Err(e) => {
            warn!(%addr, error = %e, "malformed first frame; refusing the connection");
            (refuse(ErrorKind::BadRequest, e.to_string()), None)
        }
        Ok(Some(HeadRequest::Hello { version, token, .. })) if version == PROTOCOL_VERSION => {
            if conn.peer() == PeerIdentity::ClusterNode {
                (HeadResponse::Welcome { cluster_id: ctx.cluster_id }, Some(Auth::Node))
            } else if token.as_deref().is_some_and(|t| ctx.token.secret_matches(t)) {
                (HeadResponse::Welcome { cluster_id: ctx.cluster_id }, Some(Auth::Client))
            } else {
                let why = if token.is_some() { "invalid join token" } else { "missing join token" };
                warn!(%addr, "refused connection: {why}");
                (refuse(ErrorKind::Unauthorized, format!("{why}: the head refused this connection")), None)
            }
        }
        Ok(Some(HeadRequest::Hello { version, .. })) => (
            refuse(
                ErrorKind::BadRequest,
                format!("protocol version mismatch: peer speaks v{version}, head speaks v{PROTOCOL_VERSION}"),
            ),
            None,
        ),
        Ok(Some(_)) => (refuse(ErrorKind::BadRequest, "the first request must be Hello".into()), None),
        Ok(None) => return None,
    };
    let sent = write_msg(&mut s, &reply).await;
    if auth.is_none() || sent.is_err() {
        // Let the refusal reach the peer before closing (closing discards unsent data).
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.closed()).await;
        conn.close("refused");
    }
    auth
}

async fn serve_stream(
    auth: Auth,
    mut s: SendHalf,
    mut r: RecvHalf,
    conn: &BoxConn,
    ctx: &Ctx,
    drivers: &std::sync::Mutex<Vec<JobId>>,
) -> Result<(), RpcError> {
    let Some(req) = read_msg::<HeadRequest, _>(&mut r, ctx.max_frame).await? else {
        return Ok(());
    };
    let needs_node = |op: &str| HeadResponse::Error {
        kind: ErrorKind::Unauthorized,
        message: format!(
            "{op} needs a node certificate from the cluster CA; join with the token first"
        ),
    };
    let reply = match req {
        HeadRequest::Hello { .. } => HeadResponse::Welcome {
            cluster_id: ctx.cluster_id,
        },
        HeadRequest::Join { node_name } => match ctx.ca.issue(&node_name) {
            Ok(id) => {
                info!(addr = %conn.remote_addr(), %node_name, "issued a node certificate");
                HeadResponse::Joined {
                    ca_pem: id.ca_pem,
                    cert_pem: id.cert_pem,
                    key_pem: id.key_pem,
                }
            }
            Err(e) => internal(e),
        },
        HeadRequest::Register(_) if auth != Auth::Node => needs_node("Register"),
        HeadRequest::Heartbeat { .. } if auth != Auth::Node => needs_node("Heartbeat"),
        HeadRequest::Unregister { .. } if auth != Auth::Node => needs_node("Unregister"),
        HeadRequest::AddObjectLocation { .. } if auth != Auth::Node => {
            needs_node("AddObjectLocation")
        }
        HeadRequest::AddObjectLocation {
            node_id,
            object,
            size,
        } => ractor::call!(ctx.actor, HeadMsg::AddLocation, node_id, object, size)
            .unwrap_or_else(internal),
        HeadRequest::GetObjectLocations { object } => {
            ractor::call!(ctx.actor, HeadMsg::GetLocations, object).unwrap_or_else(internal)
        }
        HeadRequest::Register(reg) => {
            ractor::call!(ctx.actor, HeadMsg::Register, reg).unwrap_or_else(internal)
        }
        HeadRequest::Heartbeat {
            node_id,
            available,
            demand,
        } => ractor::call!(
            ctx.actor,
            HeadMsg::Heartbeat,
            node_id,
            available.to_set(),
            demand
        )
        .unwrap_or_else(internal),
        HeadRequest::Unregister { node_id } => {
            ractor::call!(ctx.actor, HeadMsg::Unregister, node_id).unwrap_or_else(internal)
        }
        HeadRequest::GetStatus => ractor::call!(ctx.actor, HeadMsg::Status)
            .map(|mut s| {
                s.ended_jobs = ctx.jobs.ended_recently(Duration::from_secs(600));
                HeadResponse::Status(s)
            })
            .unwrap_or_else(internal),
        HeadRequest::UploadBinary { hash, len } => upload(&mut r, ctx, hash, len).await,
        HeadRequest::SubmitJob(sub) => match ctx.jobs.submit(sub) {
            Ok(job_id) => HeadResponse::JobSubmitted { job_id },
            Err(message) => bad_request(message),
        },
        HeadRequest::RegisterDriver {
            job_id,
            entrypoint,
            pid,
        } => {
            ctx.jobs.register(job_id, entrypoint, pid);
            drivers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(job_id);
            HeadResponse::Ok
        }
        HeadRequest::ListJobs => HeadResponse::Jobs(ctx.jobs.list()),
        req @ (HeadRequest::RegisterActor(..)
        | HeadRequest::UpdateActor { .. }
        | HeadRequest::GetActor { .. }
        | HeadRequest::GetNamedActor { .. }
        | HeadRequest::ListActors) => {
            ractor::call!(ctx.actor, HeadMsg::Actors, req).unwrap_or_else(internal)
        }
        HeadRequest::ListTasks => list_state(ctx, StateQuery::Tasks).await,
        HeadRequest::ListObjects => list_state(ctx, StateQuery::Objects).await,
        HeadRequest::CreatePlacementGroup(c) => ctx.placer.create(c),
        HeadRequest::GetPlacementGroup { pg } => ctx.placer.get(pg),
        HeadRequest::WaitPlacementGroup { pg, timeout_ms } => {
            let limit = Duration::from_millis(timeout_ms.min(3_600_000));
            ctx.placer.wait(pg, limit).await
        }
        HeadRequest::RemovePlacementGroup { pg } => ctx.placer.remove(pg, "removed by its owner"),
        HeadRequest::ListPlacementGroups => ctx.placer.list(),
        HeadRequest::JobLogs { job_id, offset } => match ctx.jobs.logs(job_id, offset) {
            Ok((data, next, job)) => HeadResponse::Logs { data, next, job },
            Err(message) => bad_request(message),
        },
        HeadRequest::StopJob { job_id } => match ctx.jobs.stop(job_id, Duration::from_secs(3)) {
            Ok(()) => HeadResponse::Ok,
            Err(message) => bad_request(message),
        },
    };
    write_msg(&mut s, &reply).await
}

async fn list_state(ctx: &Ctx, query: StateQuery) -> HeadResponse {
    match ractor::call!(ctx.actor, HeadMsg::Status) {
        Ok(status) => ctx.state.list(&status, query).await,
        Err(e) => internal(e),
    }
}

/// The largest job binary the head accepts.
const MAX_BINARY: u64 = 2 << 30;

async fn upload(r: &mut RecvHalf, ctx: &Ctx, hash: [u8; 32], len: u64) -> HeadResponse {
    use tokio::io::AsyncReadExt;
    if len > MAX_BINARY {
        return bad_request(format!(
            "a {len}-byte binary is over the {MAX_BINARY}-byte limit"
        ));
    }
    let mut bytes = Vec::with_capacity(len.min(64 << 20) as usize);
    if let Err(e) = r.take(len).read_to_end(&mut bytes).await {
        return bad_request(format!("binary upload failed: {e}"));
    }
    if bytes.len() as u64 != len {
        return bad_request(format!(
            "binary upload ended after {} of {len} bytes",
            bytes.len()
        ));
    }
    if ctx.jobs.has_binary(&hash) {
        return HeadResponse::Ok;
    }
    match ctx.jobs.store_binary(&hash, &bytes) {
        Ok(()) => HeadResponse::Ok,
        Err(message) => bad_request(message),
    }
}

fn bad_request(message: String) -> HeadResponse {
    HeadResponse::Error {
        kind: ErrorKind::BadRequest,
        message,
    }
}

fn internal(e: impl std::fmt::Display) -> HeadResponse {
    HeadResponse::Error {
        kind: ErrorKind::Internal,
        message: e.to_string(),
    }
}
