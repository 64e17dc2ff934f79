//! GPU slices in placement-group bundles, in the dispatcher: a bundle
//! holding part of a GPU serves what asks for parts of it, on the node's
//! GPU.

use super::tests::{in_bundle, replies};
use super::*;
use crate::proto::common::Resources;

#[test]
fn a_bundle_of_half_a_gpu_runs_tasks_asking_for_parts_of_it_on_the_nodes_gpu() {
    use prism_scheduler::GPU;
    let me = NodeId::random();
    let two_gpus = ResourceSet::new()
        .with(CPU, Quantity::whole(4))
        .with(GPU, Quantity::whole(2));
    let mut d = Dispatcher::new(me, NodeResources::new(two_gpus));
    let pg = crate::ids::PlacementGroupId::random();
    let half = Quantity::from_f64(0.5).unwrap();
    // A whole GPU taken first, so the bundle's half is of the node's GPU 1.
    let whole = ResourceSet::new().with(GPU, Quantity::ONE);
    d.prepare_bundles(pg, vec![(0, whole)], true).unwrap();
    let bundle = ResourceSet::new().with(CPU, Quantity::ONE).with(GPU, half);
    d.prepare_bundles(pg, vec![(1, bundle)], true).unwrap();
    let job = JobId::random();
    let mut t = in_bundle(job, pg, 1, me);
    t.resources = Resources::from(&ResourceSet::new().with(GPU, half));
    let a = d.submit(t, Owner::Local(1));
    let gpus: Vec<Vec<u32>> = a
        .iter()
        .filter_map(|a| match a {
            Action::Start { gpus, .. } => Some(gpus.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(gpus, vec![vec![1]], "runs on the node's GPU 1: {a:?}");
    // More than the bundle holds is refused with the reason.
    let mut big = in_bundle(job, pg, 1, me);
    big.resources = Resources::from(&ResourceSet::new().with(GPU, Quantity::ONE));
    let a = d.submit(big, Owner::Local(1));
    assert!(
        matches!(&replies(&a)[..], [Outcome::Failed(_)]),
        "refused: {a:?}"
    );
}
