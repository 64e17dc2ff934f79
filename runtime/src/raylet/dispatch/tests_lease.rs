//! Worker leases (L-1..L-6 and L-8 in `lease.rs`; L-7 in `tests_lease_queue.rs`).

use super::bundle_pause::LEASE_PAUSE;
use super::lease::FLUSH_HOLD;
use super::tests::{node, replies, started, task};
use super::*;
use crate::ids::TaskId;
use std::time::{Duration, Instant};

/// A one-CPU node with one idle worker of `job` (it ran one task).
fn idle_worker(job: JobId) -> (Dispatcher, WorkerId) {
    idle_worker_on(node(1), job)
}

/// A node with `res` (one CPU at least) and one idle worker of `job`.
pub(super) fn idle_worker_on(res: NodeResources, job: JobId) -> (Dispatcher, WorkerId) {
    let mut d = Dispatcher::new(NodeId::random(), res);
    let t = task(job, 1, 0);
    let w = started(&d.submit(t.clone(), Owner::Local(1)))[0];
    d.worker_ready(w);
    d.task_done(w, t.task_id, Outcome::Inline(vec![]));
    (d, w)
}

/// The shape of a lease of a one-CPU worker of `job`.
fn lease_shape(job: JobId) -> TaskSpec {
    let mut shape = task(job, 1, 0);
    shape.function = LEASE_METHOD.into();
    shape
}

/// Whether `a` declines `lease` (answers it with no worker).
fn declines(a: &[Action], lease: TaskId) -> bool {
    a.iter().any(|x| matches!(x, Action::Reply { task_id, outcome: Outcome::Inline(b), .. } if *task_id == lease && rkyv::from_bytes::<Option<u64>, rkyv::rancor::Error>(b).unwrap().is_none()))
}

/// Asks for a lease of a one-CPU worker; the answer.
pub(super) fn ask(d: &mut Dispatcher, job: JobId, owner: Owner) -> (TaskId, Option<WorkerId>) {
    let shape = lease_shape(job);
    let lease = shape.task_id;
    let a = d.lease(shape, owner);
    let granted = match replies(&a).as_slice() {
        [Outcome::Inline(b)] => rkyv::from_bytes::<Option<u64>, rkyv::rancor::Error>(b).unwrap(),
        other => panic!("one answer expected: {other:?}"),
    };
    (lease, granted)
}

fn signal9() -> Failure {
    Failure::WorkerDied {
        node: NodeId::random(),
        detail: "signal 9 (SIGKILL)".into(),
    }
}

#[test]
fn l1_declined_without_room_or_where_no_lease_may_be_had() {
    let job = JobId::random();
    let (mut d, _) = idle_worker(job);
    let mut gpu = task(job, 0, 0);
    gpu.resources = crate::proto::common::Resources::from(
        &ResourceSet::new().with(prism_scheduler::GPU, Quantity::whole(1)),
    );
    assert!(
        matches!(replies(&d.lease(gpu, Owner::Local(1))).as_slice(), [Outcome::Inline(b)] if rkyv::from_bytes::<Option<u64>, rkyv::rancor::Error>(b).unwrap().is_none()),
        "GPU shapes go through the raylet"
    );
    d.set_draining(Some("test".into()));
    assert_eq!(ask(&mut d, job, Owner::Local(1)).1, None, "a draining node");
}

#[test]
fn l8_a_lease_with_no_idle_worker_of_its_job_starts_one_and_is_answered_when_ready() {
    let job = JobId::random();
    // Another job's idle worker is not lent: one starts for this job.
    let (mut d, theirs) = idle_worker(JobId::random());
    let shape = lease_shape(job);
    let lease = shape.task_id;
    let a = d.lease(shape, Owner::Local(1));
    let w = started(&a)[0];
    assert_ne!(w, theirs);
    assert!(replies(&a).is_empty(), "answered once ready: {a:?}");
    // Work waiting meanwhile does not revoke it before its answer...
    let t = task(job, 1, 0);
    assert!(!d
        .submit(t, Owner::Local(2))
        .iter()
        .any(|x| matches!(x, Action::RevokeLease { .. })));
    // ...but right after it.
    let a = d.worker_ready(w);
    let granted = a.iter().position(|x| matches!(x, Action::Reply { task_id, outcome: Outcome::Inline(_), .. } if *task_id == lease));
    let revoked = a
        .iter()
        .position(|x| matches!(x, Action::RevokeLease { lease: l, .. } if *l == lease));
    assert!(
        matches!((granted, revoked), (Some(g), Some(r)) if g < r),
        "{a:?}"
    );
    assert!(
        !a.iter().any(|x| matches!(x, Action::Execute { .. })),
        "{a:?}"
    );
    // A worker started for a lease that dies first declines it.
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let shape = lease_shape(job);
    let lease = shape.task_id;
    let w = started(&d.lease(shape, Owner::Local(1)))[0];
    let a = d.worker_died(w, signal9());
    assert!(declines(&a, lease), "{a:?}");
    assert_eq!(d.stats().running, 0, "its CPU is free");
}

#[test]
fn l1_l2_l3_a_lease_holds_its_cpu_until_returned_and_is_revoked_for_others() {
    let job = JobId::random();
    let (mut d, w) = idle_worker(job);
    let (lease, granted) = ask(&mut d, job, Owner::Local(1));
    assert_eq!(granted, Some(w));
    assert_eq!(ask(&mut d, job, Owner::Local(1)).1, None, "the CPU is held");
    // Another owner's task waits for the CPU: the lease is revoked, once.
    let t = task(job, 1, 0);
    let a = d.submit(t.clone(), Owner::Local(2));
    assert_eq!(
        a,
        vec![Action::RevokeLease {
            owner: Owner::Local(1),
            lease
        }]
    );
    assert!(
        !d.submit(task(job, 1, 0), Owner::Local(2))
            .iter()
            .any(|x| matches!(x, Action::RevokeLease { .. })),
        "revoked once"
    );
    // Work is queued: another owner's request waits its turn (L-7).
    let shape = lease_shape(job);
    assert!(replies(&d.lease(shape, Owner::Local(3))).is_empty());
    let a = d.return_lease(lease, Owner::Local(1));
    assert!(
        a.iter().any(|x| matches!(x, Action::Execute { worker, task, .. } if *worker == w && task.task_id == t.task_id)),
        "the returned worker and its CPU run the waiting task: {a:?}"
    );
    assert!(
        d.return_lease(lease, Owner::Local(1)).is_empty(),
        "returned once"
    );
}

#[test]
fn l4_tasks_lost_with_a_leased_worker_retry_or_fail_with_its_death() {
    let job = JobId::random();
    let (mut d, w) = idle_worker(job);
    let (lease, _) = ask(&mut d, job, Owner::Local(1));
    let (retried, failed) = (task(job, 1, 1), task(job, 1, 0));
    let a = d.lease_lost(
        lease,
        vec![retried.clone(), failed.clone()],
        Owner::Local(1),
    );
    assert_eq!(a, vec![Action::Kill { worker: w }], "answered at its death");
    let a = d.worker_died(w, signal9());
    match replies(&a).as_slice() {
        [Outcome::Failed(Failure::WorkerDied { detail, .. })] => {
            assert!(detail.contains("signal 9"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(started(&a).len(), 1, "the retry starts a worker: {a:?}");
    // A loss reported after the death is answered at once, with its cause.
    let (mut d, w) = idle_worker(job);
    let (lease, _) = ask(&mut d, job, Owner::Local(1));
    d.worker_died(w, signal9());
    let a = d.lease_lost(lease, vec![task(job, 1, 0)], Owner::Local(1));
    assert!(
        matches!(replies(&a).as_slice(), [Outcome::Failed(Failure::WorkerDied { detail, .. })] if detail.contains("signal 9")),
        "{a:?}"
    );
    assert_eq!(d.stats().running, 0, "the lease's CPU is free");
    // Another connection naming a live lease does not end it.
    let (mut d, _) = idle_worker(job);
    let (lease, _) = ask(&mut d, job, Owner::Local(1));
    let a = d.lease_lost(lease, vec![task(job, 1, 0)], Owner::Local(2));
    assert!(
        !a.iter().any(|x| matches!(x, Action::Kill { .. })),
        "no kill on another's word: {a:?}"
    );
}

#[test]
fn l5_a_gone_owner_s_lease_ends_with_its_worker() {
    let job = JobId::random();
    let (mut d, w) = idle_worker(job);
    ask(&mut d, job, Owner::Local(1));
    let a = d.owner_gone(Some(Owner::Local(1)), None);
    assert!(a.contains(&Action::Kill { worker: w }), "{a:?}");
    d.worker_died(w, signal9());
    assert_eq!(d.stats().running, 0);
    assert!(
        !started(&d.submit(task(job, 1, 0), Owner::Local(2))).is_empty(),
        "its CPU serves others"
    );
}

#[test]
fn l6_a_task_lost_on_a_lease_is_cancelled_before_its_worker_s_death() {
    let job = JobId::random();
    let (mut d, w) = idle_worker(job);
    let (lease, _) = ask(&mut d, job, Owner::Local(1));
    let (cancelled, kept) = (task(job, 1, 1), task(job, 1, 1));
    d.lease_lost(
        lease,
        vec![cancelled.clone(), kept.clone()],
        Owner::Local(1),
    );
    let a = d.cancel(cancelled.task_id, false);
    assert!(
        matches!(
            replies(&a).as_slice(),
            [Outcome::Failed(Failure::Cancelled)]
        ),
        "{a:?}"
    );
    // At the death only the other one runs again.
    let a = d.worker_died(w, signal9());
    assert!(replies(&a).is_empty(), "{a:?}");
    let started_ids: Vec<TaskId> = a
        .iter()
        .filter_map(|x| match x {
            Action::Execute { task, .. } => Some(task.task_id),
            _ => None,
        })
        .collect();
    assert!(!started_ids.contains(&cancelled.task_id), "{a:?}");
    assert_eq!(
        d.stats().queued + d.stats().running,
        1,
        "only {kept:?} waits"
    );
}

#[test]
fn l3_a_bundle_that_does_not_fit_revokes_the_leases() {
    let job = JobId::random();
    let (mut d, _) = idle_worker(job);
    let (lease, _) = ask(&mut d, job, Owner::Local(1));
    let pg = crate::ids::PlacementGroupId::random();
    let cpu = ResourceSet::new().with(CPU, Quantity::whole(1));
    assert!(d.prepare_bundles(pg, vec![(0, cpu.clone())], true).is_err());
    let two = ResourceSet::new().with(CPU, Quantity::whole(2));
    assert!(
        d.bundle_refused(pg, &[(0, two)], Instant::now()).is_empty(),
        "a bundle the leases could not make fit revokes nothing"
    );
    assert_eq!(
        d.bundle_refused(pg, &[(0, cpu.clone())], Instant::now()),
        vec![Action::RevokeLease {
            owner: Owner::Local(1),
            lease
        }]
    );
    assert!(
        d.bundle_refused(pg, &[(0, cpu.clone())], Instant::now())
            .is_empty(),
        "revoked once"
    );
    assert_eq!(
        d.leased(),
        ResourceSet::new(),
        "a revoked lease is not offered"
    );
    d.return_lease(lease, Owner::Local(1));
    // The owner asks again at once: declined while the bundle waits.
    assert_eq!(
        ask(&mut d, job, Owner::Local(1)).1,
        None,
        "paused for the bundle"
    );
    assert!(
        d.prepare_bundles(pg, vec![(0, cpu)], true).is_ok(),
        "the head's next try finds the CPU the lease held"
    );
}

#[test]
fn l3_the_pause_for_a_bundle_ends_after_its_time() {
    let job = JobId::random();
    let (mut d, _) = idle_worker(job);
    let (lease, _) = ask(&mut d, job, Owner::Local(1));
    let cpu = ResourceSet::new().with(CPU, Quantity::whole(1));
    assert_eq!(
        d.leased(),
        cpu,
        "what the lease holds is offered to bundles"
    );
    let t0 = Instant::now();
    assert_eq!(
        d.bundle_refused(crate::ids::PlacementGroupId::random(), &[(0, cpu)], t0)
            .len(),
        1
    );
    d.return_lease(lease, Owner::Local(1));
    for ms in [0, 500, 1000, 1500, 1999] {
        d.tick(t0 + Duration::from_millis(ms));
        assert_eq!(ask(&mut d, job, Owner::Local(1)).1, None, "at {ms} ms");
    }
    d.tick(t0 + LEASE_PAUSE);
    assert!(
        ask(&mut d, job, Owner::Local(1)).1.is_some(),
        "granted again"
    );
}

#[test]
fn te_3_a_worker_whose_lease_ended_is_trimmed_only_after_a_while() {
    let job = JobId::random();
    let (mut d, w) = idle_worker(job);
    let (lease, got) = ask(&mut d, job, Owner::Local(1));
    assert_eq!(got, Some(w));
    // An older idle worker of the job beside it: one too many for one CPU,
    // and the leased one is the newest, the one trimmed.
    d.workers.insert(
        0,
        Worker {
            job,
            gpus: vec![],
            state: WorkerState::Idle,
            actor: None,
            fresh: None,
            node: d.me,
        },
    );
    let kills = |a: &[Action], of: Option<WorkerId>| {
        a.iter()
            .filter(|a| matches!(a, Action::Kill { worker } if of.is_none_or(|w| w == *worker)))
            .count()
    };
    let t0 = Instant::now();
    d.tick(t0);
    assert_eq!(
        kills(&d.return_lease(lease, Owner::Local(1)), None),
        0,
        "kept while it reports"
    );
    assert_eq!(kills(&d.tick(t0 + FLUSH_HOLD / 2), None), 0, "still kept");
    assert_eq!(
        kills(&d.tick(t0 + FLUSH_HOLD), Some(w)),
        1,
        "trimmed once its time is over"
    );
}

#[test]
fn l3_what_a_refused_bundle_waits_for_is_kept_from_new_tasks() {
    let job = JobId::random();
    let (mut d, w) = idle_worker(job);
    let executes = |a: &[Action]| {
        a.iter()
            .filter(|a| matches!(a, Action::Execute { .. }))
            .count()
    };
    let running = task(job, 1, 0);
    assert_eq!(executes(&d.submit(running.clone(), Owner::Local(1))), 1);
    let pg = crate::ids::PlacementGroupId::random();
    let cpu = ResourceSet::new().with(CPU, Quantity::whole(1));
    assert!(d.prepare_bundles(pg, vec![(0, cpu.clone())], true).is_err());
    let t0 = Instant::now();
    assert!(
        d.bundle_refused(pg, &[(0, cpu.clone())], t0).is_empty(),
        "no lease to revoke"
    );
    // The running task ends: the next one does not take the CPU back.
    let next = task(job, 1, 0);
    assert_eq!(executes(&d.submit(next.clone(), Owner::Local(1))), 0);
    assert_eq!(
        executes(&d.task_done(w, running.task_id, Outcome::Inline(vec![]))),
        0,
        "kept for the bundle"
    );
    assert!(
        d.prepare_bundles(pg, vec![(0, cpu.clone())], false).is_ok(),
        "the head's next try finds it"
    );
    // Without the head's try, the CPU goes back to tasks after the pause.
    let (mut d, w) = idle_worker(job);
    let running = task(job, 1, 0);
    d.submit(running.clone(), Owner::Local(1));
    d.bundle_refused(pg, &[(0, cpu)], t0);
    d.submit(next.clone(), Owner::Local(1));
    d.task_done(w, running.task_id, Outcome::Inline(vec![]));
    assert_eq!(executes(&d.tick(t0 + Duration::from_secs(1))), 0);
    assert_eq!(
        executes(&d.tick(t0 + LEASE_PAUSE)),
        1,
        "the waiting task runs once the pause is over"
    );
}

/// The raylet registered again under a new id: a lease of a worker
/// started under the earlier one is revoked (its worker reports that id),
/// and the worker goes once its lease ended and its events are in.
#[test]
fn a_lease_of_a_worker_of_an_earlier_id_is_revoked() {
    let job = JobId::random();
    let (mut d, w) = idle_worker(job);
    let (lease, got) = ask(&mut d, job, Owner::Local(1));
    assert_eq!(got, Some(w));
    let a = d.set_node_id(NodeId::random());
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::RevokeLease { lease: l, .. } if *l == lease)),
        "{a:?}"
    );
    // Nothing to do for the same id again.
    assert!(d.set_node_id(d.me).is_empty());
    d.tick(Instant::now());
    let a = d.return_lease(lease, Owner::Local(1));
    let mut killed = a.contains(&Action::Kill { worker: w });
    assert!(!killed, "kept until its events are in (TE-3): {a:?}");
    let later = Instant::now() + FLUSH_HOLD + Duration::from_secs(1);
    for i in 0..10 {
        let a = d.tick(later + Duration::from_millis(i * 100));
        killed |= a.contains(&Action::Kill { worker: w });
    }
    assert!(killed, "the worker of the earlier id went");
    assert_eq!(d.stats().workers, 0);
}

#[test]
fn a_worker_started_under_an_earlier_id_runs_nothing_when_it_comes_up() {
    let job = JobId::random();
    // A task's worker comes up after the node registered again: it goes,
    // and the task starts another worker, no attempt spent.
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let t = task(job, 1, 0);
    let w = started(&d.submit(t.clone(), Owner::Local(1)))[0];
    d.set_node_id(NodeId::random());
    let a = d.worker_ready(w);
    assert!(a.contains(&Action::Kill { worker: w }), "{a:?}");
    assert!(
        !a.iter().any(|x| matches!(x, Action::Execute { .. })),
        "{a:?}"
    );
    let w2 = started(&a)[0];
    let a = d.worker_ready(w2);
    assert!(
        a.iter().any(|x| matches!(x, Action::Execute { worker, task, .. } if *worker == w2 && task.task_id == t.task_id && task.attempt == 0)),
        "{a:?}"
    );
    // A lease's worker: the lease is declined, its CPU free again.
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let shape = lease_shape(job);
    let lease = shape.task_id;
    let w = started(&d.lease(shape, Owner::Local(1)))[0];
    d.set_node_id(NodeId::random());
    let a = d.worker_ready(w);
    assert!(a.contains(&Action::Kill { worker: w }), "{a:?}");
    assert!(declines(&a, lease), "{a:?}");
    assert_eq!(d.stats().running, 0);
    assert_eq!(d.available().get(CPU), Quantity::ONE);
}

#[test]
fn an_actor_worker_started_under_an_earlier_id_is_replaced_before_its_constructor_runs() {
    use super::tests::actor_create;
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let create = actor_create(crate::ids::ActorId::random(), 0, 0);
    let w = started(&d.submit(create.clone(), Owner::Local(1)))[0];
    let new = NodeId::random();
    d.set_node_id(new);
    let a = d.worker_ready(w);
    assert!(a.contains(&Action::Kill { worker: w }), "{a:?}");
    let fresh = match a.as_slice() {
        [.., Action::Start { worker, node, .. }] if *node == new => *worker,
        other => panic!("a worker of the new id starts: {other:?}"),
    };
    // The killed one's exit changes nothing; the fresh one runs the
    // constructor.
    assert!(replies(&d.worker_died(w, signal9())).is_empty());
    let a = d.worker_ready(fresh);
    assert!(
        a.iter().any(|x| matches!(x, Action::Execute { worker, task, .. } if *worker == fresh && task.task_id == create.task_id)),
        "{a:?}"
    );
}
