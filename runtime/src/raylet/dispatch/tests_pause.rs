//! The pause of leases for a refused bundle (BP-1..BP-4 in
//! `bundle_pause.rs`).

use super::bundle_pause::LEASE_PAUSE;
use super::tests::{started, task};
use super::tests_lease::{ask, idle_worker_on};
use super::*;
use crate::ids::{PlacementGroupId, TaskId};
use std::time::{Duration, Instant};

/// A one-CPU node (with `x` if asked) and one idle worker of `job`.
fn idle(job: JobId, x: bool) -> (Dispatcher, WorkerId) {
    let mut res = ResourceSet::new().with(CPU, Quantity::whole(1));
    if x {
        res = res.with("x", Quantity::whole(1));
    }
    idle_worker_on(NodeResources::new(res), job)
}

/// Whether a lease of one CPU is granted now (returned at once if so).
fn leasable(d: &mut Dispatcher, job: JobId) -> bool {
    let (lease, granted) = ask(d, job, Owner::Local(1));
    if granted.is_some() {
        d.return_lease(lease, Owner::Local(1));
    }
    granted.is_some()
}

fn cpu() -> ResourceSet {
    ResourceSet::new().with(CPU, Quantity::whole(1))
}

/// Runs a one-CPU task on `w` to its end around `during`.
fn running(d: &mut Dispatcher, job: JobId, w: WorkerId, during: impl FnOnce(&mut Dispatcher)) {
    let t = task(job, 1, 0);
    d.submit(t.clone(), Owner::Local(1));
    during(d);
    d.task_done(w, t.task_id, Outcome::Inline(vec![]));
}

#[test]
fn bp_1_only_its_own_groups_prepare_ends_a_pause() {
    let job = JobId::random();
    let (mut d, w) = idle(job, false);
    let (a, b) = (PlacementGroupId::random(), PlacementGroupId::random());
    let t0 = Instant::now();
    running(&mut d, job, w, |d| {
        d.bundle_refused(a, &[(0, cpu())], t0);
    });
    assert!(!leasable(&mut d, job), "paused for a");
    assert!(d
        .prepare_bundles(b, vec![(0, ResourceSet::new())], true)
        .is_ok());
    assert!(!leasable(&mut d, job), "b's prepare does not end a's pause");
    assert!(d.prepare_bundles(a, vec![(0, cpu())], true).is_ok());
    d.return_bundles(a, &[], "done");
    assert!(leasable(&mut d, job), "a's prepare ends it");
}

#[test]
fn bp_2_no_pause_starts_right_after_one_ended_without_its_group() {
    let job = JobId::random();
    let (mut d, w) = idle(job, false);
    let a = PlacementGroupId::random();
    let t0 = Instant::now();
    running(&mut d, job, w, |d| {
        d.bundle_refused(a, &[(0, cpu())], t0);
    });
    d.tick(t0 + LEASE_PAUSE);
    assert!(leasable(&mut d, job), "the pause is over");
    let soon = t0 + LEASE_PAUSE + Duration::from_millis(1);
    running(&mut d, job, w, |d| {
        d.bundle_refused(a, &[(0, cpu())], soon);
    });
    assert!(leasable(&mut d, job), "no new pause during the cooldown");
    let later = t0 + 2 * LEASE_PAUSE;
    d.tick(later);
    running(&mut d, job, w, |d| {
        d.bundle_refused(a, &[(0, cpu())], later);
    });
    assert!(!leasable(&mut d, job), "paused again after it");
}

#[test]
fn bp_3_a_commit_or_a_bundle_leases_cannot_help_revokes_nothing() {
    let job = JobId::random();
    let (mut d, w) = idle(job, true);
    let a = PlacementGroupId::random();
    let t0 = Instant::now();
    // A failed commit names no bundle: nothing happens.
    running(&mut d, job, w, |d| {
        assert!(d.bundle_refused(a, &[], t0).is_empty());
    });
    assert!(leasable(&mut d, job));
    // A lease holds the CPU; a running task holds x; the bundle wants x
    // only: the lease stays, the pause still keeps x.
    let mut shape = task(job, 1, 0);
    shape.function = LEASE_METHOD.into();
    let lease: TaskId = shape.task_id;
    d.lease(shape, Owner::Local(1));
    let mut holds_x = task(job, 0, 0);
    holds_x.resources =
        crate::proto::common::Resources::from(&ResourceSet::new().with("x", Quantity::whole(1)));
    let started_x = started(&d.submit(holds_x.clone(), Owner::Local(1)));
    let x = ResourceSet::new().with("x", Quantity::whole(1));
    assert!(
        d.bundle_refused(a, &[(0, x)], t0).is_empty(),
        "the lease holds no x: not revoked"
    );
    assert!(d.leased().get(CPU) == Quantity::whole(1));
    let _ = (lease, started_x);
}

#[test]
fn bp_4_the_policy_sees_what_a_pause_keeps_as_taken() {
    let job = JobId::random();
    let (mut d, w) = idle(job, false);
    let t0 = Instant::now();
    running(&mut d, job, w, |d| {
        d.bundle_refused(PlacementGroupId::random(), &[(0, cpu())], t0);
    });
    let kept = d.held_back_free().expect("a pause keeps the CPU");
    assert_eq!(kept, cpu());
}
