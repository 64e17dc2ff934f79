//! Direct calls handed back to the dispatcher (DD-1..DD-3 in `direct.rs`).

use super::tests::{actor_create, node, replies, started, task};
use super::*;
use crate::ids::ActorId;
use crate::proto::task::{ActorCall, LostCalls, TaskKind};

/// An actor built on a fresh one-CPU node: the dispatcher, the actor, its
/// worker.
fn alive(restarts: u32, retries: u32) -> (Dispatcher, ActorId, WorkerId, JobId) {
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let actor = ActorId::random();
    let create = actor_create(actor, restarts, retries);
    let job = create.job_id;
    let w = started(&d.submit(create, Owner::Local(1)))[0];
    d.worker_ready(w);
    d.task_done(w, crate::ids::TaskId(actor.0), Outcome::Inline(vec![]));
    (d, actor, w, job)
}

fn call(job: JobId, actor: ActorId) -> TaskSpec {
    let mut c = task(job, 0, 0);
    c.kind = TaskKind::ActorCall(ActorCall {
        actor_id: actor,
        caller: crate::ids::HandleId::random(),
        seq: 0,
    });
    c
}

fn lost(actor: ActorId, restarts: u32, calls: Vec<TaskSpec>) -> LostCalls {
    LostCalls {
        actor_id: actor,
        restarts,
        calls,
    }
}

fn signal9() -> Failure {
    Failure::WorkerDied {
        node: NodeId::random(),
        detail: "signal 9 (SIGKILL)".into(),
    }
}

/// A call of incarnation 0 handed back after its death was seen.
fn assert_one_lost_call_fails_with_the_signal(d: &mut Dispatcher, actor: ActorId, job: JobId) {
    let a = d.direct_calls_lost(lost(actor, 0, vec![call(job, actor)]), Owner::Local(7));
    let detail = died_detail(&replies(&a)[0]);
    assert!(
        detail.contains("signal 9") && detail.ends_with("before this call finished"),
        "{detail}"
    );
}

fn died_detail(o: &Outcome) -> String {
    match o {
        Outcome::Failed(Failure::ActorDied { detail, .. }) => detail.clone(),
        other => panic!("not ActorDied: {other:?}"),
    }
}

#[test]
fn dd1_calls_lost_before_the_death_is_seen_are_answered_by_it() {
    let (mut d, actor, w, job) = alive(0, 0);
    let (c1, c2) = (call(job, actor), call(job, actor));
    let a = d.direct_calls_lost(
        lost(actor, 0, vec![c1.clone(), c2.clone()]),
        Owner::Local(7),
    );
    assert_eq!(
        a,
        vec![Action::Kill { worker: w }],
        "nothing is answered before the death"
    );
    let a = d.worker_died(w, signal9());
    let answered: Vec<_> = a
        .iter()
        .filter_map(|x| match x {
            Action::Reply {
                owner: Owner::Local(7),
                task_id,
                outcome,
            } => Some((*task_id, died_detail(outcome))),
            _ => None,
        })
        .collect();
    assert_eq!(answered.len(), 2, "{a:?}");
    assert_eq!(answered[0].0, c1.task_id, "oldest first");
    assert!(
        answered[0].1.contains("signal 9") && answered[0].1.contains("while running this call")
    );
    assert!(
        answered[1].1.contains("before this call started"),
        "{answered:?}"
    );
}

#[test]
fn dd1_a_connection_lost_with_nothing_unanswered_kills_nothing() {
    let (mut d, actor, _, _) = alive(0, 0);
    let a = d.direct_calls_lost(lost(actor, 0, vec![]), Owner::Local(7));
    assert_eq!(a, vec![], "no kill on a process's word alone");
}

#[test]
fn dd1_a_restartable_actor_runs_them_again_on_its_next_worker() {
    let (mut d, actor, w, job) = alive(1, 1);
    let c = call(job, actor);
    d.direct_calls_lost(lost(actor, 0, vec![c.clone()]), Owner::Local(7));
    let a = d.worker_died(w, signal9());
    assert!(replies(&a).is_empty(), "re-sent, not failed: {a:?}");
    let w2 = started(&a)[0];
    d.worker_ready(w2);
    let a = d.task_done(w2, crate::ids::TaskId(actor.0), Outcome::Inline(vec![]));
    let sent: Vec<_> = a
        .iter()
        .filter_map(|x| match x {
            Action::Execute { worker, task, .. } => Some((*worker, task.task_id, task.attempt)),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![(w2, c.task_id, 1)]);
}

#[test]
fn dd2_calls_of_an_earlier_incarnation_are_resent_or_fail_with_its_cause() {
    // Restarted already, no task retries: the call fails with the cause.
    let (mut d, actor, w, job) = alive(1, 0);
    d.worker_died(w, signal9());
    assert_one_lost_call_fails_with_the_signal(&mut d, actor, job);
    // With a task retry: queued for the new worker, sent when it is built.
    let (mut d, actor, w, job) = alive(1, 1);
    let a = d.worker_died(w, signal9());
    let w2 = started(&a)[0];
    let c = call(job, actor);
    let a = d.direct_calls_lost(lost(actor, 0, vec![c.clone()]), Owner::Local(7));
    assert!(a.is_empty(), "waits for the constructor: {a:?}");
    d.worker_ready(w2);
    let a = d.task_done(w2, crate::ids::TaskId(actor.0), Outcome::Inline(vec![]));
    assert!(
        a.iter().any(|x| matches!(x, Action::Execute { task, .. } if task.task_id == c.task_id && task.attempt == 1)),
        "{a:?}"
    );
}

#[test]
fn dd3_calls_to_an_actor_dead_here_fail_with_its_reason() {
    let (mut d, actor, w, job) = alive(0, 0);
    d.worker_died(w, signal9());
    assert_one_lost_call_fails_with_the_signal(&mut d, actor, job);
    let a = d.direct_calls_lost(
        lost(ActorId::random(), 0, vec![call(job, actor)]),
        Owner::Local(7),
    );
    assert!(died_detail(&replies(&a)[0]).contains("no longer hosts it"));
}

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
    let a = d.fence_actors("its node was declared dead");
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
    let a = d.fence_actors("its node was declared dead");
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
    let a = d.fence_actors("its node was declared dead");
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
