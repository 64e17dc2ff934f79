//! Restarts under way when their node dies, answers nothing or refuses
//! them, or when the head recovers: placed again, waiting for a report,
//! or dead at their deadline (AT-5).

use super::*;

/// A restart whose node is declared dead before the actor came up (its
/// raylet fenced the constructor, or refused work meant for its old id,
/// DF-6) is placed again on a live node, or waits for one (AT-5) until
/// its deadline.
#[test]
fn a_restart_whose_node_died_is_placed_again() {
    let mut sim = Sim::new();
    let a = sim.node("a", 2);
    let b = sim.node("b", 2);
    let c = sim.node("c", 2);
    let kept = actor_on(&mut sim, a, 3);
    sim.pass_time(Duration::from_millis(1_500), &[b, c]);
    let first = sim
        .seen
        .iter()
        .find_map(|e| match e {
            Effect::RestartActor { actor, node, .. } if *actor == kept => Some(*node),
            _ => None,
        })
        .expect("restarted after a died");
    let other = if first == b { c } else { b };
    // The chosen node dies before the constructor reports: the restart
    // is placed again at its death; its node's late failure changes
    // nothing.
    sim.seen.clear();
    sim.pass_time(Duration::from_millis(1_500), &[other]);
    sim.core.restart_failed(
        sim.now,
        failure(
            kept,
            1,
            first,
            "its restart on node x failed: fenced",
            RestartAnswer::NotRun,
        ),
    );
    sim.run();
    let again = sim.seen.iter().find_map(|e| match e {
        Effect::RestartActor {
            actor,
            node,
            create,
            ..
        } if *actor == kept => Some((*node, create.task.kind.clone())),
        _ => None,
    });
    let (node, kind) = again.expect("placed again");
    assert_eq!(node, other);
    assert!(
        matches!(kind, TaskKind::CreateActor(c) if c.restarts == 1),
        "the same restart, not a new one"
    );
    assert_eq!(actor(&mut sim, kept).state, ActorState::Restarting);
    // That one's node dies too and no live node is left: the restart
    // waits for one (AT-5), and a node that joins takes it. (Its late
    // failure changes nothing either.)
    sim.pass_time(Duration::from_millis(1_500), &[]);
    sim.core.restart_failed(
        sim.now,
        failure(
            kept,
            1,
            other,
            "its restart on node y failed: fenced",
            RestartAnswer::NotRun,
        ),
    );
    sim.run();
    assert_eq!(actor(&mut sim, kept).state, ActorState::Restarting);
    sim.seen.clear();
    let d = sim.node("d", 2);
    sim.pass_time(Duration::from_millis(300), &[d]);
    let placed = sim.seen.iter().any(
        |e| matches!(e, Effect::RestartActor { actor, node, .. } if *actor == kept && *node == d),
    );
    assert!(placed, "{:?}", sim.seen);
    // d dies before it came up, and none joins within the deadline: dead.
    sim.pass_time(Duration::from_millis(1_500), &[]);
    sim.core.restart_failed(
        sim.now,
        failure(
            kept,
            1,
            d,
            "its restart on node d failed: fenced",
            RestartAnswer::NotRun,
        ),
    );
    sim.pass_time(actors::RESTART_WAIT + Duration::from_secs(1), &[]);
    let info = actor(&mut sim, kept);
    assert_eq!(info.state, ActorState::Dead);
    let why = info.death_reason.unwrap();
    assert!(why.contains("no node could take it within"), "{why}");
}

pub(super) fn failure(
    actor: ActorId,
    n: u32,
    node: NodeId,
    why: &str,
    answer: RestartAnswer,
) -> RestartFailure {
    RestartFailure {
        actor,
        n,
        node,
        why: why.into(),
        answer,
    }
}

/// AT-5, recovered: a head that comes back while a restart was under way
/// does not place it again (its raylet may still bring it up), and the
/// actor is dead if none reports it up in time.
#[test]
fn a_restart_under_way_when_the_head_recovered_waits_for_a_report_only() {
    let mut sim = Sim::new();
    let a = sim.node("a", 2);
    let b = sim.node("b", 2);
    let kept = actor_on(&mut sim, a, 3);
    sim.pass_time(Duration::from_millis(1_500), &[b]);
    assert_eq!(actor(&mut sim, kept).state, ActorState::Restarting);
    // As `recovery.rs` leaves the table of a head recovered now.
    sim.core.actors.recovered_mid_restart(sim.now.at);
    sim.seen.clear();
    sim.pass_time(actors::REPORT_WAIT + Duration::from_secs(1), &[b]);
    let again = sim
        .seen
        .iter()
        .any(|e| matches!(e, Effect::RestartActor { actor, .. } if *actor == kept));
    assert!(!again, "placed twice: {:?}", sim.seen);
    let info = actor(&mut sim, kept);
    assert_eq!(info.state, ActorState::Dead);
    let why = info.death_reason.unwrap();
    assert!(why.contains("no node reported it up"), "{why}");
}

/// A restart its node gave no answer for may run there still: it is not
/// placed twice, but placed again if that node dies before it reports it
/// up, and dead if a live node never does.
#[test]
fn an_unanswered_restart_waits_for_its_node_report_or_death() {
    let mut sim = Sim::new();
    let a = sim.node("a", 2);
    let b = sim.node("b", 2);
    let c = sim.node("c", 2);
    let kept = actor_on(&mut sim, a, 3);
    sim.pass_time(Duration::from_millis(1_500), &[b, c]);
    let first = restarted_on(&sim, kept).expect("restarted after a died");
    let other = if first == b { c } else { b };
    sim.seen.clear();
    let lost = "its restart on node x failed: connection lost";
    let unanswered = failure(kept, 1, first, lost, RestartAnswer::Unanswered);
    sim.core.restart_failed(sim.now, unanswered);
    sim.pass_time(Duration::from_millis(300), &[b, c]);
    assert_eq!(restarted_on(&sim, kept), None, "placed twice");
    assert_eq!(actor(&mut sim, kept).state, ActorState::Restarting);
    // Its node dies before it reports the actor up: placed again.
    sim.pass_time(Duration::from_millis(1_500), &[other]);
    assert_eq!(restarted_on(&sim, kept), Some(other));
    // That one answers nothing either, stays up, and never reports it.
    let unanswered = failure(kept, 1, other, lost, RestartAnswer::Unanswered);
    sim.core.restart_failed(sim.now, unanswered);
    sim.seen.clear();
    sim.pass_time(actors::REPORT_WAIT + Duration::from_secs(1), &[other]);
    assert_eq!(restarted_on(&sim, kept), None, "placed twice");
    let info = actor(&mut sim, kept);
    assert_eq!(info.state, ActorState::Dead);
    let why = info.death_reason.unwrap();
    assert!(why.contains("no node reported it up"), "{why}");
    // AT-2: if that node brings it up after all, it is told the actor is
    // dead (its raylet stops it), and the actor stays dead.
    let up = HeadRequest::UpdateActor {
        actor_id: kept,
        state: ActorState::Alive,
        node: Some((other, "addr".into())),
        restarts: 1,
        reason: None,
    };
    let r = sim.core.handle(sim.now, Caller::Node { cert: [7; 32] }, up);
    assert!(
        matches!(&r, Reply::Now(HeadResponse::Error { kind: ErrorKind::Conflict, message })
            if message.contains("is dead") && message.contains("must stop")),
        "{r:?}"
    );
    assert_eq!(actor(&mut sim, kept).state, ActorState::Dead);
}

/// A restart its live nodes keep refusing is dead once it has waited a
/// node's deadline from its first wait: placing it again does not start
/// the deadline again. A late answer from where it was sent before is
/// ignored.
#[test]
fn a_restart_refused_again_and_again_ends_at_its_first_deadline() {
    let mut sim = Sim::new();
    let a = sim.node("a", 2);
    let b = sim.node("b", 2);
    let kept = actor_on(&mut sim, a, 3);
    sim.pass_time(Duration::from_millis(1_500), &[b]);
    assert_eq!(restarted_on(&sim, kept), Some(b));
    let refused = || {
        failure(
            kept,
            1,
            b,
            "its restart on node b failed: draining",
            RestartAnswer::NotRun,
        )
    };
    let step = actors::RESTART_WAIT / 4;
    for _ in 0..3 {
        sim.seen.clear();
        sim.core.restart_failed(sim.now, refused());
        sim.run();
        assert_eq!(restarted_on(&sim, kept), Some(b), "placed again");
        sim.pass_time(step, &[b]);
    }
    sim.seen.clear();
    sim.core.restart_failed(sim.now, refused());
    sim.run();
    assert_eq!(restarted_on(&sim, kept), Some(b));
    sim.pass_time(step + Duration::from_secs(1), &[b]);
    sim.core.restart_failed(sim.now, refused());
    let info = actor(&mut sim, kept);
    assert_eq!(info.state, ActorState::Dead);
    let why = info.death_reason.unwrap();
    assert!(why.contains("refused it for"), "{why}");
}

/// The node the last `RestartActor` for `actor` among the effects seen
/// went to.
fn restarted_on(sim: &Sim, kept: ActorId) -> Option<NodeId> {
    sim.seen.iter().rev().find_map(|e| match e {
        Effect::RestartActor { actor, node, .. } if *actor == kept => Some(*node),
        _ => None,
    })
}

/// A node's death is a new loss: a restart placed there long after its
/// first wait gets a node's full deadline again, not what was left of it.
#[test]
fn a_restarts_deadline_starts_again_when_its_node_dies() {
    let mut sim = Sim::new();
    let a = sim.node("a", 2);
    let b = sim.node("b", 2);
    let kept = actor_on(&mut sim, a, 3);
    sim.pass_time(Duration::from_millis(1_500), &[b]);
    assert_eq!(restarted_on(&sim, kept), Some(b));
    // b holds it (queued for resources, say) for most of a deadline...
    sim.pass_time(actors::RESTART_WAIT - Duration::from_secs(5), &[b]);
    assert_eq!(actor(&mut sim, kept).state, ActorState::Restarting);
    // ...then dies, with no node left to take it: it waits again.
    sim.pass_time(Duration::from_secs(10), &[]);
    assert_eq!(actor(&mut sim, kept).state, ActorState::Restarting);
    sim.pass_time(actors::RESTART_WAIT - Duration::from_secs(15), &[]);
    assert_eq!(actor(&mut sim, kept).state, ActorState::Restarting);
    sim.pass_time(Duration::from_secs(10), &[]);
    let info = actor(&mut sim, kept);
    assert_eq!(info.state, ActorState::Dead);
    assert!(info
        .death_reason
        .unwrap()
        .contains("no node could take it within"));
}
