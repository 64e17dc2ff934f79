//! The raylet's local scheduler as a pure state machine: the task queue, the
//! local resource ledger, the worker pool, and the spillback decision. No
//! sockets, no clocks, no processes: every input is a method call, every
//! effect an [`Action`] the shell carries out. Invariants:
//!
//! - **D-1** a task holds its resources from dispatch until it ends, and
//!   releases them exactly once (finish, worker death, force cancel);
//! - **D-2** every submitted task gets exactly one reply (result, failure or
//!   cancellation), unless its owner went away;
//! - **D-3** a worker runs at most one task at a time, and only its job's;
//! - **D-4** system failures retry up to `max_retries`, then fail with the cause;
//! - **D-5** work no node can run now waits (parked) while the cluster may
//!   change, is placed as soon as a fresh view shows a node for it, and fails
//!   with `Infeasible` only once it has waited the infeasible timeout (or at
//!   once when it asked to fail fast).

use super::task_queue::ClassQueue;
use crate::ids::{ActorId, JobId, NodeId};
use crate::proto::head::ActorState;
use crate::proto::task::{Failure, Outcome, TaskKind, TaskSpec, WireStrategy};
use prism_scheduler::{
    ClusterView, Decision, NodeResources, Quantity, ResourceSet, Scheduler, Strategy, CPU,
};
use std::collections::HashMap;

/// A worker process, numbered by this raylet.
pub type WorkerId = u64;
/// Who is waiting for a task's reply: a local connection or a peer stream.
pub type Owner = u64;

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a worker process for `job` seeing only `gpus`.
    Start {
        /// Its id.
        worker: WorkerId,
        /// Its job.
        job: JobId,
        /// `CUDA_VISIBLE_DEVICES`.
        gpus: Vec<u32>,
    },
    /// Send the task to a registered worker.
    Execute {
        /// The worker.
        worker: WorkerId,
        /// The task.
        task: TaskSpec,
        /// Its GPU indices.
        gpus: Vec<u32>,
    },
    /// Tell the owner how the task ended.
    Reply {
        /// Who.
        owner: Owner,
        /// The task.
        task_id: [u8; 16],
        /// How.
        outcome: Outcome,
    },
    /// Send the task to another raylet.
    Forward {
        /// Where.
        node: NodeId,
        /// Who waits for it here.
        owner: Owner,
        /// The task (marked spilled).
        task: TaskSpec,
    },
    /// Kill a worker process.
    Kill {
        /// The worker.
        worker: WorkerId,
    },
    /// Tell the head an actor's new state.
    ActorState {
        /// The actor.
        actor: ActorId,
        /// Its state.
        state: ActorState,
        /// Restarts so far.
        restarts: u32,
        /// Why, when dead.
        reason: Option<String>,
    },
    /// Tell a local owner something it should know (printed by its driver).
    Warn {
        /// Who.
        owner: Owner,
        /// What.
        message: String,
    },
    /// Ask the head for a fresh view of the cluster now (work is parked as
    /// infeasible on a view that may be stale).
    RefreshView,
    /// Route a call to an actor that lives on another node.
    ForwardCall {
        /// The actor.
        actor: ActorId,
        /// Who waits for the result here.
        owner: Owner,
        /// The call.
        task: TaskSpec,
    },
}

#[derive(Debug, Clone)]
struct Queued {
    spec: TaskSpec,
    owner: Owner,
    request: ResourceSet,
}

impl Queued {
    /// The scheduling class: resource shape and strategy.
    fn class(&self) -> String {
        format!("{:?}|{:?}", self.spec.resources.0, self.spec.strategy)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum WorkerState {
    Starting,
    Idle,
    Busy([u8; 16]),
}

#[derive(Debug, Clone)]
struct Worker {
    job: JobId,
    gpus: Vec<u32>,
    state: WorkerState,
    /// The actor this worker is dedicated to (never reused for tasks).
    actor: Option<ActorId>,
}

#[derive(Debug, Clone)]
struct Running {
    task: Queued,
    worker: WorkerId,
    /// What the task holds now (CPU is lent out while it blocks).
    held: ResourceSet,
    gpus: Vec<(u32, Quantity)>,
    cancelled: bool,
}

/// The local scheduler.
#[derive(Debug)]
pub struct Dispatcher {
    me: NodeId,
    local: NodeResources,
    view: ClusterView<NodeId>,
    policy: Scheduler,
    queue: ClassQueue<Queued>,
    running: HashMap<[u8; 16], Running>,
    workers: HashMap<WorkerId, Worker>,
    next_worker: WorkerId,
    max_idle: usize,
    /// Infeasible work waiting for the cluster to change (D-5).
    parked: Vec<parked::Parked>,
    /// How long parked work waits before it fails (zero: fail at once).
    infeasible_timeout: std::time::Duration,
    /// The time of the last [`Dispatcher::tick`].
    now: Option<std::time::Instant>,
    /// (job, shape) pairs whose owner was told they cannot run now.
    warned: std::collections::HashSet<(JobId, String)>,
    actors: HashMap<ActorId, actors::LocalActor>,
    dead_actors: HashMap<ActorId, String>,
    /// Calls for actors whose creation was announced but not started here.
    pre_waiting: HashMap<ActorId, std::collections::VecDeque<Queued>>,
    /// Kills asked for before the actor's constructor was scheduled here.
    pending_kills: HashMap<ActorId, bool>,
    /// Workers being killed (force cancel): never reused.
    killing: std::collections::HashSet<WorkerId>,
    /// Placement-group bundles reserved here.
    bundles: HashMap<(crate::ids::PlacementGroupId, u32), bundles::Bundle>,
}

/// Counts for status views.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DispatchStats {
    /// Waiting for resources or a worker.
    pub queued: usize,
    /// Dispatched and not yet ended.
    pub running: usize,
    /// Worker processes (any state).
    pub workers: usize,
    /// Idle workers.
    pub idle: usize,
}

impl Dispatcher {
    /// A dispatcher for node `me` with `total` resources.
    pub fn new(me: NodeId, local: NodeResources) -> Dispatcher {
        let max_idle = local.total().get(CPU).whole_units().max(1) as usize;
        let mut view = ClusterView::new();
        view.upsert(me, local.clone());
        Dispatcher {
            me,
            local,
            view,
            policy: Scheduler::new(),
            queue: ClassQueue::default(),
            running: HashMap::new(),
            workers: HashMap::new(),
            next_worker: 1,
            max_idle,
            parked: Vec::new(),
            infeasible_timeout: std::time::Duration::ZERO,
            now: None,
            warned: Default::default(),
            actors: HashMap::new(),
            dead_actors: HashMap::new(),
            pre_waiting: HashMap::new(),
            pending_kills: HashMap::new(),
            killing: Default::default(),
            bundles: HashMap::new(),
        }
    }

    /// This node's id (a re-registered raylet gets a new one).
    pub fn set_node_id(&mut self, me: NodeId) {
        self.view.remove(self.me);
        self.me = me;
        self.view.upsert(me, self.local.clone());
    }

    /// What is free here now.
    pub fn available(&self) -> &ResourceSet {
        self.local.available()
    }

    /// How long work no node can run waits for one before failing with
    /// `Infeasible` (D-5); zero (the default) fails it at once.
    pub fn with_infeasible_timeout(mut self, timeout: std::time::Duration) -> Dispatcher {
        self.infeasible_timeout = timeout;
        self
    }

    /// Replaces the view of the other nodes (from the head's status).
    pub fn set_peers(&mut self, peers: Vec<(NodeId, NodeResources)>) {
        let mut view = ClusterView::new();
        for (id, n) in peers.into_iter().filter(|(id, _)| *id != self.me) {
            view.upsert(id, n);
        }
        view.upsert(self.me, self.local.clone());
        self.view = view;
    }

    /// [`Dispatcher::set_peers`], then places parked work that a node can
    /// run now and spills what waits here if a peer has room now.
    pub fn set_peers_and_pump(&mut self, peers: Vec<(NodeId, NodeResources)>) -> Vec<Action> {
        self.set_peers(peers);
        let mut out = Vec::new();
        self.retry_parked(&mut out);
        self.pump(&mut out);
        out
    }

    /// Counts for status views.
    pub fn stats(&self) -> DispatchStats {
        DispatchStats {
            queued: self.queue.len(),
            running: self.running.len(),
            workers: self.workers.len(),
            idle: self
                .workers
                .values()
                .filter(|w| w.state == WorkerState::Idle)
                .count(),
        }
    }

    /// Shapes waiting here with their counts, then shapes no node can run
    /// now with what is missing, for `prism status`.
    pub fn demand(&self) -> Vec<(ResourceSet, u32, Option<String>)> {
        let mut out: Vec<(ResourceSet, u32, Option<String>)> = Vec::new();
        let waiting = self.queue.iter().map(|q| (&q.request, None));
        let parked = self.parked.iter().map(|p| (&p.q.request, Some(&p.reason)));
        for (shape, why) in waiting.chain(parked) {
            match out
                .iter_mut()
                .find(|(s, _, w)| s == shape && w.as_ref() == why)
            {
                Some(e) => e.1 += 1,
                None => out.push((shape.clone(), 1, why.cloned())),
            }
        }
        out
    }

    /// A task arrives from `owner`.
    pub fn submit(&mut self, spec: TaskSpec, owner: Owner) -> Vec<Action> {
        if let TaskKind::ActorCall(call) = &spec.kind {
            let actor = call.actor_id;
            return self.submit_call(actor, spec, owner);
        }
        let request = spec.resources.to_set();
        let mut out = Vec::new();
        if let WireStrategy::Bundle { pg, node, .. } = spec.strategy {
            let q = Queued {
                spec,
                owner,
                request,
            };
            if node != self.me {
                self.forward_to(node, q, &mut out);
                return out;
            }
            if let Err(detail) = self.bundle_check(&q) {
                if let TaskKind::CreateActor(c) = &q.spec.kind {
                    let why = format!("placement group {pg}: {detail}");
                    out.extend(self.actor_registration_failed(c.actor_id, why));
                }
                let outcome = Outcome::Failed(Failure::PlacementGroupGone { pg, detail });
                out.push(Action::Reply {
                    owner: q.owner,
                    task_id: q.spec.task_id,
                    outcome,
                });
                return out;
            }
            if let TaskKind::CreateActor(c) = &q.spec.kind {
                self.pre_waiting.entry(c.actor_id).or_default();
            }
            self.queue.push_back(q.class(), q);
            self.pump(&mut out);
            return out;
        }
        let strategy = match spec.strategy.to_strategy() {
            Ok(s) => s,
            Err(why) => {
                out.push(reply_failed(
                    owner,
                    &spec,
                    Failure::Infeasible { reason: why },
                ));
                return out;
            }
        };
        let q = Queued {
            spec,
            owner,
            request,
        };
        self.place(q, &strategy, None, &mut out);
        out
    }

    /// Sends `q` where the policy says: to a peer, into the local queue, or
    /// (no node can run it now) parked or failed (D-5). `parked_since` is
    /// set when `q` comes back from the parked list.
    fn place(
        &mut self,
        q: Queued,
        strategy: &Strategy<NodeId>,
        parked_since: Option<Option<std::time::Instant>>,
        out: &mut Vec<Action>,
    ) {
        let request = &q.request;
        // A spilled task stays here unless this node can never run it.
        let decision = if q.spec.spilled {
            if self.local.feasible(request) {
                Decision::Queue(self.me)
            } else {
                let why = request
                    .first_shortfall(self.local.total())
                    .map(|(r, asked, has)| format!("no node has {asked} {r} (this one has {has})"))
                    .unwrap_or_else(|| format!("this node cannot hold {request}"));
                Decision::Infeasible(prism_scheduler::Infeasible::InvalidRequest(why))
            }
        } else {
            self.view.upsert(self.me, self.local.clone());
            self.policy
                .decide(&self.view, request, strategy, Some(self.me))
        };
        match decision {
            Decision::Place(n) | Decision::Queue(n) if n != self.me => self.forward_to(n, q, out),
            Decision::Place(_) | Decision::Queue(_) => {
                if let TaskKind::CreateActor(c) = &q.spec.kind {
                    self.pre_waiting.entry(c.actor_id).or_default();
                }
                self.queue.push_back(q.class(), q);
                self.pump(out);
            }
            Decision::Infeasible(why) => {
                let reason = match why {
                    prism_scheduler::Infeasible::InvalidRequest(w) => w,
                    other => other.to_string(),
                };
                match parked_since {
                    Some(since) => self.keep_parked(q, reason, since),
                    None if q.spec.spilled
                        || q.spec.fail_if_infeasible
                        || self.infeasible_timeout.is_zero() =>
                    {
                        self.fail_infeasible(q, reason, out)
                    }
                    None => self.park(q, reason, out),
                }
            }
        }
    }

    /// Fails work no node can run, and the actor it would have created.
    fn fail_infeasible(&mut self, q: Queued, reason: String, out: &mut Vec<Action>) {
        if let TaskKind::CreateActor(c) = &q.spec.kind {
            out.extend(
                self.actor_registration_failed(c.actor_id, format!("it is infeasible: {reason}")),
            );
        }
        out.push(reply_failed(
            q.owner,
            &q.spec,
            Failure::Infeasible { reason },
        ));
    }

    fn forward_to(&mut self, node: NodeId, mut q: Queued, out: &mut Vec<Action>) {
        q.spec.spilled = true;
        // Assume the peer takes it, until its next report says otherwise.
        let _ = self.view.allocate(node, &q.request);
        let created = match &q.spec.kind {
            TaskKind::CreateActor(c) => Some(c.actor_id),
            _ => None,
        };
        out.push(Action::Forward {
            node,
            owner: q.owner,
            task: q.spec,
        });
        if let Some(actor) = created {
            self.calls_follow_actor(actor, out);
        }
    }

    /// Dispatches what fits now; spills back what waits here but fits
    /// elsewhere. One check per class: behind a head that cannot run, the
    /// rest of its class cannot either.
    fn pump(&mut self, out: &mut Vec<Action>) {
        for i in 0..self.queue.class_count() {
            while let Some(q) = self.queue.front(i) {
                if self.fits(&q.spec.strategy, &q.request) {
                    let q = self.queue.pop_front(i).expect("front exists");
                    self.dispatch(q, out);
                    continue;
                }
                let target = if q.spec.spilled {
                    None
                } else {
                    let q = q.clone();
                    self.spill_target(&q)
                };
                match target {
                    Some(node) => {
                        let q = self.queue.pop_front(i).expect("front exists");
                        self.forward_to(node, q, out);
                    }
                    None => break,
                }
            }
        }
        self.queue.compact();
    }

    fn spill_target(&mut self, q: &Queued) -> Option<NodeId> {
        let strategy = q.spec.strategy.to_strategy().ok()?;
        if matches!(strategy, Strategy::NodeAffinity { soft: false, .. }) {
            return None;
        }
        self.view.upsert(self.me, self.local.clone());
        match self
            .policy
            .decide(&self.view, &q.request, &strategy, Some(self.me))
        {
            Decision::Place(n) if n != self.me => Some(n),
            _ => None,
        }
    }

    fn dispatch(&mut self, q: Queued, out: &mut Vec<Action>) {
        let gpus = match self.take(&q.spec.strategy, &q.request) {
            Ok(g) => g,
            Err(_) => {
                self.queue.push_front(q.class(), q);
                return;
            }
        };
        let indices: Vec<u32> = gpus.iter().map(|(i, _)| *i).collect();
        let job = q.spec.job_id;
        if let TaskKind::CreateActor(create) = &q.spec.kind {
            let create = create.clone();
            self.start_actor(q, create, gpus, out);
            return;
        }
        let idle = self
            .workers
            .iter()
            .filter(|(_, w)| w.state == WorkerState::Idle && w.job == job && w.gpus == indices)
            .map(|(id, _)| *id)
            .min();
        let worker = match idle {
            Some(id) => {
                out.push(Action::Execute {
                    worker: id,
                    task: q.spec.clone(),
                    gpus: indices.clone(),
                });
                id
            }
            None => {
                let id = self.next_worker;
                self.next_worker += 1;
                self.workers.insert(
                    id,
                    Worker {
                        job,
                        gpus: indices.clone(),
                        state: WorkerState::Starting,
                        actor: None,
                    },
                );
                out.push(Action::Start {
                    worker: id,
                    job,
                    gpus: indices,
                });
                id
            }
        };
        if let Some(w) = self.workers.get_mut(&worker) {
            if w.state == WorkerState::Idle {
                w.state = WorkerState::Busy(q.spec.task_id);
            }
        }
        self.running.insert(
            q.spec.task_id,
            Running {
                held: q.request.clone(),
                task: q,
                worker,
                gpus,
                cancelled: false,
            },
        );
    }

    fn task_of(&self, worker: WorkerId) -> Option<[u8; 16]> {
        self.running
            .iter()
            .find(|(_, r)| r.worker == worker)
            .map(|(id, _)| *id)
    }

    /// A started worker connected: give it the task it was started for.
    pub fn worker_ready(&mut self, worker: WorkerId) -> Vec<Action> {
        let mut out = Vec::new();
        let task = self.task_of(worker);
        let Some(w) = self.workers.get_mut(&worker) else {
            out.push(Action::Kill { worker });
            return out;
        };
        match task.and_then(|t| self.running.get(&t)) {
            Some(r) => {
                w.state = WorkerState::Busy(r.task.spec.task_id);
                out.push(Action::Execute {
                    worker,
                    task: r.task.spec.clone(),
                    gpus: r.gpus.iter().map(|(i, _)| *i).collect(),
                });
            }
            None => {
                w.state = WorkerState::Idle;
                self.pump(&mut out);
                self.trim_idle(&mut out);
            }
        }
        out
    }

    fn release(&mut self, r: &Running) {
        self.give_back(&r.task.spec.strategy, &r.held, &r.gpus);
    }

    /// A worker reports its task's outcome.
    pub fn task_done(
        &mut self,
        worker: WorkerId,
        task_id: [u8; 16],
        outcome: Outcome,
    ) -> Vec<Action> {
        if let Some(actor) = self.workers.get(&worker).and_then(|w| w.actor) {
            return self.actor_done(actor, task_id, outcome);
        }
        let mut out = Vec::new();
        let Some(r) = self.running.remove(&task_id) else {
            return out;
        };
        self.release(&r);
        // A worker being killed (force cancel) never takes another task.
        if let Some(w) = self
            .workers
            .get_mut(&worker)
            .filter(|_| !self.killing.contains(&worker))
        {
            w.state = WorkerState::Idle;
        }
        let retry = matches!(outcome, Outcome::Failed(Failure::Panic { .. }))
            && r.task.spec.retry_exceptions
            && r.task.spec.attempt < r.task.spec.max_retries
            && !r.cancelled;
        if retry {
            let mut q = r.task;
            q.spec.attempt += 1;
            self.queue.push_front(q.class(), q);
        } else if !r.cancelled {
            out.push(Action::Reply {
                owner: r.task.owner,
                task_id,
                outcome,
            });
        }
        self.pump(&mut out);
        self.trim_idle(&mut out);
        out
    }

    /// Keeps at most `max_idle` idle workers per node, killing the newest extras.
    fn trim_idle(&mut self, out: &mut Vec<Action>) {
        let mut idle: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.state == WorkerState::Idle)
            .map(|(id, _)| *id)
            .collect();
        if idle.len() <= self.max_idle {
            return;
        }
        idle.sort_unstable();
        for id in idle.split_off(self.max_idle) {
            self.workers.remove(&id);
            out.push(Action::Kill { worker: id });
        }
    }

    /// A worker process exited or its connection broke (D-4).
    pub fn worker_died(&mut self, worker: WorkerId, failure: Failure) -> Vec<Action> {
        let mut out = Vec::new();
        self.killing.remove(&worker);
        let Some(w) = self.workers.remove(&worker) else {
            return out;
        };
        if let Some(actor) = w.actor {
            return self.actor_worker_died(actor, worker, failure);
        }
        if let Some(t) = self.task_of(worker) {
            let r = self.running.remove(&t).expect("task_of found it");
            self.release(&r);
            let deterministic = matches!(failure, Failure::WorkerStartFailed { .. });
            if r.cancelled {
            } else if !deterministic && r.task.spec.attempt < r.task.spec.max_retries {
                let mut q = r.task;
                q.spec.attempt += 1;
                tracing::warn!(task = ?q.spec.name, attempt = q.spec.attempt, "retrying after {failure:?}");
                self.queue.push_front(q.class(), q);
            } else {
                out.push(Action::Reply {
                    owner: r.task.owner,
                    task_id: t,
                    outcome: Outcome::Failed(failure),
                });
            }
        }
        self.pump(&mut out);
        out
    }

    /// A forwarded task's peer failed: retry (anywhere) or fail with the cause.
    pub fn forward_failed(
        &mut self,
        node: NodeId,
        owner: Owner,
        mut task: TaskSpec,
        detail: String,
    ) -> Vec<Action> {
        self.view.set_alive(node, false);
        if task.attempt < task.max_retries {
            task.attempt += 1;
            task.spilled = false;
            return self.submit(task, owner);
        }
        vec![Action::Reply {
            owner,
            task_id: task.task_id,
            outcome: Outcome::Failed(Failure::NodeDied { node, detail }),
        }]
    }

    /// The task's CPUs are lent out while it blocks in `get`.
    pub fn worker_blocked(&mut self, worker: WorkerId, blocked: bool) -> Vec<Action> {
        let mut out = Vec::new();
        // An actor holds its resources for its lifetime; it lends nothing.
        if self.workers.get(&worker).is_some_and(|w| w.actor.is_some()) {
            return out;
        }
        let Some(t) = self.task_of(worker) else {
            return out;
        };
        let r = self.running.get_mut(&t).expect("task_of found it");
        let cpu = r.task.request.get(CPU);
        let lend = ResourceSet::new().with(CPU, cpu);
        let holds_cpu = r.held.get(CPU) == cpu;
        if blocked && holds_cpu && !cpu.is_zero() {
            r.held.set(CPU, Quantity::ZERO);
            let strategy = r.task.spec.strategy.clone();
            self.give_back(&strategy, &lend, &[]);
            self.pump(&mut out);
        } else if !blocked && !holds_cpu {
            let strategy = r.task.spec.strategy.clone();
            // Taken back when free; otherwise it runs on borrowed time.
            if self.take(&strategy, &lend).is_ok() {
                if let Some(r) = self.running.get_mut(&t) {
                    r.held.set(CPU, cpu);
                }
            }
        }
        out
    }

    /// The owner cancels a task.
    pub fn cancel(&mut self, task_id: [u8; 16], force: bool) -> Vec<Action> {
        let mut out = Vec::new();
        // Actors end with `kill`, not `cancel`.
        let creation = |q: &Queued| matches!(q.spec.kind, TaskKind::CreateActor(_));
        if self
            .queue
            .iter()
            .any(|q| q.spec.task_id == task_id && creation(q))
            || self
                .running
                .get(&task_id)
                .is_some_and(|r| creation(&r.task))
            || self
                .parked
                .iter()
                .any(|p| p.q.spec.task_id == task_id && creation(&p.q))
        {
            return out;
        }
        let parked = self.parked.iter().position(|p| p.q.spec.task_id == task_id);
        let queued = match parked {
            Some(i) => Some(self.parked.remove(i).q),
            None => self.queue.remove_first(|q| q.spec.task_id == task_id),
        };
        if let Some(q) = queued {
            out.push(Action::Reply {
                owner: q.owner,
                task_id,
                outcome: Outcome::Failed(Failure::Cancelled),
            });
            return out;
        }
        if let Some(r) = self.running.get_mut(&task_id) {
            if r.cancelled {
                return out;
            }
            r.cancelled = true;
            out.push(Action::Reply {
                owner: r.task.owner,
                task_id,
                outcome: Outcome::Failed(Failure::Cancelled),
            });
            if force {
                out.push(Action::Kill { worker: r.worker });
                self.killing.insert(r.worker);
            }
        }
        out
    }

    /// A job that ran elsewhere ended (the head says so): stop its workers
    /// here, except those of detached actors.
    pub fn job_ended(&mut self, job: JobId) -> Vec<Action> {
        self.owner_gone(Owner::MAX, Some(job))
    }

    /// The owner is gone: drop its queued tasks; with `job`, the job ended
    /// and its workers are killed (no orphans).
    pub fn owner_gone(&mut self, owner: Owner, job: Option<JobId>) -> Vec<Action> {
        let mut out = Vec::new();
        self.queue.retain(|q| q.owner != owner);
        self.parked.retain(|p| p.q.owner != owner);
        for r in self.running.values_mut().filter(|r| r.task.owner == owner) {
            r.cancelled = true;
        }
        if let Some(job) = job {
            // Nothing of the job may be retried or restarted once it ends.
            for r in self
                .running
                .values_mut()
                .filter(|r| r.task.spec.job_id == job)
            {
                r.cancelled = true;
            }
            self.queue.retain(|q| q.spec.job_id != job);
            self.parked.retain(|p| p.q.spec.job_id != job);
            let detached = self.detached_workers();
            self.actors_of_job_end(job);
            let doomed: Vec<WorkerId> = self
                .workers
                .iter()
                .filter(|(id, w)| w.job == job && !detached.contains(id))
                .map(|(id, _)| *id)
                .collect();
            for w in doomed {
                out.push(Action::Kill { worker: w });
                let failure = Failure::Cancelled;
                out.extend(self.worker_died(w, failure));
            }
            self.queue.retain(|q| q.spec.job_id != job);
        }
        self.pump(&mut out);
        out
    }
}

pub(crate) use actors::died;
pub use actors::KILL_METHOD;

/// The call that kills `actor` (routed like any call, so it reaches the
/// actor's node in order with the calls sent before it). Its one argument is
/// `[1]` for "no restart".
pub fn kill_call(actor: ActorId, no_restart: bool) -> TaskSpec {
    let call = crate::proto::task::ActorCall {
        actor_id: actor,
        caller: rand::random(),
        seq: 0,
    };
    let mut spec = TaskSpec::new(
        rand::random(),
        JobId([0; 16]),
        KILL_METHOD,
        "kill",
        TaskKind::ActorCall(call),
    );
    spec.args = vec![crate::proto::task::ArgSpec::Inline(vec![u8::from(
        no_restart,
    )])];
    spec
}

fn reply_failed(owner: Owner, spec: &TaskSpec, failure: Failure) -> Action {
    Action::Reply {
        owner,
        task_id: spec.task_id,
        outcome: Outcome::Failed(failure),
    }
}

#[path = "dispatch_actors.rs"]
mod actors;
#[path = "dispatch_bundles.rs"]
mod bundles;
#[path = "dispatch_parked.rs"]
mod parked;
#[path = "dispatch_state.rs"]
pub mod state;

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
