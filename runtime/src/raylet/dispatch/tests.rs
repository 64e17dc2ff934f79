//! Dispatcher tests, named after the invariants in the module docs.

use super::*;
use crate::ids::ActorId;
use crate::proto::common::Resources;
use crate::proto::task::{TaskKind, WireStrategy};
use std::time::Duration;

pub(super) fn node(cpus: u32) -> NodeResources {
    NodeResources::new(ResourceSet::new().with(CPU, Quantity::whole(cpus)))
}

pub(super) fn task(job: JobId, cpus: u32, retries: u32) -> TaskSpec {
    let mut t = TaskSpec::new(crate::ids::TaskId::random(), job, "f", "f", TaskKind::Task);
    t.resources = Resources::from(&ResourceSet::new().with(CPU, Quantity::whole(cpus)));
    t.max_retries = retries;
    t
}

/// The creation of `actor` (one call at a time, no resources).
pub(super) fn actor_create(actor: ActorId, max_restarts: u32, max_task_retries: u32) -> TaskSpec {
    use crate::proto::task::{ActorCreate, ArgSpec};
    let mut create = task(JobId::random(), 0, 0);
    create.task_id = crate::ids::TaskId(actor.0);
    create.args = vec![ArgSpec::Inline(vec![])];
    create.kind = TaskKind::CreateActor(ActorCreate {
        actor_id: actor,
        name: None,
        namespace: "default".into(),
        detached: false,
        max_restarts,
        max_task_retries,
        max_concurrency: 1,
        restarts: 0,
    });
    create
}

pub(super) fn started(a: &[Action]) -> Vec<WorkerId> {
    a.iter()
        .filter_map(|a| match a {
            Action::Start { worker, .. } => Some(*worker),
            _ => None,
        })
        .collect()
}

pub(super) fn replies(a: &[Action]) -> Vec<Outcome> {
    a.iter()
        .filter_map(|a| match a {
            Action::Reply { outcome, .. } => Some(outcome.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn d1_resources_held_from_dispatch_to_end_and_released_once() {
    let me = NodeId::random();
    let mut d = Dispatcher::new(me, node(1));
    let job = JobId::random();
    let t = task(job, 1, 0);
    let a = d.submit(t.clone(), Owner::Local(1));
    let w = started(&a)[0];
    assert!(d.available().get(CPU).is_zero());
    let a = d.worker_ready(w);
    assert!(matches!(&a[0], Action::Execute { worker, .. } if *worker == w));
    let a = d.task_done(w, t.task_id, Outcome::Inline(vec![1]));
    assert_eq!(replies(&a), vec![Outcome::Inline(vec![1])]);
    assert_eq!(d.available().get(CPU), Quantity::ONE);
    // A second Done for the same task changes nothing.
    assert!(d
        .task_done(w, t.task_id, Outcome::Inline(vec![1]))
        .is_empty());
    assert_eq!(d.available().get(CPU), Quantity::ONE);
}

#[test]
fn d2_d3_queued_work_reuses_the_idle_worker_and_every_task_gets_one_reply() {
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let job = JobId::random();
    let (t1, t2) = (task(job, 1, 0), task(job, 1, 0));
    let w = started(&d.submit(t1.clone(), Owner::Local(1)))[0];
    assert!(
        d.submit(t2.clone(), Owner::Local(1)).is_empty(),
        "no CPU free: t2 waits"
    );
    assert_eq!(d.stats().queued, 1);
    d.worker_ready(w);
    let a = d.task_done(w, t1.task_id, Outcome::Inline(vec![]));
    assert!(started(&a).is_empty(), "the idle worker is reused");
    assert!(a.iter().any(|x| matches!(x, Action::Execute { worker, task, .. } if *worker == w && task.task_id == t2.task_id)));
    let a = d.task_done(w, t2.task_id, Outcome::Inline(vec![]));
    assert_eq!(replies(&a).len(), 1);
    // A worker of another job is never used (D-3).
    let other = task(JobId::random(), 1, 0);
    assert_eq!(started(&d.submit(other, Owner::Local(2))).len(), 1);
}

#[test]
fn d4_worker_death_retries_then_fails_with_the_cause() {
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let t = task(JobId::random(), 1, 1);
    let w = started(&d.submit(t, Owner::Local(1)))[0];
    d.worker_ready(w);
    let died = |n| Failure::WorkerDied {
        node: n,
        detail: "signal 9 (SIGKILL)".into(),
    };
    let n = NodeId::random();
    let a = d.worker_died(w, died(n));
    assert!(replies(&a).is_empty(), "retried");
    let w2 = started(&a)[0];
    d.worker_ready(w2);
    let a = d.worker_died(w2, died(n));
    assert_eq!(replies(&a), vec![Outcome::Failed(died(n))]);
    assert_eq!(d.available().get(CPU), Quantity::ONE);
}

#[test]
fn cancel_queued_and_force_cancel_running() {
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let job = JobId::random();
    let (t1, t2) = (task(job, 1, 3), task(job, 1, 3));
    let w = started(&d.submit(t1.clone(), Owner::Local(1)))[0];
    d.worker_ready(w);
    d.submit(t2.clone(), Owner::Local(1));
    assert_eq!(
        replies(&d.cancel(t2.task_id, false)),
        vec![Outcome::Failed(Failure::Cancelled)]
    );
    let a = d.cancel(t1.task_id, true);
    assert!(a.contains(&Action::Kill { worker: w }));
    let n = NodeId::random();
    let a = d.worker_died(
        w,
        Failure::WorkerDied {
            node: n,
            detail: "signal 9".into(),
        },
    );
    assert!(
        replies(&a).is_empty(),
        "a cancelled task is neither retried nor answered twice"
    );
    assert_eq!(d.available().get(CPU), Quantity::ONE);
}

#[test]
fn infeasible_names_the_resource() {
    let mut d = Dispatcher::new(NodeId::random(), node(2));
    let mut t = task(JobId::random(), 1, 0);
    t.resources = Resources::from(&ResourceSet::new().with("unicorn", Quantity::ONE));
    match &replies(&d.submit(t, Owner::Local(1)))[..] {
        [Outcome::Failed(Failure::Infeasible { reason })] => {
            assert!(reason.contains("unicorn"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

fn unicorn_task() -> TaskSpec {
    static JOB: std::sync::OnceLock<JobId> = std::sync::OnceLock::new();
    let mut t = task(*JOB.get_or_init(JobId::random), 1, 0);
    t.resources = Resources::from(&ResourceSet::new().with("unicorn", Quantity::ONE));
    t
}

fn count<F: Fn(&Action) -> bool>(a: &[Action], f: F) -> usize {
    a.iter().filter(|a| f(a)).count()
}

#[test]
fn d5_infeasible_work_waits_then_fails_after_the_timeout() {
    let t0 = std::time::Instant::now();
    let mut d =
        Dispatcher::new(NodeId::random(), node(2)).with_infeasible_timeout(Duration::from_secs(10));
    let _ = d.tick(t0);
    let t = unicorn_task();
    let a = d.submit(t.clone(), Owner::Local(1));
    assert!(replies(&a).is_empty(), "it waits: {a:?}");
    assert_eq!(
        count(
            &a,
            |a| matches!(a, Action::Warn { message, .. } if message.contains("unicorn"))
        ),
        1
    );
    assert_eq!(
        count(&a, |a| matches!(a, Action::RefreshView)),
        1,
        "a fresh view is asked for"
    );
    let demand = d.demand();
    assert!(
        demand
            .iter()
            .any(|(_, n, why)| *n == 1 && why.as_deref().is_some_and(|w| w.contains("unicorn"))),
        "reported as infeasible demand: {demand:?}"
    );
    assert_eq!(
        d.task_rows()[0].state,
        crate::proto::state::TaskState::Infeasible
    );
    // A second one of the same shape: no second warning.
    let a = d.submit(unicorn_task(), Owner::Local(1));
    assert_eq!(count(&a, |a| matches!(a, Action::Warn { .. })), 0);
    assert!(replies(&d.tick(t0 + Duration::from_millis(9_999))).is_empty());
    let a = d.tick(t0 + Duration::from_secs(10));
    let r = replies(&a);
    assert_eq!(r.len(), 2, "both fail at the timeout: {a:?}");
    match &r[0] {
        Outcome::Failed(Failure::Infeasible { reason }) => {
            assert!(
                reason.contains("unicorn") && reason.contains("waited 10 s"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(d.demand().is_empty(), "nothing left waiting");
}

#[test]
fn d5_parked_work_goes_to_a_node_that_joins() {
    let me = NodeId::random();
    let mut d = Dispatcher::new(me, node(2)).with_infeasible_timeout(Duration::from_secs(60));
    let t = unicorn_task();
    assert!(replies(&d.submit(t.clone(), Owner::Local(7))).is_empty());
    // A view without it changes nothing.
    let a = d.set_peers_and_pump(vec![(NodeId::random(), node(4))]);
    assert!(a.is_empty(), "{a:?}");
    let joined = NodeId::random();
    let unicorns = NodeResources::new(
        ResourceSet::new()
            .with(CPU, Quantity::whole(1))
            .with("unicorn", Quantity::whole(4)),
    );
    let a = d.set_peers_and_pump(vec![(joined, unicorns)]);
    match &a[..] {
        [Action::Forward { node, owner, task }] => {
            assert_eq!(
                (*node, *owner, task.task_id),
                (joined, Owner::Local(7), t.task_id)
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(d.demand().is_empty());
}

#[test]
fn d5_fail_fast_and_zero_timeout_fail_at_once_and_cancel_reaches_parked_work() {
    let mut d =
        Dispatcher::new(NodeId::random(), node(2)).with_infeasible_timeout(Duration::from_secs(60));
    let mut t = unicorn_task();
    t.fail_if_infeasible = true;
    assert!(matches!(
        &replies(&d.submit(t, Owner::Local(1)))[..],
        [Outcome::Failed(Failure::Infeasible { .. })]
    ));
    let t = unicorn_task();
    assert!(replies(&d.submit(t.clone(), Owner::Local(1))).is_empty());
    assert_eq!(
        replies(&d.cancel(t.task_id, false)),
        vec![Outcome::Failed(Failure::Cancelled)]
    );
    assert!(d.demand().is_empty());
    // The default (no timeout set): at once.
    let mut d = Dispatcher::new(NodeId::random(), node(2));
    assert_eq!(replies(&d.submit(unicorn_task(), Owner::Local(1))).len(), 1);
}

#[test]
fn spills_back_to_a_peer_with_room_when_full() {
    let me = NodeId::random();
    let peer = NodeId::random();
    let mut d = Dispatcher::new(me, node(1));
    d.set_peers(vec![(peer, node(4))]);
    let job = JobId::random();
    let mut forwarded = 0;
    for _ in 0..3 {
        for a in d.submit(task(job, 1, 0), Owner::Local(1)) {
            if let Action::Forward { node, task, .. } = a {
                assert_eq!(node, peer);
                assert!(
                    task.spilled,
                    "a spilled task is marked so the peer keeps it"
                );
                forwarded += 1;
            }
        }
    }
    assert!(forwarded >= 2, "{forwarded}");
    // A spilled task stays where it lands, even when that node is busy.
    let mut d2 = Dispatcher::new(peer, node(1));
    d2.set_peers(vec![(me, node(8))]);
    let mut t = task(job, 1, 0);
    t.spilled = true;
    d2.submit(t.clone(), Owner::Local(1));
    t.task_id = crate::ids::TaskId::random();
    let a = d2.submit(t, Owner::Local(1));
    assert!(a.iter().all(|x| !matches!(x, Action::Forward { .. })));
}

#[test]
fn a_blocked_task_lends_its_cpu() {
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let job = JobId::random();
    let (t1, t2) = (task(job, 1, 0), task(job, 1, 0));
    let w = started(&d.submit(t1, Owner::Local(1)))[0];
    d.worker_ready(w);
    d.submit(t2, Owner::Local(1));
    let a = d.worker_blocked(w, true);
    assert_eq!(
        started(&a).len(),
        1,
        "the queued task runs while the first blocks"
    );
}

#[test]
fn a_finished_job_loses_its_workers() {
    let mut d = Dispatcher::new(NodeId::random(), node(2));
    let job = JobId::random();
    let t = task(job, 1, 3);
    let w = started(&d.submit(t, Owner::Local(7)))[0];
    d.worker_ready(w);
    let a = d.owner_gone(Some(Owner::Local(7)), Some(job));
    assert!(a.contains(&Action::Kill { worker: w }));
    assert!(replies(&a).is_empty());
    assert_eq!(d.stats().workers, 0);
    assert_eq!(d.available().get(CPU), Quantity::whole(2));
}

#[test]
fn an_ended_job_retries_nothing_of_its_own() {
    let mut d = Dispatcher::new(NodeId::random(), node(2));
    let job = JobId::random();
    // A nested task: owned by a worker's connection (7), not the driver (1).
    let t = task(job, 1, 3);
    let w = started(&d.submit(t, Owner::Local(7)))[0];
    d.worker_ready(w);
    let a = d.owner_gone(Some(Owner::Local(1)), Some(job));
    assert!(a.contains(&Action::Kill { worker: w }));
    assert!(
        started(&a).is_empty(),
        "no retry of a dead job's task: {a:?}"
    );
    assert_eq!(d.stats().queued, 0);
    assert_eq!(d.available().get(CPU), Quantity::whole(2));
}

pub(super) fn in_bundle(
    job: JobId,
    pg: crate::ids::PlacementGroupId,
    index: u32,
    me: NodeId,
) -> TaskSpec {
    let mut t = task(job, 1, 0);
    t.strategy = WireStrategy::Bundle {
        pg,
        index,
        node: me,
    };
    t
}

#[test]
fn b1_b2_bundles_hold_node_resources_and_run_only_when_committed() {
    let me = NodeId::random();
    let mut d = Dispatcher::new(me, node(3));
    let pg = crate::ids::PlacementGroupId::random();
    let two = ResourceSet::new().with(CPU, Quantity::whole(2));
    d.prepare_bundles(pg, vec![(0, two.clone())], false)
        .unwrap();
    assert_eq!(
        d.available().get(CPU),
        Quantity::ONE,
        "B-1: held at prepare"
    );
    // All or none: two more bundles of 2 CPUs do not fit; nothing changes.
    let e = d
        .prepare_bundles(pg, vec![(1, two.clone()), (2, two.clone())], false)
        .unwrap_err();
    assert!(e.contains("does not fit"), "{e}");
    assert_eq!(d.available().get(CPU), Quantity::ONE);
    // B-2: not committed yet, so a task in it is refused with the reason.
    let job = JobId::random();
    let a = d.submit(in_bundle(job, pg, 0, me), Owner::Local(1));
    assert!(matches!(
        &replies(&a)[..],
        [Outcome::Failed(Failure::PlacementGroupGone { .. })]
    ));
    d.commit_bundles(pg).unwrap();
    // Two 1-CPU tasks run in the bundle; a third waits; the node's own
    // free CPU is untouched.
    let t1 = in_bundle(job, pg, 0, me);
    let w1 = started(&d.submit(t1.clone(), Owner::Local(1)))[0];
    assert_eq!(
        started(&d.submit(in_bundle(job, pg, 0, me), Owner::Local(1))).len(),
        1
    );
    let a = d.submit(in_bundle(job, pg, 0, me), Owner::Local(1));
    assert!(started(&a).is_empty() && replies(&a).is_empty(), "waits");
    assert_eq!(d.available().get(CPU), Quantity::ONE);
    d.worker_ready(w1);
    d.task_done(w1, t1.task_id, Outcome::Inline(vec![]));
    assert_eq!(d.stats().queued, 0, "the waiting task ran when one ended");
    assert_eq!(d.stats().running, 2, "and runs beside the other one");
}

#[test]
fn b3_return_kills_what_runs_fails_what_waits_and_frees_the_node() {
    let me = NodeId::random();
    let mut d = Dispatcher::new(me, node(2));
    let pg = crate::ids::PlacementGroupId::random();
    let one = ResourceSet::new().with(CPU, Quantity::ONE);
    d.prepare_bundles(pg, vec![(0, one)], true).unwrap();
    let job = JobId::random();
    let w = started(&d.submit(in_bundle(job, pg, 0, me), Owner::Local(1)))[0];
    d.worker_ready(w);
    d.submit(in_bundle(job, pg, 0, me), Owner::Local(2));
    let a = d.return_bundles(pg, &[], "removed by its owner");
    let failed = replies(&a)
        .iter()
        .filter(|o| matches!(o, Outcome::Failed(Failure::PlacementGroupGone { .. })))
        .count();
    assert_eq!(failed, 2, "the running and the waiting task: {a:?}");
    assert!(a.contains(&Action::Kill { worker: w }));
    assert_eq!(
        d.available().get(CPU),
        Quantity::whole(2),
        "B-1: freed once"
    );
    // The killed worker's death later changes nothing (no double release).
    let a = d.worker_died(w, Failure::Cancelled);
    assert!(replies(&a).is_empty());
    assert_eq!(d.available().get(CPU), Quantity::whole(2));
    assert_eq!(d.bundle_count(), 0);
}

#[test]
fn a_partial_return_keeps_the_other_bundles_of_the_group() {
    let me = NodeId::random();
    let mut d = Dispatcher::new(me, node(3));
    let pg = crate::ids::PlacementGroupId::random();
    let one = ResourceSet::new().with(CPU, Quantity::ONE);
    d.prepare_bundles(pg, vec![(0, one.clone()), (1, one)], true)
        .unwrap();
    assert_eq!(d.available().get(CPU), Quantity::ONE);
    d.return_bundles(pg, &[1], "placement attempt abandoned");
    assert_eq!(d.bundle_count(), 1, "bundle 0 survives");
    assert_eq!(d.available().get(CPU), Quantity::whole(2));
    let w = started(&d.submit(in_bundle(JobId::random(), pg, 0, me), Owner::Local(1)));
    assert_eq!(w.len(), 1, "bundle 0 still runs tasks");
}
