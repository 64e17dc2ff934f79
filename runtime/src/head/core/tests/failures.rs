//! A node's death and what follows: actor restarts, bundles placed
//! again, the directory pruned, late reports ignored (HC-1).

use super::restarts::failure;
use super::*;

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
        object: prism_objectstore::ObjectId([7; 16]),
        size: 10,
    };
    let _ = sim
        .core
        .handle(sim.now, Caller::Node { cert: [7; 32] }, loc);
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
    // The directory forgot the victim's copy (OD-1) and says it is lost (OD-2).
    let r = sim.core.handle(
        sim.now,
        Caller::Node { cert: [7; 32] },
        HeadRequest::GetObjectLocations {
            object: prism_objectstore::ObjectId([7; 16]),
        },
    );
    match r {
        Reply::Now(HeadResponse::ObjectLocations {
            size: 0,
            nodes,
            lost,
        }) => {
            assert!(nodes.is_empty());
            let why = lost.expect("known as lost");
            assert!(why.contains(&victim.to_string()), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // HC-1: a late report from the dead node pulls nothing back.
    let late = HeadRequest::UpdateActor {
        actor_id: kept,
        state: ActorState::Alive,
        node: Some((victim, "addr".into())),
        restarts: 0,
        reason: None,
    };
    let _ = sim
        .core
        .handle(sim.now, Caller::Node { cert: [7; 32] }, late);
    assert_eq!(actor(&mut sim, kept).state, ActorState::Restarting);
    // HC-1: nor does the death of its earlier incarnation, fenced by the
    // victim when it came back, reported under the id it was declared
    // dead with (DA-4).
    let fenced = HeadRequest::UpdateActor {
        actor_id: kept,
        state: ActorState::Dead,
        node: Some((victim, "addr".into())),
        restarts: 0,
        reason: Some("its node was declared dead by the head".into()),
    };
    let _ = sim
        .core
        .handle(sim.now, Caller::Node { cert: [7; 32] }, fenced);
    assert_eq!(actor(&mut sim, kept).state, ActorState::Restarting);
    // Its current incarnation's report is taken.
    let up = HeadRequest::UpdateActor {
        actor_id: kept,
        state: ActorState::Alive,
        node: Some((target, "addr".into())),
        restarts: 1,
        reason: None,
    };
    let _ = sim.core.handle(sim.now, Caller::Node { cert: [7; 32] }, up);
    assert_eq!(actor(&mut sim, kept).state, ActorState::Alive);
    let add = HeadRequest::AddObjectLocation {
        node_id: victim,
        object: prism_objectstore::ObjectId([8; 16]),
        size: 1,
    };
    assert!(matches!(
        sim.core
            .handle(sim.now, Caller::Node { cert: [7; 32] }, add),
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
    // A stale failure (of another restart number) changes nothing.
    sim.core.restart_failed(
        sim.now,
        failure(
            kept,
            7,
            b,
            "its restart on node b failed: stale",
            RestartAnswer::Failed,
        ),
    );
    assert_eq!(actor(&mut sim, kept).state, ActorState::Restarting);
    sim.core.restart_failed(
        sim.now,
        failure(
            kept,
            1,
            b,
            "its restart on node b failed: its constructor panicked",
            RestartAnswer::Failed,
        ),
    );
    let info = actor(&mut sim, kept);
    assert_eq!(info.state, ActorState::Dead);
    let why = info.death_reason.unwrap();
    assert!(
        why.contains(&a.to_string()) && why.contains("constructor panicked"),
        "{why}"
    );
}

#[test]
fn node_only_requests_need_a_node_certificate() {
    let mut sim = Sim::new();
    let beat = HeadRequest::Heartbeat {
        node_id: NodeId::random(),
        available: Resources::default(),
        leased: Resources::default(),
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

#[test]
fn hc_3_a_node_id_speaks_only_through_the_certificate_that_registered_it() {
    let mut sim = Sim::new();
    let a = sim.node("a", 2);
    let other = Caller::Node { cert: [8; 32] };
    let beat = |node| HeadRequest::Heartbeat {
        node_id: node,
        available: Resources::default(),
        leased: Resources::default(),
        demand: vec![],
    };
    match sim.core.handle(sim.now, other, beat(a)) {
        Reply::Now(HeadResponse::Error { kind, message }) => {
            assert_eq!(kind, ErrorKind::Unauthorized);
            assert!(message.contains("another certificate"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let bye = HeadRequest::Unregister { node_id: a };
    assert!(matches!(
        sim.core.handle(sim.now, other, bye),
        Reply::Now(HeadResponse::Error { .. })
    ));
    // The real node is unaffected.
    let real = Caller::Node { cert: [7; 32] };
    assert_eq!(
        sim.core.handle(sim.now, real, beat(a)),
        Reply::Now(HeadResponse::HeartbeatAck)
    );
    let st = sim.core.status(sim.now);
    assert_eq!(st.nodes[0].state, NodeState::Alive);
}

#[test]
fn dh_2_a_recovered_core_holds_what_was_committed() {
    use crate::head::durable::{Change, Snapshot};
    let mut sim = Sim::new();
    let a = sim.node("a", 2);
    let b = sim.node("b", 2);
    let pg = sim.pg(2, PgStrategyWire::StrictSpread);
    let kept = actor_on(&mut sim, a, 1);
    let loc = HeadRequest::AddObjectLocation {
        node_id: b,
        object: prism_objectstore::ObjectId([5; 16]),
        size: 3,
    };
    let _ = sim
        .core
        .handle(sim.now, Caller::Node { cert: [7; 32] }, loc);
    // What a store would hold: every change, last write wins.
    let mut rows = std::collections::BTreeMap::new();
    for c in sim.core.take_changes() {
        match c {
            Change::Put(r) => {
                rows.insert(r.key(), r);
            }
            Change::Delete(t, k) => {
                rows.remove(&(t, k));
            }
            Change::RunPoints(..) | Change::Audit(_) => {}
        }
    }
    let snapshot = Snapshot::from_rows(rows.into_values());
    let later = sim.now.after(Duration::from_secs(60));
    let mut core = HeadCore::restore(
        ClusterId::random(),
        "127.0.0.1:6379".into(),
        detector(),
        Duration::ZERO,
        later,
        snapshot,
    );
    // Same node ids, alive (NT-4); the actor found by name; the group created.
    let st = core.status(later);
    let mut ids: Vec<NodeId> = st.nodes.iter().map(|n| n.node_id).collect();
    ids.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(ids, want);
    assert!(st.nodes.iter().all(|n| n.state == NodeState::Alive));
    let named = HeadRequest::GetNamedActor {
        namespace: "default".into(),
        name: "kept".into(),
    };
    match core.handle(later, Caller::Client, named) {
        Reply::Now(HeadResponse::Actor(Some(info))) => assert_eq!(info.actor_id, kept),
        other => panic!("{other:?}"),
    }
    match core.handle(later, Caller::Client, pg_req(PgRequest::Get { pg })) {
        Reply::Now(HeadResponse::PlacementGroup(Some(g))) => {
            assert_eq!(g.state, PgState::Created);
            assert!(g.nodes.iter().all(Option::is_some));
        }
        other => panic!("{other:?}"),
    }
    let where_ = HeadRequest::GetObjectLocations {
        object: prism_objectstore::ObjectId([5; 16]),
    };
    assert!(matches!(
        core.handle(later, Caller::Client, where_),
        Reply::Now(HeadResponse::ObjectLocations { size: 3, .. })
    ));
    // A node that does not come back within the dead timeout is declared dead.
    let beat = HeadRequest::Heartbeat {
        node_id: a,
        available: Resources::default(),
        leased: Resources::default(),
        demand: vec![],
    };
    for i in 1..=15 {
        let t = later.after(Duration::from_millis(100 * i));
        let _ = core.handle(t, Caller::Node { cert: [7; 32] }, beat.clone());
        core.tick(t);
    }
    let st = core.status(later.after(Duration::from_millis(1_500)));
    let state = |n: NodeId| st.nodes.iter().find(|s| s.node_id == n).unwrap().state;
    assert_eq!(state(a), NodeState::Alive);
    assert_eq!(state(b), NodeState::Dead);
}

#[test]
fn dh_2_an_unfinished_reservation_is_given_back_everywhere_after_recovery() {
    let mut sim = Sim::new();
    let a = sim.node("a", 1);
    let b = sim.node("b", 1);
    // A group whose prepares went out but whose replies the head never saw.
    let create = PgCreate {
        pg: PlacementGroupId::random(),
        name: String::new(),
        strategy: PgStrategyWire::StrictSpread,
        bundles: vec![Resources::from(&cpus(1)); 2],
        job: JobId::random(),
        detached: false,
    };
    let pg = create.pg;
    let _ = sim
        .core
        .handle(sim.now, Caller::Client, pg_req(PgRequest::Create(create)));
    let _lost: Vec<Effect> = std::iter::from_fn(|| sim.core.poll_effect()).collect();
    let rows = put_rows(sim.core.take_changes());
    let mut core = recovered(sim.now, rows);
    core.tick(sim.now);
    let first: Vec<Effect> = std::iter::from_fn(|| core.poll_effect()).collect();
    let returned: Vec<NodeId> = first
        .iter()
        .filter_map(|e| match e {
            Effect::Bundles { node, ops, .. }
                if ops.iter().any(|o| matches!(o, BundleOp::Return { pg: p, only, .. } if *p == pg && only.is_empty())) =>
            {
                Some(*node)
            }
            _ => None,
        })
        .collect();
    assert!(returned.contains(&a) && returned.contains(&b), "{first:?}");
}

/// DH-2 for the registry and runs: what a client's requests change is in
/// the next batch of changes, and a core restored from them has it.
#[test]
fn runs_and_models_are_durable_changes_and_come_back() {
    use crate::head::durable::Snapshot;
    use crate::proto::models::ModelRequest;
    use crate::proto::runs::RunReport;
    let mut sim = Sim::new();
    let mut report = RunReport::points("run-1", "mlp", crate::JobId::random(), vec![]);
    report.params = vec![("lr".into(), "0.1".into())];
    let _ = sim
        .core
        .handle(sim.now, Caller::Client, HeadRequest::ReportRun(report));
    let reg = ModelRequest::Register {
        name: "digits".into(),
        run_id: "run-1".into(),
        checkpoint: "/w".into(),
        card: String::new(),
        who: "alice".into(),
    };
    let r = sim
        .core
        .handle(sim.now, Caller::Client, HeadRequest::Models(reg));
    assert!(matches!(r, Reply::Now(HeadResponse::Models(_))), "{r:?}");
    let rows = put_rows(sim.core.take_changes());
    let snapshot = Snapshot::from_rows(rows);
    assert_eq!(
        (snapshot.runs.len(), snapshot.models.len()),
        (1, 1),
        "{snapshot:?}"
    );
    let mut core = HeadCore::restore(
        ClusterId::random(),
        "127.0.0.1:6379".into(),
        detector(),
        Duration::from_secs(10),
        sim.now,
        snapshot,
    );
    let r = core.handle(
        sim.now,
        Caller::Client,
        HeadRequest::Models(ModelRequest::Show {
            namespace: String::new(),
            name: "digits".into(),
        }),
    );
    assert!(
        matches!(&r, Reply::Now(HeadResponse::Models(m)) if m[0].versions[0].run_id == "run-1"),
        "{r:?}"
    );
    // MR-5: the recovered model is written again under its (namespace,
    // name) key, and the key a registry with global names used is deleted.
    let changes = core.take_changes();
    let legacy = crate::head::durable::legacy_model_key("digits");
    assert!(changes.iter().any(|c| matches!(c,
        crate::head::durable::Change::Delete(crate::head::durable::Table::Model, k) if *k == legacy)));
    let rows = put_rows(changes);
    assert!(
        rows.iter().any(|r| r.key()
            == (
                crate::head::durable::Table::Model,
                crate::head::durable::model_key("default", "digits")
            )),
        "{rows:?}"
    );
}

/// The rows a batch of changes puts (deletions and appended points aside).
pub(super) fn put_rows(
    changes: Vec<crate::head::durable::Change>,
) -> Vec<crate::head::durable::Row> {
    use crate::head::durable::Change;
    changes
        .into_iter()
        .filter_map(|c| match c {
            Change::Put(r) => Some(r),
            Change::Delete(..) | Change::RunPoints(..) | Change::Audit(_) => None,
        })
        .collect()
}
