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
        object,
        rule: rule.clone(),
    };
    let refused = |r: Reply| match r {
        Reply::Now(HeadResponse::Error {
            kind: ErrorKind::Forbidden,
            message,
        }) => message,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // The put's own node must be inside the rule.
    let msg = refused(sim.core.handle(sim.now, at_eu, set(eu, &rule)));
    assert!(msg.contains("which has region=eu-west"), "{msg}");
    assert_eq!(
        sim.core.handle(sim.now, at_south, set(south, &rule)),
        Reply::Now(HeadResponse::Ok)
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
