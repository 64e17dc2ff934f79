//! The fence (DF-1..DF-4 in `fence.rs`): what ends, and what goes on,
//! when this node learns the head declared it dead.

use super::tests::{actor_create, node, replies, started, task};
use super::tests_direct::{alive, call, died_detail, lost, signal9};
use super::*;
use crate::ids::ActorId;

fn forwarded(a: &[Action]) -> Vec<(ActorId, u32)> {
    a.iter()
        .filter_map(|x| match x {
            Action::ForwardCall { actor, task, .. } => Some((*actor, task.attempt)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_fenced_actor_ends_at_once_and_its_calls_follow_it_da4_df() {
    let (mut d, actor, w, job) = alive(3, 3);
    d.submit(call(job, actor), Owner::Local(1));
    let a = d.fence("its node was declared dead", 100);
    assert!(a.contains(&Action::Kill { worker: w }), "{a:?}");
    // DF-2: the call its worker had is re-sent, one retry spent.
    assert_eq!(forwarded(&a), vec![(actor, 1)], "{a:?}");
    assert!(replies(&a).is_empty(), "{a:?}");
    assert!(a.iter().any(|x| matches!(
        x,
        Action::ActorState {
            state: crate::proto::head::ActorState::Dead,
            ..
        }
    )));
    // DF-3: gone from here, but not remembered dead: the head may restart
    // it elsewhere or here again.
    assert!(!d.hosts_actor(actor));
    assert_eq!(d.dead_reason(actor), None);
    // Its worker's exit, when it comes, changes nothing.
    let a = d.worker_died(w, signal9());
    assert!(started(&a).is_empty() && replies(&a).is_empty(), "{a:?}");
    // DF-2 for calls a direct connection handed back: re-sent while
    // retries last, else failed with the fence as the cause.
    let mut spent = call(job, actor);
    spent.attempt = 3;
    let a = d.direct_calls_lost(
        lost(actor, 0, vec![call(job, actor), spent]),
        Owner::Local(7),
    );
    assert_eq!(forwarded(&a), vec![(actor, 1)], "{a:?}");
    let detail = died_detail(&replies(&a)[0]);
    assert!(
        detail.contains("declared dead") && detail.ends_with("before this call finished"),
        "{detail}"
    );
}

#[test]
fn a_fenced_actor_without_retries_fails_what_ran_and_forwards_what_waited_df() {
    let (mut d, actor, _w, job) = alive(3, 0);
    d.submit(call(job, actor), Owner::Local(1));
    let a = d.fence("its node was declared dead", 100);
    let detail = died_detail(&replies(&a)[0]);
    assert!(detail.contains("declared dead"), "{detail}");
    assert!(forwarded(&a).is_empty(), "{a:?}");

    // An actor still in its constructor: the calls that waited for it go
    // on, unspent (DF-1); its creator learns it failed here.
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let actor = ActorId::random();
    let create = actor_create(actor, 3, 0);
    let job = create.job_id;
    let w = started(&d.submit(create, Owner::Local(1)))[0];
    d.worker_ready(w);
    d.submit(call(job, actor), Owner::Local(2));
    let a = d.fence("its node was declared dead", 100);
    assert_eq!(forwarded(&a), vec![(actor, 0)], "{a:?}");
    assert!(
        a.iter().any(|x| matches!(
            x,
            Action::Reply {
                owner: Owner::Local(1),
                outcome: Outcome::Failed(Failure::ActorDied { .. }),
                ..
            }
        )),
        "{a:?}"
    );
}

#[test]
fn work_peers_spilled_here_ends_and_local_work_goes_on_df4() {
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let job = JobId::random();
    let (running, queued, local) = (task(job, 1, 3), task(job, 1, 3), task(job, 1, 0));
    let w = started(&d.submit(running.clone(), Owner::Spilled(1)))[0];
    d.worker_ready(w);
    assert!(d.submit(queued.clone(), Owner::Spilled(2)).is_empty());
    assert!(d.submit(local.clone(), Owner::Local(3)).is_empty());
    // A spilled actor creation waiting for resources, with a call for it.
    let actor = ActorId::random();
    let mut create = actor_create(actor, 0, 0);
    create.resources = running.resources.clone();
    d.announce_actor(actor);
    assert!(d.submit(create, Owner::Spilled(4)).is_empty());
    d.submit(call(job, actor), Owner::Local(5));
    // A restart the head placed here (restarts > 0), waiting too.
    let restarted = ActorId::random();
    let mut restart = actor_create(restarted, 3, 0);
    restart.resources = running.resources.clone();
    if let TaskKind::CreateActor(c) = &mut restart.kind {
        c.restarts = 1;
    }
    assert!(d.submit(restart, Owner::Spilled(6)).is_empty());

    let a = d.fence("its node was declared dead", 100);
    let told = |want: fn(&Failure) -> bool| {
        let mut v: Vec<Owner> = a
            .iter()
            .filter_map(|x| match x {
                Action::Reply {
                    owner,
                    outcome: Outcome::Failed(f),
                    ..
                } if want(f) => Some(*owner),
                _ => None,
            })
            .collect();
        v.sort();
        v
    };
    // The running task ended (its sender retries it); the queued task and
    // creation, and the head's restart, are handed back, to be placed
    // again.
    let died =
        told(|f| matches!(f, Failure::NodeDied { detail, .. } if detail.contains("declared dead")));
    assert_eq!(died, vec![Owner::Spilled(1)], "{a:?}");
    let moved = told(|f| matches!(f, Failure::Moved { .. }));
    assert_eq!(
        moved,
        vec![Owner::Spilled(2), Owner::Spilled(4), Owner::Spilled(6)],
        "{a:?}"
    );
    assert!(a.contains(&Action::Kill { worker: w }), "{a:?}");
    // The call that waited for the dropped creation follows the actor.
    assert!(
        a.iter().any(|x| matches!(x, Action::ForwardCall { actor: f, owner: Owner::Local(5), .. } if *f == actor)),
        "{a:?}"
    );
    assert_eq!(d.stats().queued, 1, "the local task still waits");
    // The killed worker's exit gives its CPU to the local task, with no
    // second reply and no retry of the spilled one.
    let a = d.worker_died(w, signal9());
    assert!(replies(&a).is_empty(), "{a:?}");
    let w2 = started(&a);
    assert_eq!(w2.len(), 1, "{a:?}");
    let a = d.worker_ready(w2[0]);
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Execute { task, .. } if task.task_id == local.task_id)),
        "{a:?}"
    );
}

#[test]
fn a_peers_call_is_the_peers_to_resend_df5() {
    let (mut d, actor, _w, job) = alive(3, 3);
    let sent = call(job, actor);
    d.submit(sent.clone(), Owner::PeerStream(9));
    // A call from a peer waiting for another actor's constructor here.
    let other = ActorId::random();
    d.announce_actor(other);
    let waiting = call(job, other);
    d.submit(waiting.clone(), Owner::PeerStream(11));
    let a = d.fence("its node was declared dead", 100);
    assert!(forwarded(&a).is_empty() && replies(&a).is_empty(), "{a:?}");
    for id in [sent.task_id, waiting.task_id] {
        assert!(a.contains(&Action::Dropped { task_id: id }), "{a:?}");
    }
    // A call read from a closed stream after the fence is dropped too; one
    // from a stream opened since goes to the actor's next incarnation.
    let late = call(job, actor);
    let a = d.submit(late.clone(), Owner::PeerStream(12));
    assert_eq!(
        a,
        vec![Action::Dropped {
            task_id: late.task_id
        }]
    );
    let a = d.submit(call(job, actor), Owner::PeerStream(100));
    assert_eq!(forwarded(&a), vec![(actor, 0)], "{a:?}");
}

#[test]
fn an_actor_killed_for_good_stays_killed_across_the_fence_df3() {
    let (mut d, actor, w, job) = alive(3, 3);
    // Killed with no restart; its worker's exit is not yet seen when the
    // fence comes, and a call waits behind the kill.
    let mut kill = super::kill_call(actor, true);
    kill.job_id = job;
    d.submit(kill, Owner::Local(1));
    d.submit(call(job, actor), Owner::Local(2));
    let a = d.fence("its node was declared dead", 100);
    assert!(a.contains(&Action::Kill { worker: w }), "{a:?}");
    // Nothing goes on but the kill itself, to wherever the head may have
    // restarted it.
    let kills: Vec<_> = a
        .iter()
        .filter_map(|x| match x {
            Action::ForwardCall { owner, task, .. } => Some((*owner, task.function.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        kills,
        vec![(Owner::Raylet, KILL_METHOD.to_string())],
        "{a:?}"
    );
    for r in replies(&a) {
        let detail = died_detail(&r);
        assert!(detail.contains("killed by prism::kill"), "{detail}");
    }
    // Its direct callers' lost calls fail the same way.
    let a = d.direct_calls_lost(lost(actor, 0, vec![call(job, actor)]), Owner::Local(7));
    assert!(
        died_detail(&replies(&a)[0]).contains("killed by prism::kill"),
        "{a:?}"
    );
}

#[test]
fn work_meant_for_an_earlier_incarnation_is_refused_naming_it_df6() {
    use crate::ids::NodeId;
    let (old, new) = (NodeId::random(), NodeId::random());
    // Not fenced, meant for this raylet (its id now, or its next one once
    // the raylet waited for it): it runs.
    assert!(fence::refuse_for(new, new, false, None, false).is_none());
    // An id it never had (nor came to have within the wait): refused.
    match fence::refuse_for(new, old, false, None, false) {
        Some(Failure::Draining {
            node,
            reason: detail,
        }) => {
            assert_eq!(node, new);
            assert!(detail.contains("is not this raylet"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    // Fenced: refused, under the old id before the new one is known, and
    // after it.
    for me in [old, new] {
        match fence::refuse_for(
            old,
            me,
            me != old,
            Some("no heartbeat for 10s".into()),
            false,
        ) {
            Some(Failure::Draining {
                node,
                reason: detail,
            }) => {
                assert_eq!(node, old);
                assert!(
                    detail.contains("no heartbeat for 10s") && detail.contains("fenced"),
                    "{detail}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    // Work pinned to that node can go nowhere else: as for a lost node.
    assert!(matches!(
        fence::refuse_for(old, new, true, None, true),
        Some(Failure::NodeDied { node, .. }) if node == old
    ));
    // An earlier id this raylet does not know as declared dead: refused too.
    match fence::refuse_for(old, new, true, None, false) {
        Some(Failure::Draining {
            node,
            reason: detail,
        }) => {
            assert_eq!(node, old);
            assert!(detail.contains("earlier incarnation"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_restart_the_head_placed_here_fenced_mid_constructor_goes_back_to_the_head_df4() {
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let actor = ActorId::random();
    let mut restart = actor_create(actor, 3, 0);
    if let TaskKind::CreateActor(c) = &mut restart.kind {
        c.restarts = 1;
    }
    d.announce_actor(actor);
    let w = started(&d.submit(restart, Owner::Spilled(7)))[0];
    // Its constructor runs (no answer yet) when the fence comes.
    d.worker_ready(w);
    let a = d.fence("its node was declared dead", 100);
    let told: Vec<_> = a
        .iter()
        .filter_map(|x| match x {
            Action::Reply { owner, outcome, .. } => Some((*owner, outcome.clone())),
            _ => None,
        })
        .collect();
    assert!(
        matches!(
            told.as_slice(),
            [(Owner::Spilled(7), Outcome::Failed(Failure::NodeDied { .. }))]
        ),
        "the head is told once that the node died under it: {told:?}"
    );
    assert!(a.contains(&Action::Kill { worker: w }), "{a:?}");
    // One killed for good before the fence is not placed again: the head
    // hears of the kill.
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let actor = ActorId::random();
    let mut restart = actor_create(actor, 3, 0);
    let job = restart.job_id;
    if let TaskKind::CreateActor(c) = &mut restart.kind {
        c.restarts = 1;
    }
    d.announce_actor(actor);
    let w = started(&d.submit(restart, Owner::Spilled(8)))[0];
    d.worker_ready(w);
    let mut kill = super::kill_call(actor, true);
    kill.job_id = job;
    d.submit(kill, Owner::Local(9));
    let a = d.fence("its node was declared dead", 200);
    let to_head: Vec<_> = a
        .iter()
        .filter_map(|x| match x {
            Action::Reply {
                owner: Owner::Spilled(8),
                outcome,
                ..
            } => Some(outcome.clone()),
            _ => None,
        })
        .collect();
    assert!(
        matches!(
            to_head.as_slice(),
            [Outcome::Failed(Failure::ActorDied { .. })]
        ),
        "{to_head:?}"
    );
}

#[test]
fn refused_work_is_counted_for_the_nodes_metrics_df6() {
    let mut d = Dispatcher::new(crate::ids::NodeId::random(), node(2));
    assert_eq!(d.stats().work_refused, 0);
    d.count_refused();
    d.count_refused();
    assert_eq!(d.stats().work_refused, 2);
}

/// DF-4: the head places a dead node's bundles elsewhere, so the fence
/// gives back what they hold here; the work in them ends as on a lost
/// node (its owner may retry it where the bundle went), not as for a
/// removed group, and work outside them goes on.
#[test]
fn the_fence_gives_back_the_nodes_bundles_df4() {
    use super::tests::in_bundle;
    let me = NodeId::random();
    let mut d = Dispatcher::new(me, node(3));
    let pg = crate::ids::PlacementGroupId::random();
    let one = ResourceSet::new().with(CPU, Quantity::ONE);
    d.prepare_bundles(pg, vec![(0, one.clone()), (1, one)], true)
        .unwrap();
    let job = JobId::random();
    let w = started(&d.submit(in_bundle(job, pg, 0, me), Owner::Local(1)))[0];
    d.worker_ready(w);
    let w1 = started(&d.submit(in_bundle(job, pg, 1, me), Owner::Local(2)))[0];
    // Waits for bundle 0.
    assert!(started(&d.submit(in_bundle(job, pg, 0, me), Owner::Local(4))).is_empty());
    let outside = task(job, 1, 0);
    let w2 = started(&d.submit(outside, Owner::Local(3)));
    assert_eq!(d.available().get(CPU), Quantity::ZERO);
    let a = d.fence("its node was declared dead", 1);
    let lost: Vec<_> = a
        .iter()
        .filter_map(|x| match x {
            Action::Reply {
                owner,
                outcome: Outcome::Failed(Failure::NodeDied { node, detail }),
                ..
            } if *node == me && detail.contains("declared dead") => Some(*owner),
            _ => None,
        })
        .collect();
    assert_eq!(lost.len(), 3, "the running and the waiting tasks: {a:?}");
    assert!(a.contains(&Action::Kill { worker: w }), "{a:?}");
    assert!(a.contains(&Action::Kill { worker: w1 }), "{a:?}");
    assert_eq!(d.bundle_count(), 0);
    // The head places the group here again (the next incarnation) before
    // the killed workers' exits are seen: their ends give nothing back to
    // the new bundle, which stays whole.
    let two = ResourceSet::new().with(CPU, Quantity::whole(2));
    d.prepare_bundles(pg, vec![(0, two.clone())], true).unwrap();
    let mut whole = in_bundle(job, pg, 0, me);
    whole.resources = crate::proto::common::Resources::from(&two);
    let w3 = started(&d.submit(whole, Owner::Local(5)));
    assert_eq!(w3.len(), 1, "the new bundle fits its whole size");
    assert!(replies(&d.worker_died(w, Failure::Cancelled)).is_empty());
    assert!(replies(&d.worker_died(w1, Failure::Cancelled)).is_empty());
    let a = d.submit(in_bundle(job, pg, 0, me), Owner::Local(6));
    assert!(started(&a).is_empty(), "nothing more fits in it: {a:?}");
    d.return_bundles(pg, &[], "done");
    d.worker_died(w3[0], Failure::Cancelled);
    assert_eq!(d.available().get(CPU), Quantity::whole(2), "{w2:?}");
    assert_eq!(d.bundle_count(), 0);
    assert_eq!(d.stats().running, 1, "{:?}", d.stats());
}

/// A raylet registered again under a new id: a worker started under the
/// earlier one would report that id as its node's (`prism::node_id()`),
/// so none runs another task; idle ones go at once, busy ones once idle.
#[test]
fn workers_started_under_an_earlier_id_run_nothing_more() {
    let mut d = Dispatcher::new(NodeId::random(), node(2));
    let job = JobId::random();
    let (t1, t2) = (task(job, 1, 0), task(job, 1, 0));
    let w1 = started(&d.submit(t1.clone(), Owner::Local(1)))[0];
    d.worker_ready(w1);
    let w2 = started(&d.submit(t2.clone(), Owner::Local(1)))[0];
    d.worker_ready(w2);
    let a = d.task_done(w1, t1.task_id, Outcome::Inline(vec![]));
    assert!(
        !a.contains(&Action::Kill { worker: w1 }),
        "kept idle: {a:?}"
    );
    let a = d.set_node_id(NodeId::random());
    assert!(a.contains(&Action::Kill { worker: w1 }), "{a:?}");
    assert!(!a.contains(&Action::Kill { worker: w2 }), "{a:?}");
    let a = d.task_done(w2, t2.task_id, Outcome::Inline(vec![]));
    assert!(a.contains(&Action::Kill { worker: w2 }), "{a:?}");
    assert_eq!(d.stats().workers, 0);
    // The next task gets a worker started under the new id.
    let a = d.submit(task(job, 1, 0), Owner::Local(1));
    assert_eq!(started(&a).len(), 1, "{a:?}");
}

#[test]
fn bundle_operations_for_another_incarnation_are_refused_or_done_df6() {
    use crate::ids::NodeId;
    use fence::BundleRefusal;
    let (old, new, other) = (NodeId::random(), NodeId::random(), NodeId::random());
    // For this raylet's id: applied.
    for is_return in [false, true] {
        assert_eq!(
            fence::bundle_refusal(is_return, new, new, false, None),
            None
        );
    }
    // A Prepare or Commit for its earlier id: refused, naming it.
    match fence::bundle_refusal(false, old, new, true, None) {
        Some(BundleRefusal::Refused(why)) => {
            assert!(
                why.contains("earlier incarnation") && why.contains(&old.to_string()),
                "{why}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A Return for it: its fence gave all back, so done.
    assert_eq!(
        fence::bundle_refusal(true, old, new, true, Some("no heartbeat".into())),
        Some(BundleRefusal::Done)
    );
    // This id declared dead (its fence comes): a Prepare is refused with
    // the cause, a Return is done.
    match fence::bundle_refusal(false, new, new, false, Some("no heartbeat for 10s".into())) {
        Some(BundleRefusal::Refused(why)) => assert!(why.contains("no heartbeat for 10s"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fence::bundle_refusal(true, new, new, false, Some("no heartbeat".into())),
        Some(BundleRefusal::Done)
    );
    // An id it never had: refused, even a Return (nothing of it is here
    // to say so).
    for is_return in [false, true] {
        assert!(matches!(
            fence::bundle_refusal(is_return, other, new, false, None),
            Some(BundleRefusal::Refused(why)) if why.contains("is not this raylet")
        ));
    }
}

#[test]
fn a_fenced_actor_s_worker_that_connects_later_is_killed_not_made_idle() {
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let create = super::tests::actor_create(crate::ids::ActorId::random(), 0, 0);
    let job = create.job_id;
    let w = started(&d.submit(create, Owner::Local(1)))[0];
    d.fence("no heartbeat", 1);
    let a = d.worker_ready(w);
    assert!(a.contains(&Action::Kill { worker: w }), "{a:?}");
    // A task of the actor's job never goes to it.
    let a = d.submit(super::tests::task(job, 0, 0), Owner::Local(1));
    assert!(
        !a.iter()
            .any(|x| matches!(x, Action::Execute { worker, .. } if *worker == w)),
        "{a:?}"
    );
    // Its exit changes nothing.
    let a = d.worker_died(
        w,
        Failure::WorkerDied {
            node: d.me,
            detail: "signal 9".into(),
        },
    );
    assert!(replies(&a).is_empty() && started(&a).is_empty(), "{a:?}");
}
