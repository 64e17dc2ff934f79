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
    let a = d.return_lease(first);
    assert_eq!(answer_to(&a, second), Some(Some(w)), "{a:?}");
    assert_eq!(d.stats().queued, 0);
    // Owner 1 now holds none: it waits its turn, and owner 2's lease is
    // revoked for it.
    let (again, a) = request(&mut d, job, Owner::Local(1));
    assert_eq!(answer_to(&a, again), None);
    assert_eq!(revoked(&a), vec![second]);
    assert_eq!(answer_to(&d.return_lease(second), again), Some(Some(w)));
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
    let a = d.return_lease(lease);
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
    assert_eq!(answer_to(&d.return_lease(lease), req), None);
    // A shape this node can never hold is declined at once.
    let mut big = task(job, 8, 0);
    big.function = LEASE_METHOD.into();
    let id = big.task_id;
    assert_eq!(answer_to(&d.lease(big, Owner::Local(4)), id), Some(None));
}
