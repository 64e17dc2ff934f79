//! DR-1 in the dispatcher: a draining node sends new work elsewhere, turns
//! back work a peer spilled to it, keeps what it already runs, and says
//! when nothing left needs it.

use super::tests::{node, replies, started, task};
use super::*;
use crate::proto::task::WireStrategy;

fn forwarded_to(a: &[Action]) -> Vec<NodeId> {
    a.iter()
        .filter_map(|a| match a {
            Action::Forward { node, .. } => Some(*node),
            _ => None,
        })
        .collect()
}

#[test]
fn dr_1_new_work_goes_to_a_peer_and_running_work_stays() {
    let (me, peer) = (NodeId::random(), NodeId::random());
    let mut d = Dispatcher::new(me, node(4));
    d.set_peers(vec![(peer, node(4))]);
    let job = JobId::random();
    let running = task(job, 1, 0);
    let w = started(&d.submit(running.clone(), Owner::Local(1)))[0];
    assert!(!d.drain_done(), "not draining");
    d.set_draining(Some("preemption".into()));
    assert!(d.draining());
    // New work, though it fits here, goes to the peer.
    let a = d.submit(task(job, 1, 0), Owner::Local(1));
    assert_eq!(forwarded_to(&a), vec![peer], "{a:?}");
    assert!(!d.drain_done(), "a task still runs here");
    d.worker_ready(w);
    d.task_done(w, running.task_id, Outcome::Inline(vec![]));
    assert!(d.drain_done(), "nothing left that needs the node");
}

#[test]
fn dr_1_a_task_spilled_here_while_draining_is_turned_back() {
    let me = NodeId::random();
    let mut d = Dispatcher::new(me, node(4));
    d.set_draining(Some("scale-down".into()));
    let mut t = task(JobId::random(), 1, 0);
    t.spilled = true;
    let a = d.submit(t, Owner::Spilled(7));
    assert!(started(&a).is_empty());
    match replies(&a).as_slice() {
        [Outcome::Failed(Failure::Draining { node, reason })] => {
            assert_eq!((*node, reason.as_str()), (me, "scale-down"));
        }
        other => panic!("{other:?}"),
    }
    // The peer that spilled it places it again as new work, elsewhere.
    let (peer, other) = (NodeId::random(), NodeId::random());
    let mut p = Dispatcher::new(peer, node(0));
    p.set_peers(vec![(me, node(4)), (other, node(4))]);
    let mut back = task(JobId::random(), 1, 0);
    back.spilled = true;
    let a = p.redirect(me, Owner::Local(1), back);
    assert_eq!(forwarded_to(&a), vec![other], "{a:?}");
}

#[test]
fn dr_1_with_no_other_node_new_work_waits_and_bundled_work_still_runs() {
    let me = NodeId::random();
    let mut d = Dispatcher::new(me, node(4));
    d.set_draining(Some("x".into()));
    let job = JobId::random();
    let a = d.submit(task(job, 1, 0), Owner::Local(1));
    assert!(
        started(&a).is_empty() && forwarded_to(&a).is_empty(),
        "{a:?}"
    );
    // A bundle on this node keeps serving its group until the node leaves.
    let pg = crate::ids::PlacementGroupId::random();
    let one = ResourceSet::new().with(CPU, Quantity::ONE);
    d.prepare_bundles(pg, vec![(0, one)], true).unwrap();
    let mut t = task(job, 1, 0);
    t.strategy = WireStrategy::Bundle {
        pg,
        index: 0,
        node: me,
    };
    assert_eq!(started(&d.submit(t, Owner::Local(1))).len(), 1);
}
