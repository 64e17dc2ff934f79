//! The two-phase reservation and waits (HC-2).

use super::*;

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

/// Sends node `n`'s heartbeat: nothing free, `leased` CPUs held by leases.
fn beat_leased(sim: &mut Sim, n: NodeId, leased: u32) {
    let beat = HeadRequest::Heartbeat {
        node_id: n,
        available: Resources::from(&cpus(0)),
        leased: Resources::from(&cpus(leased)),
        demand: vec![],
    };
    let _ = sim
        .core
        .handle(sim.now, Caller::Node { cert: [7; 32] }, beat);
    sim.run();
}

fn prepares_to(sim: &Sim, n: NodeId) -> usize {
    sim.seen
        .iter()
        .filter(|e| matches!(e, Effect::Bundles { node, ops, .. } if *node == n && matches!(ops[0], BundleOp::Prepare { .. })))
        .count()
}

#[test]
fn l_3_cpus_held_by_leases_are_planned_for_bundles() {
    // Every CPU leased: the group is tried there, the raylet refuses (and
    // revokes its leases, L-3), and the next pass places it.
    let mut sim = Sim::new();
    let a = sim.node("a", 2);
    sim.free.insert(a, cpus(0));
    beat_leased(&mut sim, a, 2);
    sim.refusing.push(a);
    let pg = sim.pg(2, PgStrategyWire::Pack);
    assert_eq!(prepares_to(&sim, a), 1, "tried where leases hold the CPUs");
    assert_eq!(sim.group(pg).state, PgState::Pending);
    sim.refusing.clear();
    sim.free.insert(a, cpus(2));
    sim.pass_time(Duration::from_millis(600), &[a]);
    assert_eq!(sim.group(pg).state, PgState::Created);

    // A free node beside a leased one: the group goes to the free one,
    // and nothing is asked of the leased one (whatever the ids' order).
    for _ in 0..16 {
        let mut sim = Sim::new();
        let leased = sim.node("leased", 2);
        let free = sim.node("free", 2);
        sim.free.insert(leased, cpus(0));
        beat_leased(&mut sim, leased, 2);
        let pg = sim.pg(2, PgStrategyWire::Pack);
        assert_eq!(sim.group(pg).state, PgState::Created);
        assert_eq!(prepares_to(&sim, leased), 0);
        assert_eq!(prepares_to(&sim, free), 1);
    }

    // CPUs in use by anything else: not tried at all.
    let mut sim = Sim::new();
    let b = sim.node("b", 2);
    sim.free.insert(b, cpus(0));
    beat_leased(&mut sim, b, 0);
    let pg = sim.pg(2, PgStrategyWire::Pack);
    assert_eq!(prepares_to(&sim, b), 0);
    assert!(sim
        .group(pg)
        .reason
        .unwrap()
        .contains("waiting for resources"));
}

/// A node whose prepare got no answer (the call's deadline passed) may
/// have prepared all the same: the attempt is abandoned, and it is told to
/// give back what it may hold, as a node that prepared is.
#[test]
fn an_unanswered_prepare_is_given_back_too() {
    let mut sim = Sim::new();
    let a = sim.node("a", 2);
    let b = sim.node("b", 2);
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
    for e in prepares {
        if let Effect::Bundles {
            pass, node, ops, ..
        } = e
        {
            let result = match node == b {
                true => Err("no answer within 5s".to_string()),
                false => Ok(ops.iter().map(|op| sim.raylet(node, op)).collect()),
            };
            sim.core.bundles_done(sim.now, pass, node, result);
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
    assert_ne!(sim.group(pg).state, PgState::Created);
}
