//! The head core without sockets: consequences that used to be testable
//! only piece by piece through processes, driven here with a virtual clock
//! and raylets simulated by answering the core's effects ([`Sim`]).

mod access;
mod failures;
mod groups;
mod jobs;
mod model_names;
mod namespace_keys;
mod queue;
mod relay;
mod residency;
mod restarts;
mod serving;
mod viewers;

use super::*;
use crate::ids::{JobId, PlacementGroupId};
use crate::proto::common::{NodeState, Resources};
use crate::proto::head::{ActorInfo, ActorState};
use crate::proto::placement::{BundleReply, PgCreate, PgInfo, PgRequest, PgState, PgStrategyWire};
use crate::proto::task::{ActorCreate, JobSpec, TaskKind, TaskSpec};
use prism_scheduler::{Quantity, ResourceSet, CPU};

pub(super) fn detector() -> FailureDetector {
    FailureDetector {
        interval: Duration::from_millis(100),
        suspect_after: 3,
        dead_after: 10,
    }
}

pub(super) fn cpus(n: u32) -> ResourceSet {
    ResourceSet::new().with(CPU, Quantity::whole(n))
}

pub(super) fn reg(name: &str, cpu: u32) -> RegisterNode {
    RegisterNode {
        node_name: name.into(),
        address: format!("127.0.0.1:{}", 7000 + name.len()),
        resources: Resources::from(&cpus(cpu)),
        labels: vec![],
        gpus: vec![],
        is_head: false,
        pid: 1,
    }
}

pub(super) struct Sim {
    pub(super) core: HeadCore,
    pub(super) now: Clock,
    /// What each node has free, as its raylet would report.
    pub(super) free: HashMap<NodeId, ResourceSet>,
    /// Nodes whose raylets refuse every prepare.
    pub(super) refusing: Vec<NodeId>,
    /// Effects seen, in order.
    pub(super) seen: Vec<Effect>,
}

impl Sim {
    pub(super) fn new() -> Sim {
        Sim {
            core: HeadCore::new(ClusterId::random(), "127.0.0.1:6379".into(), detector()),
            now: Clock::now(),
            free: HashMap::new(),
            refusing: Vec::new(),
            seen: Vec::new(),
        }
    }

    pub(super) fn node(&mut self, name: &str, cpu: u32) -> NodeId {
        let id = NodeId::random();
        let r = self
            .core
            .register(self.now, id, reg(name, cpu), Caller::Node { cert: [7; 32] });
        assert!(matches!(r, HeadResponse::Registered { .. }));
        self.free.insert(id, cpus(cpu));
        self.run();
        id
    }

    /// Answers every effect as live raylets would; returns the effects seen.
    pub(super) fn run(&mut self) -> Vec<Effect> {
        let mut out = Vec::new();
        while let Some(e) = self.core.poll_effect() {
            out.push(e.clone());
            if let Effect::Bundles {
                pass, node, ops, ..
            } = e
            {
                let replies = ops.iter().map(|op| self.raylet(node, op)).collect();
                self.core.bundles_done(self.now, pass, node, Ok(replies));
            }
        }
        self.seen.extend(out.clone());
        out
    }

    /// A raylet's bundle ledger, reduced to what the core can observe.
    pub(super) fn raylet(&mut self, node: NodeId, op: &BundleOp) -> BundleReply {
        let free = self.free.get_mut(&node).expect("known node");
        match op {
            BundleOp::Prepare { .. } if self.refusing.contains(&node) => BundleReply::Refused {
                reason: "not enough CPU".into(),
            },
            BundleOp::Prepare { bundles, .. } => {
                for b in bundles {
                    free.subtract(&b.resources.to_set());
                }
                BundleReply::Done {
                    available: Resources::from(&*free),
                }
            }
            _ => BundleReply::Done {
                available: Resources::from(&*free),
            },
        }
    }

    /// Time passes by `d` while `alive` nodes heartbeat every interval.
    pub(super) fn pass_time(&mut self, d: Duration, alive: &[NodeId]) {
        let step = detector().interval;
        let end = self.now.after(d);
        while self.now.at < end.at {
            self.now = self.now.after(step);
            for n in alive {
                let beat = HeadRequest::Heartbeat {
                    node_id: *n,
                    available: Resources::from(&self.free[n]),
                    leased: Resources::default(),
                    demand: vec![],
                };
                let _ = self
                    .core
                    .handle(self.now, Caller::Node { cert: [7; 32] }, beat);
            }
            self.core.tick(self.now);
            self.run();
        }
    }

    pub(super) fn pg(&mut self, bundles: u32, strategy: PgStrategyWire) -> PlacementGroupId {
        let pg = PlacementGroupId::random();
        let create = PgCreate {
            pg,
            name: String::new(),
            strategy,
            bundles: vec![Resources::from(&cpus(1)); bundles as usize],
            job: JobId::random(),
            detached: false,
        };
        let _ = self
            .core
            .handle(self.now, Caller::Client, pg_req(PgRequest::Create(create)));
        self.run();
        pg
    }

    pub(super) fn group(&mut self, pg: PlacementGroupId) -> PgInfo {
        match self
            .core
            .handle(self.now, Caller::Client, pg_req(PgRequest::Get { pg }))
        {
            Reply::Now(HeadResponse::PlacementGroup(Some(g))) => g,
            other => panic!("{other:?}"),
        }
    }
}

pub(super) fn pg_req(r: PgRequest) -> HeadRequest {
    HeadRequest::PlacementGroup(r)
}

/// A new one-CPU PACK group of `job`.
pub(super) fn one_cpu_group(job: JobId) -> PgCreate {
    PgCreate {
        pg: PlacementGroupId::random(),
        name: String::new(),
        strategy: PgStrategyWire::Pack,
        bundles: vec![Resources::from(&cpus(1))],
        job,
        detached: false,
    }
}

/// A pending actor `C` of `job` in `namespace`, as its raylet registers it.
pub(super) fn actor_info(actor: ActorId, job: JobId, namespace: &str) -> ActorInfo {
    ActorInfo {
        actor_id: actor,
        class: "C".into(),
        name: Some("kept".into()),
        namespace: namespace.into(),
        state: ActorState::Pending,
        node_id: None,
        node_address: String::new(),
        restarts: 0,
        death_reason: None,
        detached: false,
        job_id: job,
        max_task_retries: 0,
        residency: None,
    }
}

pub(super) fn actor_on(sim: &mut Sim, node: NodeId, max_restarts: u32) -> ActorId {
    let actor = ActorId::random();
    let job = JobId::random();
    let info = actor_info(actor, job, "default");
    let create = ActorCreate {
        actor_id: actor,
        name: Some("kept".into()),
        namespace: "default".into(),
        detached: false,
        max_restarts,
        max_task_retries: 0,
        max_concurrency: 1,
        restarts: 0,
    };
    let mut task = TaskSpec::new(
        crate::ids::TaskId(actor.0),
        job,
        "C",
        "C::new",
        TaskKind::CreateActor(create),
    );
    task.resources = Resources::from(&cpus(1));
    let submit = PeerSubmit {
        job: JobSpec {
            job_id: job,
            binary: String::new(),
            binary_hash: [0; 32],
            binary_len: 0,
            cwd: String::new(),
            env: vec![],
            driver_node: None,
        },
        task,
    };
    let req = HeadRequest::RegisterActor(info, Some(Box::new(submit)));
    assert_eq!(
        sim.core
            .handle(sim.now, Caller::Node { cert: [7; 32] }, req),
        Reply::Now(HeadResponse::Ok)
    );
    let alive = HeadRequest::UpdateActor {
        actor_id: actor,
        state: ActorState::Alive,
        node: Some((node, "addr".into())),
        restarts: 0,
        reason: None,
    };
    let _ = sim
        .core
        .handle(sim.now, Caller::Node { cert: [7; 32] }, alive);
    actor
}

pub(super) fn actor(sim: &mut Sim, id: ActorId) -> ActorInfo {
    match sim.core.handle(
        sim.now,
        Caller::Client,
        HeadRequest::GetActor { actor_id: id },
    ) {
        Reply::Now(HeadResponse::Actor(Some(a))) => a,
        other => panic!("{other:?}"),
    }
}

/// A core recovered from `rows` at `now` (no grace for live nodes).
pub(super) fn recovered(now: Clock, rows: Vec<crate::head::durable::Row>) -> HeadCore {
    HeadCore::restore(
        ClusterId::random(),
        "127.0.0.1:6379".into(),
        detector(),
        Duration::ZERO,
        now,
        crate::head::durable::Snapshot::from_rows(rows),
    )
}
