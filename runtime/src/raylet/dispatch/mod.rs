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
//! - **D-6** work spilled here stays where it lands when it arrives (the
//!   sender's view chose this node), but when a fresh view of the cluster
//!   shows another node with room for it now while it still waits here, it
//!   goes back to the sender, which places it again: a spill chosen on a
//!   stale view (the chosen node had filled meanwhile) does not wait
//!   behind work that may never end. Handed back at most once per fresh
//!   view, and only one hop (no chain of forwards whose middle node's death
//!   would run it twice); an actor's restart the head placed is never
//!   handed back.

use crate::ids::{ActorId, JobId, NodeId};
use crate::proto::head::ActorState;
use crate::proto::task::{Failure, Outcome, TaskKind, TaskSpec};
use prism_scheduler::{ClusterView, NodeResources, Quantity, ResourceSet, Scheduler, CPU};
use queue::ClassQueue;
use std::collections::HashMap;

/// A worker process, numbered by this raylet.
pub type WorkerId = u64;
/// Who waits for a task's reply. The shell routes a reply by the owner's
/// kind; each kind numbers its owners on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// A driver's or worker's connection on the local task socket.
    Local(u64),
    /// A task a peer raylet spilled here (answered on that peer's stream).
    Spilled(u64),
    /// A peer raylet's ordered call stream to an actor here.
    PeerStream(u64),
    /// The raylet itself (a kill it queued on its own): no reply is sent.
    Raylet,
}

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
        /// The node id it runs under (`PRISM_NODE_ID`).
        node: NodeId,
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
        task_id: crate::ids::TaskId,
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
    /// Ask a lease's owner to return it after its running task.
    RevokeLease {
        /// Who holds it.
        owner: Owner,
        /// The lease.
        lease: crate::ids::TaskId,
    },
    /// A peer's call dropped by the fence, which closed the peer's stream:
    /// the peer re-sends or fails it (DF-5). Nothing is sent; it left here.
    Dropped {
        /// The call.
        task_id: crate::ids::TaskId,
    },
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
    Busy(crate::ids::TaskId),
}

#[derive(Debug, Clone)]
struct Worker {
    job: JobId,
    gpus: Vec<u32>,
    state: WorkerState,
    /// The actor this worker is dedicated to (never reused for tasks).
    actor: Option<ActorId>,
    /// Until when (as of the ticks, and for how many more ticks at least)
    /// it is not trimmed: a worker whose lease just ended reports the tasks
    /// it ran itself, a few times a second (TE-3).
    fresh: Option<(std::time::Instant, u8)>,
    /// The node id (incarnation) it was started under, which it reports
    /// as its own (`prism::node_id()`): a task never starts on a worker of
    /// an earlier one.
    node: NodeId,
}

impl Worker {
    /// Idle, and started under this node's id now (`me`).
    fn reusable(&self, me: NodeId) -> bool {
        self.state == WorkerState::Idle && self.node == me
    }
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
    running: HashMap<crate::ids::TaskId, Running>,
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
    /// Actors fenced here when this node was declared dead (DF-3).
    fenced: HashMap<ActorId, fence::Fenced>,
    /// Peer streams numbered below this were closed by a fence: their
    /// calls are their senders' to re-send (DF-5).
    fence_mark: u64,
    /// Calls for actors whose creation was announced but not started here.
    pre_waiting: HashMap<ActorId, std::collections::VecDeque<Queued>>,
    /// Kills asked for before the actor's constructor was scheduled here.
    pending_kills: HashMap<ActorId, bool>,
    /// Workers being killed (force cancel, the fence): never reused.
    killing: std::collections::HashSet<WorkerId>,
    /// Placement-group bundles reserved here.
    bundles: HashMap<(crate::ids::PlacementGroupId, u32), bundles::Bundle>,
    /// Why this node is being drained, while it is (DR-1).
    draining: Option<String>,
    /// Workers leased to owners on this node.
    leases: lease::Leases,
    /// Work refused for another incarnation of this node (DF-6), ever.
    refused: u64,
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
    /// Workers leased now.
    pub leases_held: usize,
    /// Lease requests waiting in the queue (counted in `queued` too).
    pub leases_waiting: usize,
    /// Leases granted, ever.
    pub leases_granted: u64,
    /// Work refused for another incarnation of this node, ever (DF-6).
    pub work_refused: u64,
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
            fenced: HashMap::new(),
            fence_mark: 0,
            pre_waiting: HashMap::new(),
            pending_kills: HashMap::new(),
            killing: Default::default(),
            bundles: HashMap::new(),
            draining: None,
            leases: Default::default(),
            refused: 0,
        }
    }

    /// This node's id (a re-registered raylet gets a new one).
    pub fn set_node_id(&mut self, me: NodeId) -> Vec<Action> {
        if me == self.me {
            return Vec::new();
        }
        self.view.remove(self.me);
        self.me = me;
        self.view.upsert(me, self.local.clone());
        // Workers started under the earlier id go once idle; those idle now
        // go now, and leases of them end.
        let mut out = Vec::new();
        self.trim_idle(&mut out);
        self.revoke_all_leases(&mut out);
        out
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
        // D-6: with a fresh view, what was spilled here may move on.
        self.pump_with(true, &mut out);
        out
    }

    /// The job worker `worker` was started for.
    pub fn job_of(&self, worker: WorkerId) -> Option<JobId> {
        self.workers.get(&worker).map(|w| w.job)
    }

    /// The actor `worker` is dedicated to, if any.
    pub fn actor_of(&self, worker: WorkerId) -> Option<ActorId> {
        self.workers.get(&worker).and_then(|w| w.actor)
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
            leases_held: self.leases.live.len(),
            leases_waiting: self.queue.iter().filter(|q| lease::is_lease(q)).count(),
            leases_granted: self.leases.granted,
            work_refused: self.refused,
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
}

pub(crate) use actors::died;
pub use actors::KILL_METHOD;
pub use lease::LEASE_METHOD;

/// The call that kills `actor` (routed like any call, so it reaches the
/// actor's node in order with the calls sent before it). Its first argument
/// is `[1]` for "no restart"; a second one, if any, is the cause
/// ([`kill_call_because`]).
pub fn kill_call(actor: ActorId, no_restart: bool) -> TaskSpec {
    let call = crate::proto::task::ActorCall {
        actor_id: actor,
        caller: crate::ids::HandleId::random(),
        seq: 0,
    };
    let mut spec = TaskSpec::new(
        crate::ids::TaskId::random(),
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

/// [`kill_call`] for good, naming why (the actor's calls here fail with
/// it, not with a user's kill).
pub fn kill_call_because(actor: ActorId, why: &str) -> TaskSpec {
    let mut spec = kill_call(actor, true);
    spec.args
        .push(crate::proto::task::ArgSpec::Inline(why.as_bytes().to_vec()));
    spec
}

fn reply_failed(owner: Owner, spec: &TaskSpec, failure: Failure) -> Action {
    Action::Reply {
        owner,
        task_id: spec.task_id,
        outcome: Outcome::Failed(failure),
    }
}

mod actors;
mod bundle_pause;
mod bundles;
mod direct;
mod draining;
mod ending;
pub(super) mod fence;
mod lease;
mod ledger;
mod parked;
mod placing;
mod pool;
pub mod queue;
pub mod state;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_direct;
#[cfg(test)]
mod tests_draining;
#[cfg(test)]
mod tests_fence;
#[cfg(test)]
mod tests_gpu;
#[cfg(test)]
mod tests_kill;
#[cfg(test)]
mod tests_lease;
#[cfg(test)]
mod tests_lease_queue;
#[cfg(test)]
mod tests_pause;
#[cfg(test)]
mod tests_spill;
