//! The raylet's task service: the shell around the pure [`Dispatcher`].
//! It feeds the dispatcher what the raylet's doors receive (local clients in
//! `local_door`, peers in `peer_door`, the head's status through
//! `head_link`) and carries out its [`Action`]s: starting and killing worker
//! processes, sending work to workers, forwarding spilled tasks to peers, and
//! routing each reply by its [`Owner`]'s kind.

use super::dispatch::{Action, Dispatcher, Owner, WorkerId};
use super::peers::Peers;
use super::store_server::StoreServer;
use super::task_history::{now_us, TaskHistory};
use super::transfer::Transfer;
use super::workers::{self, WorkerEnv};
use crate::ids::{JobId, NodeId};
use crate::proto::codec;
use crate::proto::common::{ClusterStatus, NodeState};
use crate::proto::raylet::{PeerRequest, PeerTaskResponse};
use crate::proto::task::PeerSubmit;
use crate::proto::task::{Failure, JobSpec, LocalEvent, Outcome};
use crate::transport::rpc::call;
use dashmap::DashMap;
use prism_scheduler::NodeResources;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How long a forward waits to learn a peer's address (several heartbeats).
const PEER_ADDR_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// The calls waiting for one remote actor's link, in order.
pub(super) type LinkTx = mpsc::UnboundedSender<(Owner, crate::proto::task::TaskSpec)>;

/// The task service of one raylet.
#[derive(Debug)]
pub struct TaskService {
    /// This raylet's id now (a new one each time it registers again).
    node: tokio::sync::watch::Sender<NodeId>,
    /// The ids this raylet registered under before (its processes may
    /// still name it by them).
    past_ids: Mutex<Vec<NodeId>>,
    disp: Mutex<Dispatcher>,
    /// Its tasks' times and the last finished ones.
    pub(super) history: Mutex<TaskHistory>,
    /// Local connections by number (their owner is `Owner::Local(n)`).
    pub(super) conns: DashMap<u64, mpsc::UnboundedSender<Vec<u8>>>,
    pub(super) worker_conns: DashMap<WorkerId, u64>,
    pub(super) pids: DashMap<WorkerId, u32>,
    /// Workers being spawned (no pid here yet), and whether they were
    /// killed meanwhile: killed as soon as they have one.
    pub(super) spawning: DashMap<WorkerId, bool>,
    /// Users' metrics from this node's processes, by their job.
    pub(super) user_metrics: Mutex<crate::metrics::JobMetrics>,
    /// The name of the task each worker ran last (its output's prefix).
    pub(super) last_task: DashMap<WorkerId, String>,
    pub(super) jobs: DashMap<JobId, JobSpec>,
    /// Jobs whose driver is connected here, with its connection.
    pub(super) local_jobs: DashMap<JobId, u64>,
    /// Local drivers' processes (as the kernel names them) and their jobs.
    pub(super) driver_pids: DashMap<u32, JobId>,
    ended_jobs: DashMap<JobId, ()>,
    /// Tasks peers spilled here, waiting for their outcome (`Owner::Spilled`).
    pub(super) spilled: DashMap<u64, oneshot::Sender<Outcome>>,
    /// Peers' actor call streams (`Owner::PeerStream`).
    pub(super) peer_sinks: DashMap<u64, mpsc::UnboundedSender<Vec<u8>>>,
    /// Bumped at each fence: the peers' actor call streams served until
    /// then close (DF-5).
    pub(super) fences: tokio::sync::watch::Sender<u64>,
    /// Calls routed to actors on other nodes, one ordered link per actor.
    pub(super) actor_links: DashMap<crate::ids::ActorId, LinkTx>,
    /// What local processes borrow, released for them when they go (BL-1).
    pub(super) borrows: Mutex<super::borrow_ledger::BorrowLedger>,
    /// What processes on other nodes borrow from local ones, released for
    /// them when their node is declared dead (BL-1).
    pub(super) lent: Mutex<super::borrow_ledger::BorrowLedger<NodeId>>,
    /// Refs held inside results for their owners, released for owners
    /// that go first (HL-1).
    pub(super) holds: Mutex<super::held_results::Holds>,
    pub(super) reports: std::sync::OnceLock<mpsc::UnboundedSender<crate::proto::head::HeadRequest>>,
    /// The other nodes (addresses, deaths, connections).
    pub(super) peers: Arc<Peers>,
    /// A fresh view of the cluster is being fetched from the head.
    refreshing: std::sync::atomic::AtomicBool,
    /// The head's node rows, kept by the changes it sends (NT-6).
    mirror: Mutex<super::status_mirror::StatusMirror>,
    /// This draining node asked the head to let it leave now (once).
    leave_asked: std::sync::atomic::AtomicBool,
    /// This draining node's primary copies are moving to peers (DR-4).
    pub(super) moving: std::sync::atomic::AtomicBool,
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
        history: usize,
    ) -> Arc<TaskService> {
        let svc = Arc::new(TaskService {
            node: tokio::sync::watch::Sender::new(node),
            past_ids: Mutex::default(),
            disp: Mutex::new(
                Dispatcher::new(node, local).with_infeasible_timeout(infeasible_timeout),
            ),
            history: Mutex::new(TaskHistory::new(history)),
            conns: DashMap::new(),
            worker_conns: DashMap::new(),
            pids: DashMap::new(),
            spawning: DashMap::new(),
            last_task: DashMap::new(),
            user_metrics: Mutex::default(),
            jobs: DashMap::new(),
            local_jobs: DashMap::new(),
            driver_pids: DashMap::new(),
            ended_jobs: DashMap::new(),
            spilled: DashMap::new(),
            peer_sinks: DashMap::new(),
            fences: tokio::sync::watch::channel(0).0,
            actor_links: DashMap::new(),
            borrows: Mutex::default(),
            lent: Mutex::default(),
            holds: Mutex::default(),
            reports: std::sync::OnceLock::new(),
            peers: transfer.peers().clone(),
            refreshing: std::sync::atomic::AtomicBool::new(false),
            mirror: Mutex::default(),
            leave_asked: std::sync::atomic::AtomicBool::new(false),
            moving: std::sync::atomic::AtomicBool::new(false),
            next_owner: AtomicU64::new(1),
            env,
            store,
            transfer,
        });
        let weak = Arc::downgrade(&svc);
        let _ = svc
            .store
            .job_of_pid
            .set(super::store_server::JobOfPid(Box::new(move |pid| {
                weak.upgrade()?.job_of_pid(pid)
            })));
        svc
    }

    pub(super) fn disp(&self) -> std::sync::MutexGuard<'_, Dispatcher> {
        self.disp.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn node(&self) -> NodeId {
        *self.node.borrow()
    }

    /// The raylet registered again under a new id: idle workers started
    /// under the earlier one go (they would report it as theirs).
    pub fn set_node_id(self: &Arc<Self>, id: NodeId) {
        // In the dispatcher's turn: what waits for the new id (DF-6) runs
        // once the dispatcher knows it.
        self.act(|d| {
            let retired = d.set_node_id(id);
            // The old id is past before the new one is published, so no
            // reader sees it as neither.
            let old = *self.node.borrow();
            if old != id {
                self.past_ids
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(old);
                self.node.send_replace(id);
            }
            retired
        });
    }

    /// Waits (at most `wait`) until this raylet's id is `id`; whether it is.
    pub(super) async fn became(&self, id: NodeId, wait: std::time::Duration) -> bool {
        let mut rx = self.node.subscribe();
        let ok = tokio::time::timeout(wait, rx.wait_for(|n| *n == id)).await;
        ok.is_ok_and(|r| r.is_ok())
    }

    /// Whether `node` is this raylet, under its id now or an earlier one.
    pub(super) fn is_me(&self, node: NodeId) -> bool {
        node == self.node()
            || self
                .past_ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&node)
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

    /// Where this raylet's copy of the head's node rows stands.
    pub fn status_cursor(&self) -> (u64, u64) {
        self.mirror
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .cursor()
    }

    /// Applies the head's changes to the node rows, then refreshes the
    /// view of the other nodes from them; returns how many nodes the
    /// cluster has.
    pub fn apply_status(self: &Arc<Self>, delta: crate::proto::common::StatusDelta) -> usize {
        let status = self
            .mirror
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .apply(delta, std::time::Instant::now());
        self.update_peers(&status);
        status.nodes.len()
    }

    /// Refreshes the view of the other nodes from the head's status.
    pub fn update_peers(self: &Arc<Self>, status: &ClusterStatus) {
        let peers = self.peers.update(status, self.node());
        let dead = || {
            status
                .nodes
                .iter()
                .filter(|n| n.state == NodeState::Dead)
                .map(|n| n.node_id)
        };
        self.release_borrows_from(dead());
        self.release_held_from(dead);
        for job in &status.ended_jobs {
            if self.jobs.contains_key(job) && self.ended_jobs.insert(*job, ()).is_none() {
                info!(%job, "job ended; stopping its workers here");
                self.act(|d| d.job_ended(*job));
                self.user_metrics
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .job_ended(*job);
            }
        }
        let me = self.node();
        let draining = status
            .nodes
            .iter()
            .find(|n| n.node_id == me)
            .and_then(|n| n.draining.clone());
        let was = self.disp().draining();
        let targets: Vec<NodeId> = peers.iter().map(|(n, _)| *n).collect();
        self.act(|d| {
            let mut out = d.set_draining(draining.as_ref().map(|d| d.reason.clone()));
            out.extend(d.set_peers_and_pump(peers));
            out
        });
        if let Some(d) = draining {
            if !was || !d.stopped_new_work {
                self.tell_head(crate::proto::head::HeadRequest::DrainStarted { node_id: me });
            }
            if !was {
                self.move_primaries(targets, std::time::Duration::from_millis(d.ms_left));
            }
            self.leave_when_done(me, d.reason);
        }
    }

    /// Sends the head a request whose answer nothing waits for.
    fn tell_head(self: &Arc<Self>, req: crate::proto::head::HeadRequest) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.transfer.head_request(&req).await {
                debug!("cannot tell the head: {e}");
            }
        });
    }

    /// DR-2: a draining node with nothing left that needs it asks the head
    /// to end its drain now (once), instead of waiting for the deadline.
    fn leave_when_done(self: &Arc<Self>, me: NodeId, reason: String) {
        if !self.disp().drain_done()
            || self.moving.load(Ordering::Acquire)
            || self.leave_asked.swap(true, Ordering::AcqRel)
        {
            return;
        }
        info!(node = %me, "drained: nothing left here; leaving before the deadline");
        let this = self.clone();
        tokio::spawn(async move {
            let req = crate::proto::head::HeadRequest::DrainNode {
                node_id: me,
                reason,
                deadline_ms: 0,
            };
            if let Err(e) = this.transfer.head_request(&req).await {
                warn!("cannot end the drain early: {e}");
                this.leave_asked.store(false, Ordering::Release);
            }
        });
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
            let (epoch, version) = me.status_cursor();
            let req = crate::proto::head::HeadRequest::GetStatusSince { epoch, version };
            match me.transfer.head_request(&req).await {
                Ok(crate::proto::head::HeadResponse::StatusDelta(d)) => {
                    me.apply_status(d);
                }
                other => debug!("cannot refresh the cluster view: {other:?}"),
            }
            me.refreshing.store(false, Ordering::Release);
        });
    }

    /// Sends an event to a local connection (other owners get none).
    pub(super) fn send(&self, owner: Owner, ev: &LocalEvent) {
        let Owner::Local(conn) = owner else { return };
        match codec::encode(ev) {
            Ok(frame) => {
                if let Some(tx) = self.conns.get(&conn) {
                    let _ = tx.send(frame);
                }
            }
            Err(e) => warn!("cannot encode {ev:?}: {e}"),
        }
    }

    /// Routes a task's outcome to whoever waits for it, by its kind.
    fn reply(&self, owner: Owner, task_id: crate::ids::TaskId, outcome: Outcome) {
        match owner {
            Owner::Local(_) => self.send(owner, &LocalEvent::Finished { task_id, outcome }),
            Owner::Spilled(n) => {
                if let Some((_, tx)) = self.spilled.remove(&n) {
                    let _ = tx.send(outcome);
                }
            }
            Owner::PeerStream(n) => self.reply_to_peer_stream(n, task_id, outcome),
            Owner::Raylet => {}
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

    /// Hands a task to the dispatcher, remembering when it arrived.
    pub(super) fn submit(self: &Arc<Self>, spec: crate::proto::task::TaskSpec, owner: Owner) {
        self.arrived(&spec);
        self.act(|d| d.submit(spec, owner));
    }

    /// Remembers that `spec` is here now: it arrived, or it came back from
    /// the peer it was forwarded to, which forgot it (TH-1).
    pub(super) fn arrived(&self, spec: &crate::proto::task::TaskSpec) {
        let kind = super::dispatch::state::kind_name(&spec.kind);
        self.lock_history().submitted(spec, kind, now_us());
    }

    pub(super) fn lock_history(&self) -> std::sync::MutexGuard<'_, TaskHistory> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes `<session>/a/<name>`, a direct-call socket whose worker is
    /// gone for good (`api/direct_serve.rs` binds them).
    pub(super) fn remove_direct_socket(&self, name: &str) {
        if let Some(session) = self.env.task_socket.parent() {
            let _ = std::fs::remove_file(session.join("a").join(name));
        }
    }

    /// A fresh number for an owner of any kind.
    pub(super) fn next_id(&self) -> u64 {
        self.next_owner.fetch_add(1, Ordering::Relaxed)
    }

    /// Carries out the dispatcher's decisions.
    pub(super) fn apply(self: &Arc<Self>, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Start {
                    worker,
                    job,
                    gpus,
                    node,
                } => self.start_worker(worker, job, gpus, node),
                Action::Execute { worker, task, gpus } => {
                    let pid = self.pids.get(&worker).map(|p| *p);
                    self.last_task.insert(worker, task.name.clone());
                    self.lock_history()
                        .started(task.task_id, pid, task.attempt, now_us());
                    match self.worker_conns.get(&worker).map(|c| *c) {
                        Some(conn) => {
                            self.send(Owner::Local(conn), &LocalEvent::Execute { task, gpus })
                        }
                        None => warn!(worker, "execute for a worker with no connection"),
                    }
                }
                Action::Reply {
                    owner,
                    task_id,
                    outcome,
                } => {
                    match &outcome {
                        // Handed back to its sender, which places it
                        // again (DR-1, D-6): it left, as if forwarded.
                        Outcome::Failed(Failure::Moved { .. } | Failure::Draining { .. }) => {
                            self.lock_history().forwarded(task_id, false)
                        }
                        Outcome::Failed(f) => {
                            self.lock_history()
                                .finished(task_id, Some(f.summary()), now_us())
                        }
                        _ => self.lock_history().finished(task_id, None, now_us()),
                    }
                    self.reply(owner, task_id, outcome)
                }
                Action::ActorState {
                    actor,
                    state,
                    restarts,
                    reason,
                } => self.report_actor(actor, state, restarts, reason),
                Action::ForwardCall { actor, owner, task } => self.route_call(actor, owner, task),
                Action::Dropped { task_id } => self.lock_history().forwarded(task_id, false),
                Action::RevokeLease { owner, lease } => {
                    self.send(owner, &LocalEvent::RevokeLease { lease })
                }
                Action::Warn { owner, message } => {
                    self.send(owner, &LocalEvent::Warning { message })
                }
                Action::RefreshView => self.refresh_view(),
                Action::Forward { node, owner, task } => {
                    self.lock_history().forwarded(task.task_id, true);
                    self.forward(node, owner, task)
                }
                Action::Kill { worker } => self.kill_worker(worker),
            }
        }
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
                let req = PeerRequest::Submit {
                    to: node,
                    task: Box::new(PeerSubmit {
                        job,
                        task: task.clone(),
                    }),
                };
                // PE-1: the answer is awaited only while the node lives.
                let exchange = async {
                    let conn = me.peers.connect(addr).await?;
                    call::<_, PeerTaskResponse>(&*conn, &req, crate::proto::task::MAX_TASK_FRAME)
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
                Ok(Outcome::Failed(Failure::Draining { .. })) => {
                    me.arrived(&task);
                    me.act(|d| d.redirect(node, owner, task))
                }
                Ok(Outcome::Failed(Failure::Moved { .. })) => {
                    me.arrived(&task);
                    me.act(|d| d.handed_back(owner, task))
                }
                // DF-4: the node ended it when it learned it was declared
                // dead; a retry is the owner's, as for a lost node.
                Ok(Outcome::Failed(Failure::NodeDied { node: n, detail })) if n == node => {
                    me.arrived(&task);
                    me.act(|d| d.forward_failed(node, owner, task, detail));
                }
                Ok(outcome) => me.apply(vec![Action::Reply {
                    owner,
                    task_id: task.task_id,
                    outcome,
                }]),
                Err(detail) => {
                    warn!(%node, "spilled task failed on the peer: {detail}");
                    me.arrived(&task);
                    me.act(|d| d.forward_failed(node, owner, task, detail));
                }
            }
        });
    }
}
