//! OD-3 through the core: an object with a residency rule is put only on
//! a node inside it, and never recorded on, nor named to, a node outside.

use super::*;

#[test]
fn od_3_a_resident_object_is_never_recorded_on_nor_named_to_a_node_outside_its_rule() {
    use crate::proto::common::Residency;
    let mut sim = Sim::new();
    let mut labelled = |name: &str, region: &str, cert: u8| {
        let mut r = reg(name, 1);
        r.labels = vec![("region".into(), region.into())];
        let id = NodeId::random();
        sim.core
            .register(sim.now, id, r, Caller::Node { cert: [cert; 32] });
        id
    };
    let (south, eu) = (
        labelled("south", "in-south", 1),
        labelled("eu", "eu-west", 2),
    );
    let (at_south, at_eu) = (
        Caller::Node { cert: [1; 32] },
        Caller::Node { cert: [2; 32] },
    );
    let object = prism_objectstore::ObjectId::random();
    let rule = Residency::new("region", &["in-south", "in-west"]);
    let set = |node, rule: &Residency| HeadRequest::SetResidency {
        node_id: node,
        rules: vec![(object, rule.clone())],
    };
    let refused = |r: Reply| match r {
        Reply::Now(HeadResponse::Error {
            kind: ErrorKind::Forbidden,
            message,
        }) => message,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // The put's own node must be inside the rule.
    let Reply::Now(HeadResponse::ResidencySet { refused: no }) =
        sim.core.handle(sim.now, at_eu, set(eu, &rule))
    else {
        panic!("expected a ResidencySet answer")
    };
    assert!(
        no.len() == 1 && no[0].0 == object && no[0].1.contains("which has region=eu-west"),
        "{no:?}"
    );
    assert_eq!(
        sim.core.handle(sim.now, at_south, set(south, &rule)),
        Reply::Now(HeadResponse::ResidencySet { refused: vec![] })
    );
    let add = |node| HeadRequest::AddObjectLocation {
        node_id: node,
        object,
        size: 8,
    };
    assert_eq!(
        sim.core.handle(sim.now, at_south, add(south)),
        Reply::Now(HeadResponse::Ok)
    );
    // Outside: no location recorded, none named.
    let msg = refused(sim.core.handle(sim.now, at_eu, add(eu)));
    assert!(
        msg.contains("may only be on nodes with region in [in-south, in-west]"),
        "{msg}"
    );
    let msg = refused(
        sim.core
            .handle(sim.now, at_eu, HeadRequest::GetObjectLocations { object }),
    );
    assert!(
        msg.contains(&format!("node {eu} has region=eu-west")),
        "{msg}"
    );
    let Reply::Now(HeadResponse::ObjectLocations { nodes, .. }) = sim.core.handle(
        sim.now,
        at_south,
        HeadRequest::GetObjectLocations { object },
    ) else {
        panic!()
    };
    assert_eq!(
        nodes.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![south]
    );
    // The rule is durable with the object's row.
    let rows = sim.core.take_changes();
    assert!(rows.iter().any(|c| matches!(c, crate::head::durable::Change::Put(crate::head::durable::Row::Object(o)) if o.residency == Some(rule.clone()))));
}

#[test]
fn copies_reported_in_order_and_a_free_reaches_every_other_holder() {
    let mut sim = Sim::new();
    let (a, b, c) = (sim.node("a", 1), sim.node("b", 1), sim.node("c", 1));
    let node = Caller::Node { cert: [7; 32] };
    let (x, y) = (
        prism_objectstore::ObjectId::random(),
        prism_objectstore::ObjectId::random(),
    );
    let update = |n, changes| HeadRequest::UpdateObjectLocations {
        node_id: n,
        changes,
    };
    let locations = |sim: &mut Sim, object| match sim.core.handle(
        sim.now,
        node,
        HeadRequest::GetObjectLocations { object },
    ) {
        Reply::Now(HeadResponse::ObjectLocations { nodes, .. }) => {
            nodes.into_iter().map(|(n, _)| n).collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    // a seals x and y, evicts y and seals it again; b and c pull x.
    let ok = Reply::Now(HeadResponse::Ok);
    let changes = vec![(x, Some(8)), (y, Some(4)), (y, None), (y, Some(4))];
    assert_eq!(sim.core.handle(sim.now, node, update(a, changes)), ok);
    assert_eq!(
        sim.core
            .handle(sim.now, node, update(b, vec![(x, Some(8))])),
        ok
    );
    assert_eq!(
        sim.core
            .handle(sim.now, node, update(c, vec![(x, Some(8))])),
        ok
    );
    assert_eq!(locations(&mut sim, y), vec![a], "applied in order");
    // c evicts its copy: the directory forgets it.
    assert_eq!(
        sim.core.handle(sim.now, node, update(c, vec![(x, None)])),
        ok
    );
    let mut holders = locations(&mut sim, x);
    holders.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(holders, want);
    sim.run();
    // The owner on a frees x and y: b is told to drop x; a dropped its own.
    let free = HeadRequest::FreeObjects {
        node_id: a,
        objects: vec![x, y],
    };
    assert_eq!(sim.core.handle(sim.now, node, free), ok);
    let told = frees_told(&mut sim);
    assert_eq!(told, vec![(b, vec![x])]);
    assert!(locations(&mut sim, x).is_empty() && locations(&mut sim, y).is_empty());
    // A reader is told at once that x was freed.
    match sim
        .core
        .handle(sim.now, node, HeadRequest::GetObjectLocations { object: x })
    {
        Reply::Now(HeadResponse::ObjectLocations {
            lost: Some(why), ..
        }) => {
            assert!(why.contains("its owner freed it"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    // OD-4: c's pull of x raced the free: it is told to drop that copy.
    assert_eq!(
        sim.core
            .handle(sim.now, node, update(c, vec![(x, Some(8))])),
        ok
    );
    let told = frees_told(&mut sim);
    assert_eq!(told, vec![(c, vec![x])]);
    assert!(locations(&mut sim, x).is_empty());
    // Only a node speaks for its copies.
    let user = sim.core.handle(sim.now, Caller::Client, update(a, vec![]));
    assert!(
        matches!(user, Reply::Now(HeadResponse::Error { .. })),
        "{user:?}"
    );
}

/// The nodes told to drop copies, with what.
fn frees_told(sim: &mut Sim) -> Vec<(NodeId, Vec<prism_objectstore::ObjectId>)> {
    sim.run()
        .into_iter()
        .filter_map(|e| match e {
            Effect::FreeCopies { node, objects, .. } => Some((node, objects)),
            _ => None,
        })
        .collect()
}
