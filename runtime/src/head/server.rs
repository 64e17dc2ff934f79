//! The head's server: accepts connections, checks who they are (a node
//! certificate, or the join token in `Hello`), reads each stream's request
//! and hands it to the head core's actor ([`super::shell`]). It moves bytes
//! only: binary uploads to the [`JobRunner`]'s cache, job logs from its
//! files, and task/object listings gathered from the raylets.

use super::access::visibility::Visibility;
use super::core::{Caller, Clock, HeadCore};
use super::dialer::RayletDialer;
use super::job_runner::JobRunner;
use super::node_table::FailureDetector;
use super::shell::{HeadActor, HeadMsg, Shell};
use super::{listing, HeadError, HeadSetup};
use crate::ids::{ClusterId, JobId};
use crate::proto::head::{ErrorKind, HeadRequest, HeadResponse, PeerRole};
use crate::proto::state::StateQuery;
use crate::proto::PROTOCOL_VERSION;
use crate::transport::rpc::{read_msg, write_msg, RpcError};
use crate::transport::tls::{ClientTrust, ClusterCa};
use crate::transport::{BoxConn, Endpoint, PeerIdentity, RecvHalf, SendHalf};
use ractor::{Actor, ActorRef};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Shared by every connection task.
struct Ctx {
    actor: ActorRef<HeadMsg>,
    ca: ClusterCa,
    token: crate::token::JoinToken,
    cluster_id: ClusterId,
    max_frame: usize,
    jobs: JobRunner,
    dialer: Arc<RayletDialer>,
    /// How long requests took, for `/metrics`.
    latency: std::sync::Mutex<crate::metrics::Histogram>,
}

/// Runs the head on a bound endpoint until `shutdown` resolves.
pub async fn run_head(
    mut setup: HeadSetup,
    endpoint: Arc<dyn Endpoint>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), HeadError> {
    let cfg = &setup.config;
    let detector = FailureDetector {
        interval: cfg.heartbeat_interval(),
        suspect_after: cfg.suspect_after_missed,
        dead_after: cfg.dead_after_missed,
    };
    let trust = ClientTrust::Mutual(Arc::new(setup.ca.issue("head")?));
    let dialer = RayletDialer::new(
        endpoint.clone(),
        trust,
        Duration::from_millis(cfg.raylet_rpc_timeout_ms),
    );
    let head_address = endpoint.local_addr().to_string();
    let jobs = JobRunner::new(
        setup.session_dir.clone(),
        cfg.temp_dir.clone(),
        head_address.clone(),
        setup.token.to_string(),
    );
    let core = match setup.recovered.take() {
        Some(snapshot) => HeadCore::restore(
            setup.cluster_id,
            head_address,
            detector,
            Duration::from_millis(cfg.recovery_grace_ms),
            Clock::now(),
            snapshot,
        ),
        None => HeadCore::new(setup.cluster_id, head_address, detector),
    };
    let mut core = core;
    core.audit = super::access::audit::AuditLog::restore(std::mem::take(&mut setup.audit));
    core.spill_key = setup.spill_key;
    if let Some(secret) = setup.namespace_secret {
        core.namespace_secret = secret;
    }
    let orphans = core.live_jobs();
    let mut shell = Shell::new(core, dialer.clone(), jobs.clone(), setup.store.take());
    shell.fingerprint = setup.token.ca_fingerprint.clone();
    shell.recover_after_stop = cfg.recover_after_stop;
    let (actor, handle) = Actor::spawn(None, HeadActor, shell)
        .await
        .map_err(|e| HeadError::Actor(e.to_string()))?;
    let ctx = Arc::new(Ctx {
        actor: actor.clone(),
        ca: setup.ca,
        token: setup.token,
        cluster_id: setup.cluster_id,
        max_frame: cfg.max_frame_bytes,
        jobs,
        dialer,
        latency: Default::default(),
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
    watch_orphaned_drivers(&actor, orphans);
    info!(address = %endpoint.local_addr(), cluster = %setup.cluster_id, "head serving");
    let clean = tokio::select! {
        _ = shutdown => {
            info!("head shutting down");
            true
        }
        _ = accept_loop(endpoint.clone(), ctx) => {
            warn!("head endpoint closed");
            false
        }
    };
    if clean {
        // Stopped on purpose: the next start is a new cluster.
        let _ = ractor::call!(actor, HeadMsg::CleanStop);
    }
    ticker.abort();
    endpoint.close();
    actor.stop(None);
    let _ = handle.await;
    Ok(())
}

/// Submitted jobs whose drivers were the previous head's children: their
/// exits cannot be waited for, so their pids are watched until they go.
fn watch_orphaned_drivers(actor: &ActorRef<HeadMsg>, jobs: Vec<crate::proto::head::JobInfo>) {
    for job in jobs.into_iter().filter(|j| j.submitted) {
        let Some(pid) = job.pid else { continue };
        let actor = actor.clone();
        tokio::spawn(async move {
            while std::path::Path::new(&format!("/proc/{pid}")).exists() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let detail = format!(
                "its driver (pid {pid}) exited while the head was away or after it restarted; its exit status is unknown"
            );
            let _ = actor.cast(HeadMsg::JobExited(job.job_id, None, detail));
        });
    }
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
    let Ok(Some(caller)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, hello).await else {
        conn.close("no valid Hello in time");
        return;
    };
    debug!(%addr, ?caller, "connection authenticated");
    let drivers: Arc<std::sync::Mutex<Vec<JobId>>> = Arc::default();
    while let Ok((s, r)) = conn.accept_bi().await {
        let (conn, ctx, drivers) = (conn.clone(), ctx.clone(), drivers.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_stream(caller, s, r, &ctx, &drivers).await {
                drop_connection(&conn, &e);
            }
        });
    }
    for job in drivers.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        let _ = ctx.actor.cast(HeadMsg::DriverGone(job));
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
async fn handshake(conn: &BoxConn, mut s: SendHalf, mut r: RecvHalf, ctx: &Ctx) -> Option<Caller> {
    let addr = conn.remote_addr();
    let refuse = |kind, message: String| HeadResponse::Error { kind, message };
    let (reply, auth) = match read_msg::<HeadRequest, _>(&mut r, HELLO_MAX_FRAME.min(ctx.max_frame)).await {
        Err(e) => {
            warn!(%addr, error = %e, "malformed first frame; refusing the connection");
            (refuse(ErrorKind::BadRequest, e.to_string()), None)
        }
        Ok(Some(HeadRequest::Hello { version, token, role })) if version == PROTOCOL_VERSION => {
            let viewer = match role {
                PeerRole::Viewer { namespaces } => Some(namespaces),
                _ => None,
            };
            if let PeerIdentity::ClusterNode { cert } = conn.peer() {
                (HeadResponse::Welcome { cluster_id: ctx.cluster_id }, Some(Caller::Node { cert }))
            } else if token.as_deref().is_some_and(|t| ctx.token.secret_matches(t)) {
                match viewer {
                    None => (HeadResponse::Welcome { cluster_id: ctx.cluster_id }, Some(Caller::Client)),
                    Some(namespaces) => match ractor::call!(ctx.actor, HeadMsg::Viewer, namespaces) {
                        Ok(Ok(id)) => (
                            HeadResponse::Welcome { cluster_id: ctx.cluster_id },
                            Some(Caller::Viewer { id, from: addr }),
                        ),
                        Ok(Err(why)) => (refuse(ErrorKind::BadRequest, why), None),
                        Err(e) => (refuse(ErrorKind::Internal, e.to_string()), None),
                    },
                }
            } else if viewer.is_some() {
                let why = "only the join token may ask to act as a viewer (a user's token acts as its user)";
                (refuse(ErrorKind::Unauthorized, why.into()), None)
            } else if let Some((name, secret)) = token.as_deref().and_then(|t| t.split_once('@')) {
                let (name, secret) = (name.to_string(), secret.to_string());
                match ractor::call!(ctx.actor, HeadMsg::Authenticate, name, secret) {
                    Ok(Ok(id)) => (
                        HeadResponse::Welcome { cluster_id: ctx.cluster_id },
                        Some(Caller::User { id, from: addr }),
                    ),
                    Ok(Err(why)) => {
                        warn!(%addr, "refused connection: {why}");
                        (refuse(ErrorKind::Unauthorized, format!("{why}: the head refused this connection")), None)
                    }
                    Err(e) => (refuse(ErrorKind::Internal, e.to_string()), None),
                }
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
    caller: Caller,
    mut s: SendHalf,
    mut r: RecvHalf,
    ctx: &Ctx,
    drivers: &std::sync::Mutex<Vec<JobId>>,
) -> Result<(), RpcError> {
    let Some(req) = read_msg::<HeadRequest, _>(&mut r, ctx.max_frame).await? else {
        return Ok(());
    };
    let began = std::time::Instant::now();
    if caller.is_gated() {
        let gate = ractor::call!(ctx.actor, HeadMsg::Gate, caller, Box::new(req.clone()));
        match gate {
            Ok(HeadResponse::Ok) => {}
            Ok(refusal) => return write_msg(&mut s, &refusal).await,
            Err(e) => return write_msg(&mut s, &internal(e)).await,
        }
    }
    let reply = match req {
        HeadRequest::Hello { .. } => HeadResponse::Welcome {
            cluster_id: ctx.cluster_id,
        },
        HeadRequest::Join { node_name } => match ctx.ca.issue(&node_name) {
            Ok(id) => {
                info!(%node_name, "issued a node certificate");
                HeadResponse::Joined {
                    ca_pem: id.ca_pem,
                    cert_pem: id.cert_pem,
                    key_pem: id.key_pem,
                }
            }
            Err(e) => internal(e),
        },
        HeadRequest::Register(reg) if caller.is_node() => {
            ractor::call!(ctx.actor, HeadMsg::Register, reg, caller).unwrap_or_else(internal)
        }
        HeadRequest::UploadBinary { hash, len } => upload(&mut r, ctx, hash, len).await,
        HeadRequest::SubmitJob(sub) => {
            ractor::call!(ctx.actor, HeadMsg::Submit, caller, sub).unwrap_or_else(internal)
        }
        HeadRequest::JobLogs { job_id, offset } => {
            match ractor::call!(ctx.actor, HeadMsg::Job, job_id) {
                Ok(Some(job)) => match ctx.jobs.logs(&job, offset) {
                    Ok((data, next)) => HeadResponse::Logs { data, next, job },
                    Err(message) => bad_request(message),
                },
                Ok(None) => bad_request(format!("no job {job_id}")),
                Err(e) => internal(e),
            }
        }
        HeadRequest::ListTasks => scoped(ctx, caller, StateQuery::Tasks).await,
        HeadRequest::ListObjects => scoped(ctx, caller, StateQuery::Objects).await,
        HeadRequest::ListWorkers => scoped(ctx, caller, StateQuery::Workers).await,
        HeadRequest::QueryTasks(filter) => scoped(ctx, caller, StateQuery::TaskPage(filter)).await,
        HeadRequest::Metrics => match scoped(ctx, caller, StateQuery::Metrics).await {
            HeadResponse::Metrics { nodes, .. } => HeadResponse::Metrics {
                head_requests: ctx
                    .latency
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
                nodes,
            },
            other => other,
        },
        HeadRequest::WorkerLog {
            node_id,
            pid,
            offset,
        } => worker_log(ctx, caller, node_id, pid, offset).await,
        req => {
            if let HeadRequest::RegisterDriver { job_id, .. } = &req {
                drivers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(*job_id);
            }
            ractor::call!(ctx.actor, HeadMsg::Request, caller, req).unwrap_or_else(internal)
        }
    };
    ctx.latency
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .observe(began.elapsed().as_secs_f64());
    write_msg(&mut s, &reply).await
}

async fn list_state(ctx: &Ctx, query: StateQuery) -> HeadResponse {
    let status = ractor::call!(
        ctx.actor,
        HeadMsg::Request,
        Caller::Client,
        HeadRequest::GetStatus
    );
    match status {
        Ok(HeadResponse::Status(status)) => listing::list(&ctx.dialer, &status, query).await,
        Ok(other) => internal(format!("unexpected status answer {other:?}")),
        Err(e) => internal(e),
    }
}

/// What a gated caller may see of listings (`None`: everything).
async fn visibility(ctx: &Ctx, caller: Caller) -> Result<Option<Visibility>, HeadResponse> {
    if !caller.is_gated() {
        return Ok(None);
    }
    ractor::call!(ctx.actor, HeadMsg::Visibility, caller).map_err(internal)
}

/// A listing of jobs' rows: a gated caller gets its namespaces' only
/// (AC-4), and a page of tasks is filtered by the raylets so its count is
/// theirs too.
async fn scoped(ctx: &Ctx, caller: Caller, mut query: StateQuery) -> HeadResponse {
    let seen = match visibility(ctx, caller).await {
        Ok(v) => v,
        Err(refusal) => return refusal,
    };
    if let (Some(v), StateQuery::TaskPage(filter)) = (&seen, &mut query) {
        filter.jobs = Some(v.jobs());
    }
    let mut reply = list_state(ctx, query).await;
    if let Some(v) = seen {
        v.scope(&mut reply);
    }
    reply
}

/// Part of a worker's log, read by its node's raylet; a gated caller reads
/// the logs of its namespaces' workers only (AC-4).
async fn worker_log(
    ctx: &Ctx,
    caller: Caller,
    node: crate::ids::NodeId,
    pid: u32,
    offset: u64,
) -> HeadResponse {
    let status = ractor::call!(
        ctx.actor,
        HeadMsg::Request,
        Caller::Client,
        HeadRequest::GetStatus
    );
    let Ok(HeadResponse::Status(status)) = status else {
        return internal("cannot read the node table");
    };
    let Some(n) = status.nodes.iter().find(|n| n.node_id == node) else {
        return bad_request(format!("no node {node}"));
    };
    match visibility(ctx, caller).await {
        Err(refusal) => return refusal,
        Ok(None) => {}
        Ok(Some(v)) => {
            let what = format!("read the log of worker {pid}");
            let jobs = match listing::worker_jobs(&ctx.dialer, &n.address, pid).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    return internal(format!(
                        "cannot ask node {node} whose worker {pid} is, to check the log is yours \
                         to read: {e}"
                    ))
                }
            };
            if let Some(denied) = v.refusal_for_log(&what, &jobs) {
                return HeadResponse::Error {
                    kind: ErrorKind::Forbidden,
                    message: denied.message,
                };
            }
        }
    }
    let req = crate::proto::raylet::PeerRequest::ReadLog { pid, offset };
    match ctx.dialer.call(&n.address, &req).await {
        Ok(chunk) => HeadResponse::WorkerLog(chunk),
        Err(e) => bad_request(format!("cannot read the log from node {node}: {e}")),
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
