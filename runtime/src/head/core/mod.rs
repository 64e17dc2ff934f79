//! The head core: every table of the head in one pure state machine. No
//! sockets, no processes, no clock: requests and ticks come in with the time
//! ([`Clock`]); replies go out at once, and everything else the head must
//! do goes out as [`Effect`]s that the shell (`head::shell`) carries out
//! and answers (`bundles_done`, `restart_failed`, `job_started`, …).
//!
//! # The main loop
//!
//! ```text
//! shell                                    HeadCore
//! ─────                                    ────────
//! request from a connection ─────────────▶ handle(clock, caller, req) → Reply
//! every half heartbeat      ─────────────▶ tick(clock)
//!                           ◀───────────── poll_effect(): Bundles / RestartActor /
//!                                          StartJob / SignalJob / Answer
//! effect's outcome          ─────────────▶ bundles_done / restart_failed / job_* …
//! ```
//!
//! Consequences chain inside the core, so they are tested without sockets
//! (`tests.rs`): a node misses its heartbeats → `tick` declares it dead →
//! its objects leave the directory, its actors restart elsewhere
//! ([`Effect::RestartActor`]) or die, its bundles are placed again
//! ([`Effect::Bundles`], the two-phase reservation of `core::placement`).
//!
//! Invariants of the tables live in their modules (NT-*, AT-*, PG-*, JT-*,
//! OD-1); the core adds:
//!
//! - **HC-1** a report from a node declared dead changes nothing (an actor
//!   restarting elsewhere is not pulled back, a dead node holds no object;
//!   a node that comes back reports the actors it fences under the id it
//!   was declared dead with, DA-4);
//! - **HC-2** one placement pass at a time: two groups never race for the
//!   same free resources, and a pass ends only when every raylet it asked
//!   has answered (or its call failed);
//! - **HC-3** a node id is bound to the certificate that registered it: a
//!   heartbeat, unregistration or object report for it from any other
//!   certificate is refused (and logged), the real node unaffected.

mod access;
mod actions;
mod actors;
pub use actors::{restart_number, RestartAnswer, RestartFailure};
mod audit;
mod groups;
mod jobs;
mod model_names;
mod names;
mod namespace_keys;
mod nodes;
mod objects;
pub(crate) mod placement;
mod queue;
mod relay;
pub mod serving;
pub use names::request_name;
mod recovery;
#[cfg(test)]
mod tests;
mod viewers;

mod caller;
pub use caller::Caller;

use super::actor_table::ActorTable;
use super::job_table::JobTable;
use super::node_table::{FailureDetector, NodeTable};
use super::object_directory::ObjectDirectory;
use super::pg_table::PgTable;
use crate::ids::{ActorId, ClusterId, JobId, NodeId};
use crate::proto::common::{ClusterStatus, Demand, StatusDelta};
use crate::proto::head::{ErrorKind, HeadRequest, HeadResponse, JobSubmission, RegisterNode};
use crate::proto::placement::BundleOp;
use crate::proto::task::PeerSubmit;
use placement::Placing;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use tracing::warn;

/// Now, as the shell read it: a monotonic instant for failure detection and
/// deadlines, and wall-clock milliseconds for what people read (job times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Monotonic time.
    pub at: Instant,
    /// Milliseconds since the Unix epoch.
    pub wall_ms: u64,
}

impl Clock {
    /// The machine's clocks now (the shell's only source of time).
    pub fn now() -> Clock {
        Clock {
            at: Instant::now(),
            wall_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    /// `d` later.
    pub fn after(self, d: Duration) -> Clock {
        Clock {
            at: self.at + d,
            wall_ms: self.wall_ms + d.as_millis() as u64,
        }
    }
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // a reply is made once and sent at once
pub enum Reply {
    /// Send this now.
    Now(HeadResponse),
    /// Answered later by an [`Effect::Answer`] with this waiter id.
    Later(u64),
}

/// What the shell must do for the core. Each names the call that reports
/// its outcome back.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Answer a request that waited ([`Reply::Later`]).
    Answer {
        /// The waiter.
        waiter: u64,
        /// The answer.
        response: HeadResponse,
    },
    /// Send bundle operations to a raylet, in order; report with
    /// [`HeadCore::bundles_done`].
    Bundles {
        /// The placement pass they belong to.
        pass: u64,
        /// The raylet.
        node: NodeId,
        /// Its peer address.
        addr: String,
        /// What to do.
        ops: Vec<BundleOp>,
    },
    /// Run a lost actor's constructor on `node` (a [`RestartFailure`] goes
    /// to [`HeadCore::restart_failed`]; the raylet reports success).
    RestartActor {
        /// The actor.
        actor: ActorId,
        /// Where.
        node: NodeId,
        /// Its peer address.
        addr: String,
        /// The creation (job and constructor task).
        create: Box<PeerSubmit>,
    },
    /// Tell a raylet to drop its copies of objects their owner freed (no
    /// answer needed: what it drops comes back as location updates).
    FreeCopies {
        /// The raylet.
        node: NodeId,
        /// Its peer address.
        addr: String,
        /// The objects.
        objects: Vec<prism_objectstore::ObjectId>,
    },
    /// Start a submitted job's driver; report with [`HeadCore::job_started`],
    /// [`HeadCore::job_start_failed`] and [`HeadCore::job_exited`].
    StartJob {
        /// The job.
        job: JobId,
        /// What to run.
        submission: JobSubmission,
    },
    /// SIGTERM a job's driver, then SIGKILL after `grace` if it still runs.
    SignalJob {
        /// The job.
        job: JobId,
        /// Its driver.
        pid: u32,
        /// How long it has to exit.
        grace: Duration,
    },
}

/// How long ended jobs are reported to raylets (so they stop its workers).
const ENDED_JOBS_WINDOW: Duration = Duration::from_secs(600);

/// The head's state, and every decision about it.
#[derive(Debug)]
pub struct HeadCore {
    cluster_id: ClusterId,
    head_address: String,
    nodes: NodeTable,
    objects: ObjectDirectory,
    actors: ActorTable,
    groups: PgTable,
    jobs: JobTable,
    demand: HashMap<NodeId, Vec<Demand>>,
    /// Drivers of running jobs that must reconnect after a recovery, by
    /// when (else their jobs end).
    awaiting_drivers: HashMap<JobId, Instant>,
    placing: Placing,
    effects: VecDeque<Effect>,
    /// Training runs: params, tags, status and per-step metrics (durable).
    pub(crate) runs: super::run_table::RunTable,
    /// The model registry (durable).
    pub(crate) models: super::model_table::ModelTable,
    /// Each namespace's serving, as its controller last reported it.
    serving: serving::Serving,
    /// Users and custom roles (durable).
    pub(crate) users: super::access::users::UserTable,
    /// The audit trail (durable; outlives the cluster, AU-3).
    pub(crate) audit: super::access::audit::AuditLog,
    /// Submitted jobs waiting for, or holding, their turn (JQ-1..4).
    pub(crate) queue: super::job_queue::JobQueue,
    /// What starts each queued or running submitted job (again).
    submissions: queue::Submissions,
    /// Spot-class jobs asked to stop, and for whom.
    preempted: HashMap<JobId, JobId>,
    /// Namespaces' quotas changed since the last commit.
    quota_changes: Vec<crate::proto::queue::NamespaceQuota>,
    /// What raylets seal spill files with (encryption at rest).
    pub(crate) spill_key: Option<[u8; 32]>,
    /// What namespaces' keys derive from (NK-1).
    pub(crate) namespace_secret: [u8; 32],
    /// Jobs (or users) and namespaces given a masking key, audited once (NK-3).
    keys_given: std::collections::HashSet<(String, String)>,
    /// The at-rest mark each running job saw first, per namespace (NK-4).
    at_rest_pins: HashMap<(JobId, String), bool>,
    /// Namespaces whose files are sealed at rest (durable).
    sealed: std::collections::BTreeSet<String>,
    /// Namespaces' at-rest marks changed since the last commit.
    sealed_changes: Vec<(String, bool)>,
    /// The namespaces of each join-token viewer (`Caller::Viewer`'s id is
    /// the index; one entry per distinct list).
    viewers: Vec<Vec<String>>,
}

impl HeadCore {
    /// An empty cluster.
    pub fn new(cluster_id: ClusterId, head_address: String, detector: FailureDetector) -> Self {
        HeadCore {
            cluster_id,
            head_address,
            nodes: NodeTable::new(detector),
            objects: ObjectDirectory::default(),
            actors: ActorTable::default(),
            groups: PgTable::default(),
            jobs: JobTable::default(),
            demand: HashMap::new(),
            awaiting_drivers: HashMap::new(),
            placing: Placing::default(),
            effects: VecDeque::new(),
            runs: Default::default(),
            models: Default::default(),
            serving: Default::default(),
            users: Default::default(),
            audit: Default::default(),
            queue: Default::default(),
            submissions: Default::default(),
            preempted: HashMap::new(),
            quota_changes: Vec::new(),
            spill_key: None,
            namespace_secret: rand::random(),
            keys_given: Default::default(),
            at_rest_pins: HashMap::new(),
            sealed: Default::default(),
            sealed_changes: Vec::new(),
            viewers: Vec::new(),
        }
    }

    /// The next thing the shell must do.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// Time passes: failure detection, placement retries, expired waits.
    pub fn tick(&mut self, now: Clock) {
        self.nodes.tick(now.at);
        self.after_node_events(now);
        self.drivers_tick(now);
        self.placement_tick(now);
        self.restarts_tick(now);
        self.admit_jobs(now);
    }

    /// A raylet registers under the fresh id `id` (drawn by the shell); the
    /// id is bound to the certificate `caller` presented (HC-3).
    pub fn register(
        &mut self,
        now: Clock,
        id: NodeId,
        reg: RegisterNode,
        caller: Caller,
    ) -> HeadResponse {
        let target = format!("node {id} ({}, {})", reg.node_name, reg.address);
        let incarnation = self.nodes.handle_register(now.at, id, reg);
        self.audit_record(
            now,
            caller,
            "cluster".into(),
            "node.join",
            target,
            String::new(),
            "ok".into(),
        );
        if let Caller::Node { cert } = caller {
            self.nodes.bind_cert(id, cert);
        }
        self.after_node_events(now);
        HeadResponse::Registered {
            node_id: id,
            incarnation,
            heartbeat_interval_ms: self.nodes.detector().interval.as_millis() as u64,
            spill_key: self.spill_key,
        }
    }

    /// Handles one request from `caller`. `Register` and `SubmitJob`, which
    /// need fresh ids, go through [`HeadCore::register`] and
    /// [`HeadCore::submit_job`]; requests that move bytes (hello, join,
    /// binaries, logs, listings gathered from raylets) are the shell's.
    /// State-changing requests leave an entry in the audit trail.
    pub fn handle(&mut self, now: Clock, caller: Caller, mut req: HeadRequest) -> Reply {
        if let HeadRequest::Relayed { job, request } = req {
            return self.handle_relayed(now, caller, job, request);
        }
        if let Err(message) = self.stamp(caller, &mut req) {
            return Reply::Now(HeadResponse::Error {
                kind: crate::proto::head::ErrorKind::BadRequest,
                message,
            });
        }
        if let Some(refusal) = self.gate_job(now, caller, &req) {
            return Reply::Now(refusal);
        }
        let intent = self.audit_intent(caller, &req);
        let mut reply = self.handle_request(now, caller, req);
        self.scope(caller, &mut reply);
        if let Some(intent) = intent {
            self.audit_done(now, access::origin(caller), intent, &reply);
        }
        reply
    }

    fn handle_request(&mut self, now: Clock, caller: Caller, req: HeadRequest) -> Reply {
        use HeadRequest as R;
        let reply = match req {
            R::Heartbeat { .. }
            | R::Unregister { .. }
            | R::DrainStarted { .. }
            | R::AddObjectLocation { .. }
            | R::UpdateObjectLocations { .. }
            | R::FreeObjects { .. }
            | R::SetResidency { .. }
            | R::ReportServe(_)
            | R::Register(_)
                if !caller.is_node() =>
            {
                needs_node(&req)
            }
            R::Heartbeat { node_id, .. }
            | R::Unregister { node_id }
            | R::DrainNode { node_id, .. }
            | R::DrainStarted { node_id }
            | R::AddObjectLocation { node_id, .. }
            | R::UpdateObjectLocations { node_id, .. }
            | R::FreeObjects { node_id, .. }
            | R::SetResidency { node_id, .. }
            | R::UpdateActor {
                node: Some((node_id, _)),
                ..
            } if !self.speaks_for(caller, node_id) => impostor(node_id),
            R::Heartbeat {
                node_id,
                available,
                leased,
                demand,
            } => self.heartbeat(now, node_id, (available.to_set(), leased.to_set()), demand),
            R::Unregister { node_id } => {
                self.nodes.handle_unregister(node_id);
                self.after_node_events(now);
                HeadResponse::Ok
            }
            R::GetStatus => HeadResponse::Status(self.status(now)),
            R::GetStatusSince { epoch, version } => {
                HeadResponse::StatusDelta(self.status_since(now, epoch, version))
            }
            R::DrainNode {
                node_id,
                reason,
                deadline_ms,
            } => self.drain(now, node_id, reason, deadline_ms),
            R::DrainStarted { node_id } => {
                self.nodes.drain_seen(node_id);
                HeadResponse::Ok
            }
            R::AddObjectLocation {
                node_id,
                object,
                size,
            } => self.add_location(node_id, object, size),
            R::UpdateObjectLocations { node_id, changes } => {
                self.update_locations(node_id, changes)
            }
            R::FreeObjects { node_id, objects } => self.free_objects(node_id, objects),
            R::GetObjectLocations { object } => self.locations(caller, &object),
            R::SetResidency { node_id, rules } => HeadResponse::ResidencySet {
                refused: rules
                    .into_iter()
                    .filter_map(|(object, rule)| {
                        self.set_residency(node_id, object, rule)
                            .err()
                            .map(|why| (object, why))
                    })
                    .collect(),
            },
            R::NamespaceKey {
                job,
                usage,
                namespace,
            } => self.namespace_key(now, caller, job, usage, namespace),
            R::RegisterActor(..)
            | R::UpdateActor { .. }
            | R::GetActor { .. }
            | R::GetNamedActor { .. }
            | R::ListActors => self.actor_request(req),
            // Only relayed (`handle_relayed` answers it): the raylet kills.
            R::KillActor { .. } => HeadResponse::Error {
                kind: ErrorKind::BadRequest,
                message: "an actor is killed through its handle (prism::kill): the raylet of \
                          the process holding it kills it once the head allows"
                    .into(),
            },
            R::PlacementGroup(pg) => return self.pg_request(now, pg),
            R::ListJobs => HeadResponse::Jobs(self.jobs.list()),
            R::ReportRun(r) => {
                self.runs.report(r, now.wall_ms);
                HeadResponse::Ok
            }
            R::ListRuns => HeadResponse::Runs(self.runs.list()),
            R::ReportServe(_) | R::ListServe => self.serving_request(now, req),
            R::GetRun { run_id } => HeadResponse::Run(self.runs.get(&run_id)),
            R::Models(req) => match self.models.handle(
                req,
                &self.runs,
                |job| self.jobs.get(job).map(|j| j.namespace.clone()),
                now.wall_ms,
            ) {
                Ok(models) => HeadResponse::Models(models),
                Err(message) => HeadResponse::Error {
                    kind: crate::proto::head::ErrorKind::BadRequest,
                    message,
                },
            },
            R::StopJob { job_id } => self.stop_job(now, job_id, Duration::from_secs(3)),
            R::Queue(q) => self.queue_request(now, caller, q),
            R::RegisterDriver {
                job_id,
                entrypoint,
                pid,
            } => self.register_driver(now, caller, job_id, entrypoint, pid),
            other => HeadResponse::Error {
                kind: ErrorKind::Internal,
                message: format!("the head's shell handles {}", request_name(&other)),
            },
        };
        Reply::Now(reply)
    }

    /// The cluster as `prism status` shows it.
    pub fn status(&self, now: Clock) -> ClusterStatus {
        ClusterStatus {
            cluster_id: self.cluster_id,
            head_address: self.head_address.clone(),
            nodes: self.nodes.status(now.at),
            demand: self
                .demand
                .iter()
                .filter(|(id, _)| self.is_live(**id))
                .flat_map(|(_, d)| d.iter().cloned())
                .collect(),
            ended_jobs: self.ended_jobs(now),
        }
    }

    /// Jobs that ended in the last minutes.
    fn ended_jobs(&self, now: Clock) -> Vec<crate::ids::JobId> {
        let since = now
            .wall_ms
            .saturating_sub(ENDED_JOBS_WINDOW.as_millis() as u64);
        self.jobs.ended_since(since)
    }

    /// The nodes changed since `version` of run `epoch` (NT-6), for a
    /// raylet's view of the cluster.
    pub fn status_since(&self, now: Clock, epoch: u64, version: u64) -> StatusDelta {
        let d = self.nodes.status_since(now.at, epoch, version);
        StatusDelta {
            cluster_id: self.cluster_id,
            head_address: self.head_address.clone(),
            epoch: d.epoch,
            version: d.version,
            full: d.full,
            nodes: d.nodes,
            gone: d.gone,
            ended_jobs: self.ended_jobs(now),
        }
    }

    /// HC-3: only the connection that presents the certificate a node
    /// registered with may speak for that node.
    fn speaks_for(&self, caller: Caller, node: NodeId) -> bool {
        match (caller, self.nodes.node(node).and_then(|n| n.cert)) {
            (Caller::Node { cert }, Some(bound)) => cert == bound,
            _ => true,
        }
    }

    fn push(&mut self, e: Effect) {
        self.effects.push_back(e);
    }
}

fn bad(message: String) -> HeadResponse {
    HeadResponse::Error {
        kind: ErrorKind::BadRequest,
        message,
    }
}

fn impostor(node: NodeId) -> HeadResponse {
    warn!(%node, "refused a request for a node from a connection with another certificate");
    HeadResponse::Error {
        kind: ErrorKind::Unauthorized,
        message: format!(
            "node {node} registered with another certificate; this connection may not speak for it"
        ),
    }
}

fn needs_node(req: &HeadRequest) -> HeadResponse {
    HeadResponse::Error {
        kind: ErrorKind::Unauthorized,
        message: format!(
            "{} needs a node certificate from the cluster CA; join with the token first",
            request_name(req)
        ),
    }
}
