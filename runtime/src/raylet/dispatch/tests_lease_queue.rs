//! Lease requests that wait their turn in the queue (L-7 in `lease.rs`).

use super::tests::{node, task};
use super::tests_lease::{ask, idle_worker_on};
use super::*;
use crate::ids::TaskId;

/// A lease request of `owner` for one CPU of `job`: its id and the answers.
fn request(d: &mut Dispatcher, job: JobId, owner: Owner) -> (TaskId, Vec<Action>) {
    let mut shape = task(job, 1, 0);
    shape.function = LEASE_METHOD.into();
    let id = shape.task_id;
    (id, d.lease(shape, owner))
}

/// The answer to lease request `id` among `a`: `Some(worker or None)`, or
/// `None` when it was not answered.
fn answer_to(a: &[Action], id: TaskId) -> Option<Option<WorkerId>> {
    a.iter().find_map(|x| match x {
        Action::Reply {
            task_id,
            outcome: Outcome::Inline(b),
            ..
        } if *task_id == id => {
            Some(rkyv::from_bytes::<Option<u64>, rkyv::rancor::Error>(b).unwrap())
        }
        _ => None,
    })
}

fn revoked(a: &[Action]) -> Vec<TaskId> {
    a.iter()
        .filter_map(|x| match x {
            Action::RevokeLease { lease, .. } => Some(*lease),
            _ => None,
        })
        .collect()
}

#[test]
fn l7_owners_take_turns_a_waiting_request_revokes_and_is_granted_on_return() {
    let job = JobId::random();
    let (mut d, w) = idle_worker_on(node(1), job);
    let (first, granted) = ask(&mut d, job, Owner::Local(1));
    assert_eq!(granted, Some(w));
    // Owner 2 holds none: its request waits, and the lease is revoked.
    let (second, a) = request(&mut d, job, Owner::Local(2));
    assert_eq!(answer_to(&a, second), None, "it waits: {a:?}");
    assert_eq!(revoked(&a), vec![first]);
    assert_eq!(d.stats().queued, 1);
    // Owner 1, holding one, is declined rather than queued for more.
    let (more, a) = request(&mut d, job, Owner::Local(1));
    assert_eq!(answer_to(&a, more), Some(None));
    // The lease comes back: the waiting request gets its worker.
    let a = d.return_lease(first, Owner::Local(1));
    assert_eq!(answer_to(&a, second), Some(Some(w)), "{a:?}");
    assert_eq!(d.stats().queued, 0);
    // Owner 1 now holds none: it waits its turn, and owner 2's lease is
    // revoked for it.
    let (again, a) = request(&mut d, job, Owner::Local(1));
    assert_eq!(answer_to(&a, again), None);
    assert_eq!(revoked(&a), vec![second]);
    assert_eq!(
        answer_to(&d.return_lease(second, Owner::Local(2)), again),
        Some(Some(w))
    );
}

#[test]
fn l7_a_waiting_request_keeps_its_place_behind_tasks() {
    let job = JobId::random();
    let (mut d, w) = idle_worker_on(node(1), job);
    let (lease, _) = ask(&mut d, job, Owner::Local(1));
    let t = task(job, 1, 0);
    d.submit(t.clone(), Owner::Local(3));
    let (req, a) = request(&mut d, job, Owner::Local(2));
    assert_eq!(answer_to(&a, req), None);
    // The task queued first runs first; the request waits on for the CPU.
    let a = d.return_lease(lease, Owner::Local(1));
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Execute { task, .. } if task.task_id == t.task_id)),
        "{a:?}"
    );
    assert_eq!(answer_to(&a, req), None);
    assert_eq!(
        answer_to(&d.task_done(w, t.task_id, Outcome::Inline(vec![])), req),
        Some(Some(w))
    );
}

#[test]
fn l7_a_waiting_request_is_declined_when_no_lease_can_be_had_here() {
    let job = JobId::random();
    // The node starts draining.
    let (mut d, _) = idle_worker_on(node(1), job);
    ask(&mut d, job, Owner::Local(1));
    let (req, _) = request(&mut d, job, Owner::Local(2));
    let a = d.set_draining(Some("test".into()));
    assert_eq!(answer_to(&a, req), Some(None), "{a:?}");
    assert_eq!(d.stats().queued, 0);
    // A peer has room now: the owner's tasks go there through the raylet.
    let (mut d, _) = idle_worker_on(node(1), job);
    ask(&mut d, job, Owner::Local(1));
    let (req, _) = request(&mut d, job, Owner::Local(2));
    let a = d.set_peers_and_pump(vec![(NodeId::random(), node(4))]);
    assert_eq!(answer_to(&a, req), Some(None), "{a:?}");
    // Its owner goes away: the request goes with it.
    let (mut d, _) = idle_worker_on(node(1), job);
    let (lease, _) = ask(&mut d, job, Owner::Local(1));
    let (req, _) = request(&mut d, job, Owner::Local(2));
    d.owner_gone(Some(Owner::Local(2)), None);
    assert_eq!(d.stats().queued, 0);
    assert_eq!(
        answer_to(&d.return_lease(lease, Owner::Local(1)), req),
        None
    );
    // A shape this node can never hold is declined at once.
    let mut big = task(job, 8, 0);
    big.function = LEASE_METHOD.into();
    let id = big.task_id;
    assert_eq!(answer_to(&d.lease(big, Owner::Local(4)), id), Some(None));
}

/// A lease request of `owner` for `cpus` CPUs that starts a worker (L-8):
/// its id and the worker.
fn starting(d: &mut Dispatcher, job: JobId, cpus: u32, owner: Owner) -> (TaskId, WorkerId) {
    let mut shape = task(job, cpus, 0);
    shape.function = LEASE_METHOD.into();
    let id = shape.task_id;
    let a = d.lease(shape, owner);
    let w = super::tests::started(&a);
    assert_eq!(w.len(), 1, "a worker starts for it: {a:?}");
    (id, w[0])
}

#[test]
fn l8_only_its_own_owner_returns_a_lease_and_only_once_told() {
    let job = JobId::random();
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let (lease, w) = starting(&mut d, job, 1, Owner::Local(1));
    assert!(
        d.return_lease(lease, Owner::Local(1)).is_empty(),
        "not told yet"
    );
    assert_eq!(answer_to(&d.worker_ready(w), lease), Some(Some(w)));
    assert!(d.worker_ready(w).is_empty(), "answered once");
    assert!(
        d.return_lease(lease, Owner::Local(2)).is_empty(),
        "not its own"
    );
    assert_eq!(d.stats().leases_held, 1);
    d.return_lease(lease, Owner::Local(1));
    assert_eq!(d.stats().leases_held, 0);
    assert_eq!(
        d.available().get(CPU),
        Quantity::whole(1),
        "its CPU is back"
    );
}

#[test]
fn l8_a_lease_holding_no_cpu_starts_no_worker() {
    let job = JobId::random();
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let mut shape = task(job, 0, 0);
    shape.function = LEASE_METHOD.into();
    let id = shape.task_id;
    let a = d.lease(shape, Owner::Local(1));
    assert_eq!(answer_to(&a, id), Some(None), "{a:?}");
    assert!(super::tests::started(&a).is_empty());
    // A custom resource it asked for is not kept by the refusal.
    let slot = ResourceSet::new().with("slot", Quantity::whole(1));
    let mut d = Dispatcher::new(NodeId::random(), NodeResources::new(slot.clone()));
    for _ in 0..3 {
        let mut shape = task(job, 0, 0);
        shape.resources = crate::proto::common::Resources::from(&slot);
        shape.function = LEASE_METHOD.into();
        let id = shape.task_id;
        assert_eq!(answer_to(&d.lease(shape, Owner::Local(1)), id), Some(None));
        assert_eq!(d.available().get("slot"), Quantity::whole(1));
    }
}

#[test]
fn l8_a_bundle_s_pause_revokes_a_starting_lease_once_answered() {
    let job = JobId::random();
    let mut d = Dispatcher::new(NodeId::random(), node(1));
    let (lease, w) = starting(&mut d, job, 1, Owner::Local(1));
    let pg = crate::ids::PlacementGroupId::random();
    let cpu = ResourceSet::new().with(CPU, Quantity::whole(1));
    let now = std::time::Instant::now();
    d.tick(now);
    assert!(revoked(&d.bundle_refused(pg, &[(0, cpu)], now)).is_empty());
    let a = d.worker_ready(w);
    assert_eq!(answer_to(&a, lease), Some(Some(w)));
    assert_eq!(revoked(&a), vec![lease], "{a:?}");
}

#[test]
fn l7_the_end_of_its_job_declines_a_waiting_request() {
    let job = JobId::random();
    let (mut d, _) = idle_worker_on(node(1), job);
    ask(&mut d, job, Owner::Local(1));
    // A detached actor of the job (its process lives on) waits its turn.
    let (req, _) = request(&mut d, job, Owner::Local(2));
    let a = d.job_ended(job);
    assert_eq!(answer_to(&a, req), Some(None), "{a:?}");
}

#[test]
fn l7_an_owner_whose_lease_broke_waits_its_turn_again() {
    let job = JobId::random();
    let (mut d, _) = idle_worker_on(node(2), job);
    let (lost, _) = ask(&mut d, job, Owner::Local(1));
    // Another owner's lease holds the other CPU, so no request fits now.
    starting(&mut d, job, 1, Owner::Local(3));
    d.lease_lost(lost, Vec::new(), Owner::Local(1));
    let (req, a) = request(&mut d, job, Owner::Local(1));
    assert_eq!(answer_to(&a, req), None, "queued, not declined: {a:?}");
}
