use super::*;
use crate::proto::common::Resources;
use prism_scheduler::{Quantity, CPU};

fn req(pg: PlacementGroupId, n: usize, strategy: PgStrategyWire) -> PgCreate {
    let one = ResourceSet::new().with(CPU, Quantity::ONE);
    PgCreate {
        pg,
        name: String::new(),
        bundles: vec![Resources::from(&one); n],
        strategy,
        job: JobId::random(),
        detached: false,
    }
}

#[test]
fn pg1_created_only_when_every_bundle_has_a_node() {
    let mut t = PgTable::default();
    let pg = PlacementGroupId::random();
    t.create(req(pg, 2, PgStrategyWire::StrictSpread)).unwrap();
    assert_eq!(t.work().len(), 1);
    assert_eq!(t.work()[0].bundles.len(), 2);
    let (a, b) = (NodeId::random(), NodeId::random());
    assert!(t.placed(pg, &[(0, a, "x".into())]));
    assert_eq!(t.get(pg).unwrap().state, PgState::Pending);
    assert!(t.placed(pg, &[(1, b, "y".into())]));
    assert_eq!(t.get(pg).unwrap().state, PgState::Created);
    assert!(t.work().is_empty());
}

#[test]
fn pg2_removed_group_holds_nothing_and_stays_removed() {
    let mut t = PgTable::default();
    let pg = PlacementGroupId::random();
    t.create(req(pg, 2, PgStrategyWire::Pack)).unwrap();
    let a = NodeId::random();
    t.placed(pg, &[(0, a, "x".into()), (1, a, "x".into())]);
    let nodes = t.remove(pg, "removed by the user").unwrap();
    assert_eq!(nodes, vec![(a, "x".to_string())], "one node, listed once");
    let g = t.get(pg).unwrap();
    assert_eq!(g.state, PgState::Removed);
    assert!(g.nodes.iter().all(Option::is_none));
    // A late placement of a removed group is refused; so is a second remove.
    assert!(!t.placed(pg, &[(0, a, "x".into())]));
    assert!(t
        .remove(pg, "again")
        .unwrap_err()
        .contains("already removed"));
    t.not_placed(pg, "late".into(), false);
    assert_eq!(t.get(pg).unwrap().state, PgState::Removed);
}

#[test]
fn node_death_reschedules_only_its_bundles() {
    let mut t = PgTable::default();
    let pg = PlacementGroupId::random();
    t.create(req(pg, 3, PgStrategyWire::StrictSpread)).unwrap();
    let n: Vec<NodeId> = (0..3).map(|_| NodeId::random()).collect();
    t.placed(
        pg,
        &[
            (0, n[0], "a".into()),
            (1, n[1], "b".into()),
            (2, n[2], "c".into()),
        ],
    );
    assert_eq!(t.node_died(n[1]), vec![pg]);
    let g = t.get(pg).unwrap();
    assert_eq!(g.state, PgState::Rescheduling);
    assert_eq!(g.reschedules, 1);
    let w = t.work();
    assert_eq!(
        w[0].bundles.iter().map(|b| b.0).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(w[0].holding, vec![n[0], n[2]]);
    // A failed attempt keeps it rescheduling; success makes it created.
    t.not_placed(pg, "no room".into(), false);
    assert_eq!(t.get(pg).unwrap().state, PgState::Rescheduling);
    t.placed(pg, &[(1, NodeId::random(), "d".into())]);
    assert_eq!(t.get(pg).unwrap().state, PgState::Created);
}

#[test]
fn bad_requests_and_idempotent_create() {
    let mut t = PgTable::default();
    let pg = PlacementGroupId::random();
    assert!(t
        .create(req(pg, 0, PgStrategyWire::Pack))
        .unwrap_err()
        .contains("at least one bundle"));
    let mut r = req(pg, 1, PgStrategyWire::Pack);
    r.bundles[0] = Resources(Vec::new());
    assert!(t.create(r).unwrap_err().contains("reserves nothing"));
    let first = req(pg, 1, PgStrategyWire::Pack);
    let job = first.job;
    t.create(first).unwrap();
    t.create(req(pg, 1, PgStrategyWire::Pack)).unwrap();
    assert_eq!(t.list().len(), 1);
    assert_eq!(t.owned_by(job), vec![pg], "the creating job owns it");
    let r = req(pg, 1, PgStrategyWire::Pack);
    assert!(t.owned_by(r.job).is_empty(), "another job owns it");
}
