//! The head core without sockets: consequences that used to be testable
//! only piece by piece through processes, driven here with a virtual clock
//! and raylets simulated by answering the core's effects.

use super::*;
use crate::ids::{JobId, PlacementGroupId};
use crate::proto::common::Resources;
use crate::proto::head::{ActorInfo, ActorState};
use crate::proto::placement::{BundleReply, PgCreate, PgInfo, PgRequest, PgState, PgStrategyWire};
use crate::proto::task::{ActorCreate, JobSpec, TaskKind, TaskSpec};
use prism_scheduler::{Quantity, ResourceSet, CPU};

fn detector() -> FailureDetector {
    FailureDetector {
        interval: Duration::from_millis(100),
        suspect_after: 3,
        dead_after: 10,
    }
}

fn cpus(n: u32) -> ResourceSet {
    ResourceSet::new().with(CPU, Quantity::whole(n))
}

fn reg(name: &str, cpu: u32) -> RegisterNode {
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

struct Sim {
    core: HeadCore,
    now: Clock,
    /// What each node has free, as its raylet would report.
    free: HashMap<NodeId, ResourceSet>,
    /// Nodes whose raylets refuse every prepare.
    refusing: Vec<NodeId>,
    /// Effects seen, in order.
    seen: Vec<Effect>,
}

impl Sim {
    fn new() -> Sim {
        Sim {
            core: HeadCore::new(ClusterId::random(), "127.0.0.1:6379".into(), detector()),
            now: Clock::now(),
            free: HashMap::new(),
            refusing: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn node(&mut self, name: &str, cpu: u32) -> NodeId {
        let id = NodeId::random();
        let r = self.core.register(self.now, id, reg(name, cpu));
        assert!(matches!(r, HeadResponse::Registered { .. }));
        self.free.insert(id, cpus(cpu));
        self.run();
        id
    }

    /// Answers every effect as live raylets would; returns the effects seen.
    fn run(&mut self) -> Vec<Effect> {
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
    fn raylet(&mut self, node: NodeId, op: &BundleOp) -> BundleReply {
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
    fn pass_time(&mut self, d: Duration, alive: &[NodeId]) {
        let step = detector().interval;
        let end = self.now.after(d);
        while self.now.at < end.at {
            self.now = self.now.after(step);
            for n in alive {
                let beat = HeadRequest::Heartbeat {
                    node_id: *n,
                    available: Resources::from(&self.free[n]),
                    demand: vec![],
                };
                let _ = self.core.handle(self.now, Caller::Node, beat);
            }
            self.core.tick(self.now);
            self.run();
        }
    }

    fn pg(&mut self, bundles: u32, strategy: PgStrategyWire) -> PlacementGroupId {
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

    fn group(&mut self, pg: PlacementGroupId) -> PgInfo {
        match self
            .core
            .handle(self.now, Caller::Client, pg_req(PgRequest::Get { pg }))
        {
            Reply::Now(HeadResponse::PlacementGroup(Some(g))) => g,
            other => panic!("{other:?}"),
        }
    }
}

fn pg_req(r: PgRequest) -> HeadRequest {
    HeadRequest::PlacementGroup(r)
}

fn actor_on(sim: &mut Sim, node: NodeId, max_restarts: u32) -> ActorId {
    let actor = ActorId::random();
    let job = JobId::random();
    let info = ActorInfo {
        actor_id: actor,
        class: "C".into(),
        name: Some("kept".into()),
        namespace: "default".into(),
        state: ActorState::Pending,
        node_id: None,
        node_address: String::new(),
        restarts: 0,
        death_reason: None,
        detached: false,
        job_id: job,
        max_task_retries: 0,
    };
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
    let mut task = TaskSpec::new(actor.0, job, "C", "C::new", TaskKind::CreateActor(create));
    task.resources = Resources::from(&cpus(1));
    let submit = PeerSubmit {
        job: JobSpec {
            job_id: job,
            binary: String::new(),
            binary_hash: [0; 32],
            binary_len: 0,
            cwd: String::new(),
            env: vec![],
        },
        task,
    };
    let req = HeadRequest::RegisterActor(info, Some(Box::new(submit)));
    assert_eq!(
        sim.core.handle(sim.now, Caller::Node, req),
        Reply::Now(HeadResponse::Ok)
    );
    let alive = HeadRequest::UpdateActor {
        actor_id: actor,
        state: ActorState::Alive,
        node: Some((node, "addr".into())),
        restarts: 0,
        reason: None,
    };
    let _ = sim.core.handle(sim.now, Caller::Node, alive);
    actor
}

fn actor(sim: &mut Sim, id: ActorId) -> ActorInfo {
    match sim.core.handle(
        sim.now,
        Caller::Client,
        HeadRequest::GetActor { actor_id: id },
    ) {
        Reply::Now(HeadResponse::Actor(Some(a))) => a,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_dead_node_restarts_its_actors_elsewhere_and_its_bundles_are_placed_again() {
    let mut sim = Sim::new();
    let a = sim.node("a", 2);
    let b = sim.node("b", 2);
    let c = sim.node("c", 2);
    let pg = sim.pg(2, PgStrategyWire::StrictSpread);
    let g = sim.group(pg);
    assert_eq!(g.state, PgState::Created, "{g:?}");
    let holders: Vec<NodeId> = g.nodes.iter().flatten().copied().collect();
    assert_eq!(holders.len(), 2);
    assert_ne!(holders[0], holders[1], "STRICT_SPREAD");
    // The victim holds a bundle and the actor; its object goes with it.
    let victim = holders[0];
    let survivors: Vec<NodeId> = [a, b, c].into_iter().filter(|n| *n != victim).collect();
    let kept = actor_on(&mut sim, victim, 1);
    let loc = HeadRequest::AddObjectLocation {
        node_id: victim,
        object: [7; 16],
        size: 10,
    };
    let _ = sim.core.handle(sim.now, Caller::Node, loc);
    sim.seen.clear();

    // The victim stops heartbeating: dead after 10 intervals.
    sim.pass_time(Duration::from_millis(1_500), &survivors);

    let st = sim.core.status(sim.now);
    let dead = st.nodes.iter().find(|n| n.node_id == victim).unwrap();
    assert_eq!(dead.state, NodeState::Dead);
    // Its actor restarts on a survivor, with its next restart count.
    let restart = sim.seen.iter().find_map(|e| match e {
        Effect::RestartActor {
            actor,
            node,
            create,
            ..
        } if *actor == kept => Some((*node, create.clone())),
        _ => None,
    });
    let (target, create) = restart.expect("a restart was asked for");
    assert!(survivors.contains(&target), "restarted on a live node");
    assert!(matches!(&create.task.kind, TaskKind::CreateActor(c) if c.restarts == 1));
    let info = actor(&mut sim, kept);
    assert_eq!(info.state, ActorState::Restarting);
    assert!(info.death_reason.unwrap().contains(&victim.to_string()));
    // Its bundle went to the one node not holding the other (STRICT_SPREAD).
    let g = sim.group(pg);
    assert_eq!(g.state, PgState::Created, "{g:?}");
    assert_eq!(g.reschedules, 1);
    let now_on: Vec<NodeId> = g.nodes.iter().flatten().copied().collect();
    assert!(!now_on.contains(&victim));
    assert_ne!(now_on[0], now_on[1]);
    // The directory forgot the victim's copy (OD-1).
    let r = sim.core.handle(
        sim.now,
        Caller::Node,
        HeadRequest::GetObjectLocations { object: [7; 16] },
    );
    assert_eq!(
        r,
        Reply::Now(HeadResponse::ObjectLocations {
            size: 0,
            nodes: vec![]
        })
    );
    // HC-1: a late report from the dead node pulls nothing back.
    let late = HeadRequest::UpdateActor {
        actor_id: kept,
        state: ActorState::Alive,
        node: Some((victim, "addr".into())),
        restarts: 0,
        reason: None,
    };
    let _ = sim.core.handle(sim.now, Caller::Node, late);
    assert_eq!(actor(&mut sim, kept).state, ActorState::Restarting);
    let add = HeadRequest::AddObjectLocation {
        node_id: victim,
        object: [8; 16],
        size: 1,
    };
    assert!(matches!(
        sim.core.handle(sim.now, Caller::Node, add),
        Reply::Now(HeadResponse::Error { .. })
    ));
}

#[test]
fn a_restart_that_cannot_start_leaves_the_actor_dead_with_both_causes() {
    let mut sim = Sim::new();
    let a = sim.node("a", 2);
    let b = sim.node("b", 2);
    let kept = actor_on(&mut sim, a, 3);
    sim.pass_time(Duration::from_millis(1_500), &[b]);
    assert!(sim.seen.iter().any(
        |e| matches!(e, Effect::RestartActor { actor, node, .. } if *actor == kept && *node == b)
    ));
    sim.core
        .restart_failed(kept, "its restart on node b failed: connection refused");
    let info = actor(&mut sim, kept);
    assert_eq!(info.state, ActorState::Dead);
    let why = info.death_reason.unwrap();
    assert!(
        why.contains(&a.to_string()) && why.contains("connection refused"),
        "{why}"
    );
}

#[test]
fn a_refused_prepare_gives_back_only_what_was_prepared_and_waits() {
    let mut sim = Sim::new();
    let a = sim.node("a", 1);
    let b = sim.node("b", 1);
    sim.refusing.push(b);
    let pg = sim.pg(2, PgStrategyWire::StrictSpread);
    let g = sim.group(pg);
    assert_eq!(g.state, PgState::Pending);
    assert!(g.reason.unwrap().contains("refused"));
    // One prepare each, no commit, and a's bundle given back.
    let prepares = sim
        .seen
        .iter()
        .filter(|e| matches!(e, Effect::Bundles { ops, .. } if matches!(ops[0], BundleOp::Prepare { .. })))
        .count();
    assert_eq!(prepares, 2);
    assert!(!sim.seen.iter().any(
        |e| matches!(e, Effect::Bundles { ops, .. } if matches!(ops[0], BundleOp::Commit { .. }))
    ));
    let undo: Vec<&Effect> = sim
        .seen
        .iter()
        .filter(|e| matches!(e, Effect::Bundles { ops, .. } if matches!(&ops[0], BundleOp::Return { only, .. } if !only.is_empty())))
        .collect();
    assert_eq!(undo.len(), 1);
    assert!(matches!(undo[0], Effect::Bundles { node, .. } if *node == a));
    // Once b takes it, a retry places it.
    sim.refusing.clear();
    sim.free.insert(a, cpus(1));
    sim.pass_time(Duration::from_millis(600), &[a, b]);
    assert_eq!(sim.group(pg).state, PgState::Created);
}

#[test]
fn one_pass_at_a_time_and_a_removal_during_it_is_given_back() {
    let mut sim = Sim::new();
    let a = sim.node("a", 2);
    let b = sim.node("b", 2);
    // Create without answering the raylets yet.
    let pg = PlacementGroupId::random();
    let create = PgCreate {
        pg,
        name: String::new(),
        strategy: PgStrategyWire::StrictSpread,
        bundles: vec![Resources::from(&cpus(1)); 2],
        job: JobId::random(),
        detached: false,
    };
    let _ = sim
        .core
        .handle(sim.now, Caller::Client, pg_req(PgRequest::Create(create)));
    let prepares: Vec<Effect> = std::iter::from_fn(|| sim.core.poll_effect()).collect();
    assert_eq!(prepares.len(), 2, "{prepares:?}");
    // HC-2: a second group waits for this pass to end.
    let other = PgCreate {
        pg: PlacementGroupId::random(),
        name: String::new(),
        strategy: PgStrategyWire::Pack,
        bundles: vec![Resources::from(&cpus(1))],
        job: JobId::random(),
        detached: false,
    };
    let _ = sim
        .core
        .handle(sim.now, Caller::Client, pg_req(PgRequest::Create(other)));
    assert!(
        sim.core.poll_effect().is_none(),
        "no second pass while one runs"
    );
    // Removed while its prepares are out.
    let _ = sim
        .core
        .handle(sim.now, Caller::Client, pg_req(PgRequest::Remove { pg }));
    for e in prepares {
        if let Effect::Bundles {
            pass, node, ops, ..
        } = e
        {
            let r = ops.iter().map(|op| sim.raylet(node, op)).collect();
            sim.core.bundles_done(sim.now, pass, node, Ok(r));
        }
    }
    let after = sim.run();
    let returned: Vec<NodeId> = after
        .iter()
        .filter_map(|e| match e {
            Effect::Bundles { node, ops, .. }
                if ops
                    .iter()
                    .any(|o| matches!(o, BundleOp::Return { pg: p, .. } if *p == pg)) =>
            {
                Some(*node)
            }
            _ => None,
        })
        .collect();
    assert!(returned.contains(&a) && returned.contains(&b), "{after:?}");
    assert_eq!(sim.group(pg).state, PgState::Removed);
}

#[test]
fn a_wait_is_answered_when_the_group_settles_or_at_its_deadline() {
    let mut sim = Sim::new();
    let a = sim.node("a", 1);
    // Three bundles of 1 CPU on one 1-CPU node: it waits for resources.
    let pg = sim.pg(1, PgStrategyWire::Pack);
    let busy = sim.pg(1, PgStrategyWire::Pack);
    assert_eq!(sim.group(pg).state, PgState::Created);
    let wait = HeadRequest::PlacementGroup(PgRequest::Wait {
        pg: busy,
        timeout_ms: 800,
    });
    let Reply::Later(w) = sim.core.handle(sim.now, Caller::Client, wait) else {
        panic!("a pending group's wait is answered later");
    };
    sim.pass_time(Duration::from_millis(700), &[a]);
    assert!(!sim
        .seen
        .iter()
        .any(|e| matches!(e, Effect::Answer { waiter, .. } if *waiter == w)));
    sim.pass_time(Duration::from_millis(200), &[a]);
    let answer = sim.seen.iter().find_map(|e| match e {
        Effect::Answer { waiter, response } if *waiter == w => Some(response.clone()),
        _ => None,
    });
    match answer {
        Some(HeadResponse::PlacementGroupWaited { group: Some(g), .. }) => {
            assert_eq!(g.state, PgState::Pending);
            assert!(g.reason.unwrap().contains("waiting for resources"));
        }
        other => panic!("{other:?}"),
    }
    // Removing the first lets the second in; a new wait answers at once.
    let _ = sim
        .core
        .handle(sim.now, Caller::Client, pg_req(PgRequest::Remove { pg }));
    sim.run();
    sim.free.insert(a, cpus(1));
    sim.pass_time(Duration::from_millis(600), &[a]);
    let wait = HeadRequest::PlacementGroup(PgRequest::Wait {
        pg: busy,
        timeout_ms: 800,
    });
    assert!(matches!(
        sim.core.handle(sim.now, Caller::Client, wait),
        Reply::Now(HeadResponse::PlacementGroupWaited { group: Some(g), .. }) if g.state == PgState::Created
    ));
}

#[test]
fn a_job_that_ends_takes_its_groups_and_a_stop_signals_its_driver() {
    let mut sim = Sim::new();
    let _a = sim.node("a", 2);
    let job = JobId::random();
    let create = PgCreate {
        pg: PlacementGroupId::random(),
        name: String::new(),
        strategy: PgStrategyWire::Pack,
        bundles: vec![Resources::from(&cpus(1))],
        job,
        detached: false,
    };
    let pg = create.pg;
    let _ = sim
        .core
        .handle(sim.now, Caller::Client, pg_req(PgRequest::Create(create)));
    sim.run();
    let driver = HeadRequest::RegisterDriver {
        job_id: job,
        entrypoint: "./job".into(),
        pid: 42,
    };
    let _ = sim.core.handle(sim.now, Caller::Client, driver);
    sim.core.driver_gone(sim.now, job);
    sim.run();
    assert_eq!(sim.group(pg).state, PgState::Removed);
    assert!(sim.core.status(sim.now).ended_jobs.contains(&job));

    let sub = JobSubmission {
        hash: [1; 32],
        name: "job".into(),
        args: vec![],
        env: vec![],
    };
    let id = JobId::random();
    assert_eq!(
        sim.core.submit_job(sim.now, id, sub),
        HeadResponse::JobSubmitted { job_id: id }
    );
    assert!(matches!(sim.core.poll_effect(), Some(Effect::StartJob { job, .. }) if job == id));
    sim.core.job_started(id, 77);
    let stop = HeadRequest::StopJob { job_id: id };
    assert_eq!(
        sim.core.handle(sim.now, Caller::Client, stop),
        Reply::Now(HeadResponse::Ok)
    );
    assert!(matches!(
        sim.core.poll_effect(),
        Some(Effect::SignalJob { pid: 77, .. })
    ));
}

#[test]
fn node_only_requests_need_a_node_certificate() {
    let mut sim = Sim::new();
    let beat = HeadRequest::Heartbeat {
        node_id: NodeId::random(),
        available: Resources::default(),
        demand: vec![],
    };
    match sim.core.handle(sim.now, Caller::Client, beat) {
        Reply::Now(HeadResponse::Error { kind, message }) => {
            assert_eq!(kind, ErrorKind::Unauthorized);
            assert!(
                message.contains("Heartbeat needs a node certificate"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}
