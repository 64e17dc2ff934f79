//! A node's death and what follows: actor restarts, bundles placed
//! again, the directory pruned, late reports ignored (HC-1).

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
        HeadRequest::GetObjectLocations {
            object: prism_objectstore::ObjectId([7; 16]),
        },
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
        object: prism_objectstore::ObjectId([8; 16]),
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
