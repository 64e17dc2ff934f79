//! Killing actors: kills before the constructor, kills for good after
//! a restartable one, and the cause a kill leaves as the actor's death.

use super::tests::*;
use super::*;

#[test]
fn a_kill_sent_before_the_constructor_is_scheduled_is_kept() {
    let me = NodeId::random();
    let mut d = Dispatcher::new(me, node(1));
    let actor = ActorId::random();
    d.announce_actor(actor);
    let kill = kill_call(actor, true);
    assert_eq!(
        replies(&d.submit(kill, Owner::Local(1))),
        vec![Outcome::Inline(vec![])]
    );
    let create = actor_create(actor, 3, 0);
    let w = started(&d.submit(create, Owner::Local(1)))[0];
    d.worker_ready(w);
    let a = d.task_done(w, crate::ids::TaskId(actor.0), Outcome::Inline(vec![]));
    assert!(a.contains(&Action::Kill { worker: w }), "{a:?}");
    let a = d.worker_died(
        w,
        Failure::WorkerDied {
            node: me,
            detail: "signal 9".into(),
        },
    );
    assert!(
        started(&a).is_empty(),
        "no restart after kill(no_restart): {a:?}"
    );
    assert_eq!(
        d.dead_reason(actor),
        Some("killed by prism::kill"),
        "the kill is the reason; the SIGKILL that carried it out is not news"
    );
}

#[test]
fn a_call_cut_by_a_kill_says_so_not_that_its_worker_died_running_it() {
    use crate::proto::task::ActorCall;
    let me = NodeId::random();
    let mut d = Dispatcher::new(me, node(1));
    let actor = ActorId::random();
    let create = actor_create(actor, 0, 0);
    let job = create.job_id;
    let w = started(&d.submit(create, Owner::Local(1)))[0];
    d.worker_ready(w);
    d.task_done(w, crate::ids::TaskId(actor.0), Outcome::Inline(vec![]));
    let mut call = task(job, 0, 0);
    call.kind = TaskKind::ActorCall(ActorCall {
        actor_id: actor,
        caller: crate::ids::HandleId::random(),
        seq: 0,
    });
    d.submit(call, Owner::Local(1));
    let a = d.submit(kill_call(actor, true), Owner::Local(1));
    assert!(a.contains(&Action::Kill { worker: w }), "{a:?}");
    let a = d.worker_died(
        w,
        Failure::WorkerDied {
            node: me,
            detail: "signal 9 (SIGKILL)".into(),
        },
    );
    let detail = match replies(&a).as_slice() {
        [Outcome::Failed(Failure::ActorDied { detail, .. })] => detail.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(detail, "killed by prism::kill before this call finished");
}

#[test]
fn a_kill_for_good_after_a_kill_that_allowed_a_restart_holds() {
    let me = NodeId::random();
    let (mut d, actor, w, _) = super::tests_direct::alive(3, 0);
    let a = d.submit(kill_call(actor, false), Owner::Local(1));
    assert!(a.contains(&Action::Kill { worker: w }), "{a:?}");
    // Before the worker's exit is seen, a kill for good.
    let a = d.submit(kill_call(actor, true), Owner::Local(1));
    assert_eq!(replies(&a), vec![Outcome::Inline(vec![])]);
    let a = d.worker_died(
        w,
        Failure::WorkerDied {
            node: me,
            detail: "signal 9".into(),
        },
    );
    assert!(started(&a).is_empty(), "no restart: {a:?}");
    assert_eq!(d.dead_reason(actor), Some("killed by prism::kill"));
}

#[test]
fn a_kill_that_names_its_cause_leaves_it_as_the_actor_s_death() {
    let (mut d, actor, w, _) = super::tests_direct::alive(3, 0);
    let why = "actor a is dead (its restart was given up); this incarnation must stop";
    let a = d.submit(super::kill_call_because(actor, why), Owner::Raylet);
    assert!(a.contains(&Action::Kill { worker: w }), "{a:?}");
    // Also after a user's kill that allowed a restart, before the exit.
    let (mut d2, actor2, w2, _) = super::tests_direct::alive(3, 0);
    d2.submit(kill_call(actor2, false), Owner::Local(1));
    d2.submit(super::kill_call_because(actor2, why), Owner::Raylet);
    d2.worker_died(
        w2,
        Failure::WorkerDied {
            node: d2.me,
            detail: "signal 9".into(),
        },
    );
    assert_eq!(d2.dead_reason(actor2), Some(why));
    let a = d.worker_died(
        w,
        Failure::WorkerDied {
            node: d.me,
            detail: "signal 9".into(),
        },
    );
    assert!(started(&a).is_empty(), "for good: {a:?}");
    assert_eq!(d.dead_reason(actor), Some(why));
}
