//! Direct calls handed back to the dispatcher (DD-1..DD-3 in `direct.rs`).

use super::tests::{actor_create, node, replies, started, task};
use super::*;
use crate::ids::ActorId;
use crate::proto::task::{ActorCall, LostCalls, TaskKind};

/// An actor built on a fresh one-CPU node: the dispatcher, the actor, its
/// worker.
pub(super) fn alive(restarts: u32, retries: u32) -> (Dispatcher, ActorId, WorkerId, JobId) {
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let actor = ActorId::random();
    let create = actor_create(actor, restarts, retries);
    let job = create.job_id;
    let w = started(&d.submit(create, Owner::Local(1)))[0];
    d.worker_ready(w);
    d.task_done(w, crate::ids::TaskId(actor.0), Outcome::Inline(vec![]));
    (d, actor, w, job)
}

pub(super) fn call(job: JobId, actor: ActorId) -> TaskSpec {
    let mut c = task(job, 0, 0);
    c.kind = TaskKind::ActorCall(ActorCall {
        actor_id: actor,
        caller: crate::ids::HandleId::random(),
        seq: 0,
    });
    c
}

pub(super) fn lost(actor: ActorId, restarts: u32, calls: Vec<TaskSpec>) -> LostCalls {
    LostCalls {
        actor_id: actor,
        restarts,
        calls,
    }
}

pub(super) fn signal9() -> Failure {
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

pub(super) fn died_detail(o: &Outcome) -> String {
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
