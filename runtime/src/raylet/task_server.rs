//! The raylet's task service: the shell around [`Dispatcher`]. It serves
//! drivers and workers on a local Unix socket (`tasks.sock`), starts and
//! kills worker processes, forwards spilled tasks to peer raylets over QUIC,
//! and runs tasks that peers spill here.

use super::dispatch::{Action, Dispatcher, Owner, WorkerId};
use super::peers::Peers;
use super::store_server::StoreServer;
use super::transfer::Transfer;
use super::workers::{self, WorkerEnv};
use crate::ids::{JobId, NodeId};
use crate::proto::codec;
use crate::proto::common::ClusterStatus;
use crate::proto::raylet::{PeerRequest, PeerTaskResponse};
use crate::proto::task::PeerSubmit;
use crate::proto::task::{Failure, JobSpec, LocalEvent, LocalRequest, Outcome};
use crate::proto::PROTOCOL_VERSION;
use crate::transport::rpc::{call, read_msg};
use dashmap::DashMap;
use prism_scheduler::NodeResources;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{UnixListener, UnixStream};

/// How long a forward waits to learn a peer's address (several heartbeats).
const PEER_ADDR_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// Largest local task frame (arguments inline up to the inline limit, so
/// this only bounds garbage).
pub const MAX_TASK_FRAME: usize = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Unknown,
    Driver(JobId),
    Worker(WorkerId),
}

/// The task service of one raylet.
#[derive(Debug)]
pub struct TaskService {
    node: Mutex<NodeId>,
    disp: Mutex<Dispatcher>,
    conns: DashMap<Owner, mpsc::UnboundedSender<Vec<u8>>>,
    worker_conns: DashMap<WorkerId, Owner>,
    pub(super) pids: DashMap<WorkerId, u32>,
    pub(super) jobs: DashMap<JobId, JobSpec>,
    pub(super) local_jobs: DashMap<JobId, ()>,
    ended_jobs: DashMap<JobId, ()>,
    peer_waiters: DashMap<Owner, oneshot::Sender<Outcome>>,
    pub(super) peer_sinks: DashMap<Owner, mpsc::UnboundedSender<Vec<u8>>>,
    pub(super) actor_links: DashMap<crate::ids::ActorId, super::actor_links::LinkTx>,
    pub(super) reports: std::sync::OnceLock<mpsc::UnboundedSender<crate::proto::head::HeadRequest>>,
    /// The other nodes (addresses, deaths, connections).
    pub(super) peers: Arc<Peers>,
    /// A fresh view of the cluster is being fetched from the head.
    refreshing: std::sync::atomic::AtomicBool,
    next_owner: AtomicU64,
    pub(super) env: WorkerEnv,
    pub(super) store: Arc<StoreServer>,
    pub(super) transfer: Arc<Transfer>,
}

impl TaskService {
    /// A service for node `node` with `local` resources.
    pub fn new(
        node: NodeId,
        local: NodeResources,
        env: WorkerEnv,
        store: Arc<StoreServer>,
        transfer: Arc<Transfer>,
        infeasible_timeout: std::time::Duration,
    ) -> Arc<TaskService> {
        Arc::new(TaskService {
            node: Mutex::new(node),
            disp: Mutex::new(
                Dispatcher::new(node, local).with_infeasible_timeout(infeasible_timeout),
            ),
            conns: DashMap::new(),
            worker_conns: DashMap::new(),
            pids: DashMap::new(),
            jobs: DashMap::new(),
            local_jobs: DashMap::new(),
            ended_jobs: DashMap::new(),
            peer_waiters: DashMap::new(),
            peer_sinks: DashMap::new(),
            actor_links: DashMap::new(),
            reports: std::sync::OnceLock::new(),
            peers: transfer.peers().clone(),
            refreshing: std::sync::atomic::AtomicBool::new(false),
            next_owner: AtomicU64::new(1),
            env,
            store,
            transfer,
        })
    }

    pub(super) fn disp(&self) -> std::sync::MutexGuard<'_, Dispatcher> {
        self.disp.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn node(&self) -> NodeId {
        *self.node.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The raylet registered again under a new id.
    pub fn set_node_id(&self, id: NodeId) {
        *self.node.lock().unwrap_or_else(|p| p.into_inner()) = id;
        self.disp().set_node_id(id);
    }

    /// What is free here, for heartbeats.
    pub fn available(&self) -> prism_scheduler::ResourceSet {
        self.disp().available().clone()
    }

    /// Queued and infeasible work, for the head's `prism status`.
    pub fn demand(&self, node_id: NodeId) -> Vec<crate::proto::common::Demand> {
        self.disp()
            .demand()
            .into_iter()
            .map(|(shape, count, infeasible)| crate::proto::common::Demand {
                node_id,
                shape: crate::proto::common::Resources::from(&shape),
                count,
                infeasible,
            })
            .collect()
    }

    /// Refreshes the view of the other nodes from the head's status.
    pub fn update_peers(self: &Arc<Self>, status: &ClusterStatus) {
        let peers = self.peers.update(status, self.node());
        for job in &status.ended_jobs {
            if self.jobs.contains_key(job) && self.ended_jobs.insert(*job, ()).is_none() {
                info!(%job, "job ended; stopping its workers here");
                self.act(|d| d.job_ended(*job));
            }
        }
        self.act(|d| d.set_peers_and_pump(peers));
    }

    /// Why the head declared `node` dead, if it did.
    pub(super) fn node_lost(&self, node: NodeId) -> Option<String> {
        self.peers.lost_reason(node)
    }

    /// Time passes (every heartbeat): parked infeasible work may expire.
    pub fn tick(self: &Arc<Self>, now: std::time::Instant) {
        self.act(|d| d.tick(now));
    }

    /// Asks the head for its status now, instead of at the next heartbeat
    /// (one request at a time).
    fn refresh_view(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let req = crate::proto::head::HeadRequest::GetStatus;
            match me.transfer.head_request(&req).await {
                Ok(crate::proto::head::HeadResponse::Status(status)) => me.update_peers(&status),
                other => debug!("cannot refresh the cluster view: {other:?}"),
            }
            me.refreshing.store(false, Ordering::Release);
        });
    }

    fn send(&self, owner: Owner, ev: &LocalEvent) {
        match codec::encode(ev) {
            Ok(frame) => {
                if let Some(tx) = self.conns.get(&owner) {
                    let _ = tx.send(frame);
                }
            }
            Err(e) => warn!("cannot encode {ev:?}: {e}"),
        }
    }

    /// Runs a dispatcher step and carries out its actions while still
    /// holding the dispatcher: actions leave in the order they were decided
    /// (an actor's calls, say), whichever thread decided them.
    pub(super) fn act(self: &Arc<Self>, f: impl FnOnce(&mut Dispatcher) -> Vec<Action>) {
        let mut d = self.disp();
        let actions = f(&mut d);
        self.apply(actions);
        drop(d);
    }

    pub(super) fn new_owner(&self) -> Owner {
        self.next_owner.fetch_add(1, Ordering::Relaxed)
    }

    /// Carries out the dispatcher's decisions.
    pub(super) fn apply(self: &Arc<Self>, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Start { worker, job, gpus } => self.start_worker(worker, job, gpus),
                Action::Execute { worker, task, gpus } => {
                    match self.worker_conns.get(&worker).map(|c| *c) {
                        Some(conn) => self.send(conn, &LocalEvent::Execute { task, gpus }),
                        None => warn!(worker, "execute for a worker with no connection"),
                    }
                }
                Action::Reply {
                    owner,
                    task_id,
                    outcome,
                } => {
                    if let Some((_, tx)) = self.peer_waiters.remove(&owner) {
                        let _ = tx.send(outcome);
                    } else if let Err(outcome) = self.reply_to_peer_stream(owner, task_id, outcome)
                    {
                        self.send(owner, &LocalEvent::Finished { task_id, outcome });
                    }
                }
                Action::ActorState {
                    actor,
                    state,
                    restarts,
                    reason,
                } => self.report_actor(actor, state, restarts, reason),
                Action::ForwardCall { actor, owner, task } => self.route_call(actor, owner, task),
                Action::Warn { owner, message } => {
                    self.send(owner, &LocalEvent::Warning { message })
                }
                Action::RefreshView => self.refresh_view(),
                Action::Forward { node, owner, task } => self.forward(node, owner, task),
                Action::Kill { worker } => {
                    if let Some(pid) = self.pids.get(&worker).map(|p| *p) {
                        workers::kill(pid);
                    }
                }
            }
        }
    }

    fn start_worker(self: &Arc<Self>, worker: WorkerId, job: JobId, gpus: Vec<u32>) {
        let me = self.clone();
        tokio::spawn(async move {
            let spec = me.jobs.get(&job).map(|j| j.clone());
            let local = me.local_jobs.contains_key(&job);
            let started = match spec {
                None => Err(format!("job {job} is not known on this node")),
                Some(spec) => {
                    match workers::resolve_binary(&me.env, &me.store, &spec, local).await {
                        Ok(bin) => workers::spawn(&me.env, &bin, &spec, worker, &gpus)
                            .map(|child| (child, bin)),
                        Err(e) => Err(e),
                    }
                }
            };
            let (mut child, binary) = match started {
                Ok(c) => c,
                Err(detail) => {
                    warn!(worker, %job, "cannot start worker: {detail}");
                    me.act(|d| d.worker_died(worker, Failure::WorkerStartFailed { detail }));
                    return;
                }
            };
            let pid = child.id().unwrap_or(0);
            me.pids.insert(worker, pid);
            // A worker must say hello in time; one that never does (a hung
            // or wrong binary) is killed, and its task fails saying why.
            let limit = me.env.hello_timeout;
            let hello = async {
                tokio::time::sleep(limit).await;
                if me.worker_conns.contains_key(&worker) {
                    return std::future::pending().await;
                }
                workers::kill(pid);
                true
            };
            let (status, silent) = tokio::select! {
                status = child.wait() => (status, false),
                silent = hello => (child.wait().await, silent),
            };
            me.pids.remove(&worker);
            let failure = if silent {
                let detail = format!(
                    "the worker process {} (pid {pid}) did not connect to its raylet within {} ms and was killed (PRISM_WORKER_START_TIMEOUT_MS)",
                    binary.display(),
                    limit.as_millis()
                );
                warn!(worker, %job, "{detail}");
                Failure::WorkerStartFailed { detail }
            } else {
                let detail = workers::describe_exit(status);
                debug!(worker, %detail, "worker exited");
                Failure::WorkerDied {
                    node: me.node(),
                    detail,
                }
            };
            me.act(|d| d.worker_died(worker, failure));
        });
    }

    fn forward(self: &Arc<Self>, node: NodeId, owner: Owner, task: crate::proto::task::TaskSpec) {
        let me = self.clone();
        tokio::spawn(async move {
            let job = me.jobs.get(&task.job_id).map(|j| j.clone());
            let addr = me.peers.addr(node, PEER_ADDR_WAIT).await;
            let result = async {
                let job = job.ok_or("the task's job is unknown here")?;
                let addr = addr.ok_or("no address for the node")?;
                if me.local_jobs.contains_key(&job.job_id) {
                    workers::publish_binary(&me.store, &job).await?;
                }
                let req = PeerRequest::Submit(Box::new(PeerSubmit {
                    job,
                    task: task.clone(),
                }));
                // PE-1: the answer is awaited only while the node lives.
                let exchange = async {
                    let conn = me.peers.connect(addr).await?;
                    call::<_, PeerTaskResponse>(&*conn, &req, MAX_TASK_FRAME)
                        .await
                        .map_err(|e| e.to_string())
                };
                let resp = me
                    .peers
                    .unless_lost(node, exchange)
                    .await
                    .and_then(|r| r)
                    .inspect_err(|_| me.peers.forget(addr))?;
                Ok::<_, String>(resp.outcome)
            }
            .await;
            match result {
                Ok(outcome) => me.apply(vec![Action::Reply {
                    owner,
                    task_id: task.task_id,
                    outcome,
                }]),
                Err(detail) => {
                    warn!(%node, "spilled task failed on the peer: {detail}");
                    me.act(|d| d.forward_failed(node, owner, task, detail));
                }
            }
        });
    }

    /// Runs a task a peer spilled here; answers when it ends.
    pub async fn serve_peer_submit(self: &Arc<Self>, sub: PeerSubmit) -> PeerTaskResponse {
        let owner = self.next_owner.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.peer_waiters.insert(owner, tx);
        self.jobs.entry(sub.job.job_id).or_insert(sub.job);
        self.act(|d| d.submit(sub.task, owner));
        let outcome = rx.await.unwrap_or_else(|_| {
            Outcome::Failed(Failure::NodeDied {
                node: self.node(),
                detail: "the raylet stopped".into(),
            })
        });
        PeerTaskResponse { outcome }
    }

    /// Kills every worker (raylet shutdown).
    pub fn kill_all(&self) {
        for p in self.pids.iter() {
            workers::kill(*p.value());
        }
    }

    async fn serve_conn(self: Arc<Self>, stream: UnixStream) {
        let owner = self.next_owner.fetch_add(1, Ordering::Relaxed);
        let (r, w) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        self.conns.insert(owner, tx);
        let writer = tokio::spawn(async move {
            let mut w = BufWriter::new(w);
            while let Some(frame) = rx.recv().await {
                if w.write_all(&frame).await.is_err() {
                    return;
                }
                while let Ok(more) = rx.try_recv() {
                    if w.write_all(&more).await.is_err() {
                        return;
                    }
                }
                if w.flush().await.is_err() {
                    return;
                }
            }
        });
        let mut r = BufReader::with_capacity(256 << 10, r);
        let mut role = Role::Unknown;
        loop {
            let msg = match read_msg::<LocalRequest, _>(&mut r, MAX_TASK_FRAME).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    warn!(conn = owner, "dropping local task connection: {e}");
                    break;
                }
            };
            if let Some(next) = self.handle(owner, role, msg) {
                role = next;
            }
        }
        self.conns.remove(&owner);
        writer.abort();
        let gone = match role {
            Role::Driver(job) => {
                info!(%job, "driver disconnected; stopping its workers");
                Some(Some(job))
            }
            Role::Worker(w) => {
                self.worker_conns.remove(&w);
                if let Some(pid) = self.pids.get(&w).map(|p| *p) {
                    workers::kill(pid);
                }
                Some(None)
            }
            Role::Unknown => None,
        };
        if let Some(job) = gone {
            self.act(|d| d.owner_gone(owner, job));
        }
    }

    /// Handles one request; returns the connection's new role after a hello.
    fn handle(self: &Arc<Self>, owner: Owner, role: Role, msg: LocalRequest) -> Option<Role> {
        let welcome = || LocalEvent::Welcome {
            node_id: self.node(),
            store_socket: self.env.store_socket.display().to_string(),
        };
        let refuse = |message: String| {
            self.send(owner, &LocalEvent::Refused { message });
        };
        match (role, msg) {
            (Role::Unknown, LocalRequest::HelloDriver { version, job }) => {
                if version != PROTOCOL_VERSION {
                    refuse(format!(
                        "protocol version {version}, this raylet speaks {PROTOCOL_VERSION}"
                    ));
                    return None;
                }
                let id = job.job_id;
                self.local_jobs.insert(id, ());
                self.jobs.insert(id, job.clone());
                if job.binary_hash == [0; 32] {
                    self.send(owner, &welcome());
                } else {
                    // A cluster job: put its binary in the store first, so
                    // peers (and this node, if the file goes away) can run it.
                    let me = self.clone();
                    let ready = welcome();
                    tokio::spawn(async move {
                        if let Err(e) = workers::publish_binary(&me.store, &job).await {
                            warn!(job = %job.job_id, "cannot publish the job binary: {e}");
                        }
                        me.send(owner, &ready);
                    });
                }
                Some(Role::Driver(id))
            }
            (Role::Unknown, LocalRequest::HelloWorker { version, worker_id }) => {
                if version != PROTOCOL_VERSION {
                    refuse(format!(
                        "protocol version {version}, this raylet speaks {PROTOCOL_VERSION}"
                    ));
                    return None;
                }
                self.worker_conns.insert(worker_id, owner);
                self.send(owner, &welcome());
                self.act(|d| d.worker_ready(worker_id));
                Some(Role::Worker(worker_id))
            }
            (Role::Unknown, other) => {
                refuse(format!("expected a hello first, got {other:?}"));
                None
            }
            (_, LocalRequest::Submit(spec)) => {
                if matches!(spec.kind, crate::proto::task::TaskKind::CreateActor(_)) {
                    self.create_actor(spec, owner);
                } else {
                    self.act(|d| d.submit(spec, owner));
                }
                None
            }
            (
                _,
                LocalRequest::KillActor {
                    actor_id,
                    no_restart,
                },
            ) => {
                let kill = super::dispatch::kill_call(actor_id, no_restart);
                self.act(|d| d.submit(kill, owner));
                None
            }
            (
                _,
                LocalRequest::LookupActor {
                    request_id,
                    name,
                    namespace,
                },
            ) => {
                self.lookup_actor(owner, request_id, namespace, name);
                None
            }
            (
                _,
                LocalRequest::PlacementGroup {
                    request_id,
                    request,
                },
            ) => {
                self.relay_pg_request(owner, request_id, request);
                None
            }
            (_, LocalRequest::Cancel { task_id, force }) => {
                self.act(|d| d.cancel(task_id, force));
                None
            }
            (Role::Worker(w), LocalRequest::Done { task_id, outcome }) => {
                self.act(|d| d.task_done(w, task_id, outcome));
                None
            }
            (Role::Worker(w), LocalRequest::Blocked) => {
                self.act(|d| d.worker_blocked(w, true));
                None
            }
            (Role::Worker(w), LocalRequest::Unblocked) => {
                self.act(|d| d.worker_blocked(w, false));
                None
            }
            (_, other) => {
                warn!(conn = owner, "ignoring {other:?} from {role:?}");
                None
            }
        }
    }
}

/// Binds the task socket.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

/// Accepts local task connections until the listener is dropped.
pub async fn serve(listener: UnixListener, service: Arc<TaskService>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(service.clone().serve_conn(stream));
            }
            Err(e) => {
                warn!("task socket accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Where the task socket lives in a session directory.
pub fn socket_path(session_dir: &Path) -> PathBuf {
    session_dir.join("tasks.sock")
}
