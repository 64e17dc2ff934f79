//! The node table's invariants NT-1..NT-5 and NT-7, time passed in.

use super::*;
use crate::proto::common::Resources;
use prism_scheduler::{Quantity, CPU};

pub(super) fn reg(name: &str) -> RegisterNode {
    RegisterNode {
        node_name: name.into(),
        address: "127.0.0.1:1".into(),
        resources: Resources::from(&ResourceSet::new().with(CPU, Quantity::whole(2))),
        labels: vec![],
        gpus: vec![],
        is_head: false,
        pid: 1,
    }
}

pub(super) fn table() -> NodeTable {
    NodeTable::new(FailureDetector {
        interval: Duration::from_millis(100),
        suspect_after: 3,
        dead_after: 10,
    })
}

fn drain(t: &mut NodeTable) -> Vec<NodeEvent> {
    std::iter::from_fn(|| t.poll_event()).collect()
}

#[test]
fn nt_2_slow_is_suspect_then_recovers_silent_is_dead() {
    let t0 = Instant::now();
    let mut t = table();
    let a = NodeId::random();
    t.handle_register(t0, a, reg("a"));
    t.tick(t0 + Duration::from_millis(250));
    assert_eq!(t.node(a).unwrap().state, NodeState::Alive);
    t.tick(t0 + Duration::from_millis(300));
    assert_eq!(t.node(a).unwrap().state, NodeState::Suspect);
    let free = ResourceSet::new().with(CPU, Quantity::ONE);
    assert_eq!(
        t.handle_heartbeat(t0 + Duration::from_millis(400), a, free.clone()),
        HeartbeatOutcome::Ack
    );
    assert_eq!(t.node(a).unwrap().state, NodeState::Alive);
    assert_eq!(t.node(a).unwrap().available, free);
    // The head ticks on meanwhile (a long gap would be its own stall,
    // NT-7).
    for ms in (500..1399).step_by(100) {
        t.tick(t0 + Duration::from_millis(ms));
    }
    t.tick(t0 + Duration::from_millis(1399));
    assert_ne!(t.node(a).unwrap().state, NodeState::Dead);
    t.tick(t0 + Duration::from_millis(1400));
    assert_eq!(t.node(a).unwrap().state, NodeState::Dead);
    let ev = drain(&mut t);
    assert!(matches!(
        ev[0],
        NodeEvent::Registered { incarnation: 1, .. }
    ));
    assert_eq!(ev[1], NodeEvent::Suspected(a));
    assert_eq!(ev[2], NodeEvent::Recovered(a));
    assert!(
        matches!(&ev[4], NodeEvent::Died { id, reason } if *id == a && reason.contains("no heartbeat"))
    );
}

#[test]
fn nt_1_dead_node_must_reregister_as_new_incarnation() {
    let t0 = Instant::now();
    let mut t = table();
    let a = NodeId::random();
    t.handle_register(t0, a, reg("a"));
    t.tick(t0 + Duration::from_secs(5));
    let late = t.handle_heartbeat(t0 + Duration::from_secs(6), a, ResourceSet::new());
    assert!(matches!(late, HeartbeatOutcome::ReRegister(ref why) if why.contains("declared dead")));
    assert_eq!(t.node(a).unwrap().state, NodeState::Dead);
    let a2 = NodeId::random();
    assert_eq!(
        t.handle_register(t0 + Duration::from_secs(6), a2, reg("a")),
        2
    );
    assert_eq!(t.node(a2).unwrap().state, NodeState::Alive);
    assert_eq!(t.node(a).unwrap().state, NodeState::Dead);
    let dead = t.status(t0).into_iter().find(|n| n.node_id == a).unwrap();
    assert_eq!(
        dead.available.to_set(),
        ResourceSet::new(),
        "a dead node shows nothing available, not its last report"
    );
    assert_eq!(dead.total.to_set().get(CPU), Quantity::whole(2));
    let unknown = t.handle_heartbeat(t0, NodeId::random(), ResourceSet::new());
    assert!(matches!(unknown, HeartbeatOutcome::ReRegister(_)));
}

#[test]
fn nt_5_a_herd_still_coming_back_holds_off_the_deaths() {
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    let mut before = table();
    let ids: Vec<NodeId> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let id = NodeId::random();
            before.handle_register(t0, id, reg(name));
            id
        })
        .collect();
    let rows = ids.iter().map(|i| before.node(*i).unwrap().clone());
    // Recovered at 0 with a grace of one dead timeout (1 s).
    let mut t = NodeTable::restore(
        before.detector(),
        t0,
        Duration::from_secs(1),
        rows.collect(),
    );
    let (a, b, c) = (ids[0], ids[1], ids[2]);
    let free = ResourceSet::new();
    assert_eq!(
        t.handle_heartbeat(ms(900), a, free.clone()),
        HeartbeatOutcome::Ack
    );
    // Past the grace, but a came back 600 ms ago: b and c wait on.
    t.tick(ms(1500));
    assert!([b, c]
        .iter()
        .all(|n| t.node(*n).unwrap().state != NodeState::Dead));
    assert_eq!(
        t.handle_heartbeat(ms(1800), b, free.clone()),
        HeartbeatOutcome::Ack
    );
    // a, back since 0.9 s and silent since, is not declared dead either
    // while the herd arrives (the head may be too busy to hear it).
    t.tick(ms(2000));
    assert_ne!(t.node(a).unwrap().state, NodeState::Dead);
    assert_eq!(
        t.handle_heartbeat(ms(2500), b, free.clone()),
        HeartbeatOutcome::Ack
    );
    t.tick(ms(2799));
    assert_ne!(t.node(c).unwrap().state, NodeState::Dead);
    // The arrivals stopped at 1.8 s: c dies one dead timeout later, and
    // the nodes that came back follow the ordinary detector again.
    t.tick(ms(2800));
    assert_eq!(t.node(c).unwrap().state, NodeState::Dead);
    assert_eq!(
        t.node(a).unwrap().state,
        NodeState::Dead,
        "a: silence counts again from the last arrival"
    );
    assert_ne!(t.node(b).unwrap().state, NodeState::Dead);
}

#[test]
fn nt_3_reregistering_a_live_name_replaces_it() {
    let t0 = Instant::now();
    let mut t = table();
    let (a, b) = (NodeId::random(), NodeId::random());
    t.handle_register(t0, a, reg("x"));
    t.handle_register(t0, b, reg("x"));
    assert_eq!(t.node(a).unwrap().state, NodeState::Dead);
    assert!(t
        .node(a)
        .unwrap()
        .death_reason
        .as_deref()
        .unwrap()
        .contains("replaced"));
    assert_eq!(t.node(b).unwrap().incarnation, 2);
    assert!(t.handle_unregister(b));
    assert!(!t.handle_unregister(b));
    assert_eq!(t.status(t0).len(), 2);
}

#[test]
fn nt_7_a_stall_of_the_head_is_no_nodes_silence() {
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    let mut t = table();
    let a = NodeId::random();
    t.handle_register(t0, a, reg("a"));
    for n in (50..=300).step_by(50) {
        t.tick(ms(n));
    }
    // The head stops for 5 s (five dead timeouts); a's heartbeats went
    // unheard meanwhile.
    t.tick(ms(5_300));
    assert_ne!(t.node(a).unwrap().state, NodeState::Dead);
    // Silence counts again once the head runs: a, still silent, dies one
    // dead timeout after its last heartbeat, the stall left out.
    for n in (5_350..5_900).step_by(50) {
        t.tick(ms(n));
    }
    assert_ne!(t.node(a).unwrap().state, NodeState::Dead);
    t.tick(ms(6_000));
    assert_eq!(t.node(a).unwrap().state, NodeState::Dead);
    // A heartbeat heard after a stall keeps a node alive as ever.
    let b = NodeId::random();
    t.handle_register(ms(6_000), b, reg("b"));
    t.tick(ms(12_000));
    assert_eq!(
        t.handle_heartbeat(ms(12_010), b, ResourceSet::new()),
        HeartbeatOutcome::Ack
    );
    t.tick(ms(12_050));
    assert_eq!(t.node(b).unwrap().state, NodeState::Alive);
}
