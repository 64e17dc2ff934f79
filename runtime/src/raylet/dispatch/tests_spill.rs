//! D-6: work spilled here on a stale view moves on with a fresh one.

use super::tests::{actor_create, node, task};
use super::*;
use crate::ids::ActorId;
use crate::proto::common::Resources;
use crate::proto::task::WireStrategy;

/// A node of `cpus` CPUs with all of them in use.
fn full(cpus: u32) -> NodeResources {
    let mut n = node(cpus);
    n.allocate(&ResourceSet::new().with(CPU, Quantity::whole(cpus)))
        .unwrap();
    n
}

/// The creation of a 1-CPU actor, spilled here by a peer.
fn spilled_actor() -> TaskSpec {
    let mut t = actor_create(ActorId::random(), 0, 0);
    t.resources = Resources::from(&ResourceSet::new().with(CPU, Quantity::whole(1)));
    t.spilled = true;
    t
}

fn forwards(a: &[Action]) -> Vec<(NodeId, crate::ids::TaskId)> {
    a.iter()
        .filter_map(|x| match x {
            Action::Forward { node, task, .. } => Some((*node, task.task_id)),
            _ => None,
        })
        .collect()
}

/// The tasks handed back to their senders (D-6), by owner.
fn handed_back(a: &[Action]) -> Vec<(Owner, crate::ids::TaskId)> {
    a.iter()
        .filter_map(|x| match x {
            Action::Reply {
                owner,
                task_id,
                outcome: Outcome::Failed(Failure::Moved { .. }),
            } => Some((*owner, *task_id)),
            _ => None,
        })
        .collect()
}

#[test]
fn d_6_spilled_work_goes_back_when_a_fresh_view_shows_room() {
    // The head spilled two actors here on a view that showed this node
    // free twice over (the first one's reservation was lost to a refresh).
    let (me, head) = (NodeId::random(), NodeId::random());
    let mut d = Dispatcher::new(me, node(1));
    d.set_peers(vec![(head, full(1))]);
    let (a, c) = (spilled_actor(), spilled_actor());
    assert!(handed_back(&d.submit(a, Owner::Spilled(1))).is_empty());
    let arrived = d.submit(c.clone(), Owner::Spilled(2));
    assert!(
        forwards(&arrived).is_empty() && handed_back(&arrived).is_empty(),
        "spilled work stays where it lands when it arrives"
    );
    // A fresh view still shows no room elsewhere: it waits here.
    assert!(handed_back(&d.set_peers_and_pump(vec![(head, full(1))])).is_empty());
    // The head's CPU is freed (an actor there was killed): it goes back to
    // its sender, one hop, never on to a third node from here.
    let moved = d.set_peers_and_pump(vec![(head, node(1))]);
    assert_eq!(handed_back(&moved), vec![(Owner::Spilled(2), c.task_id)]);
    assert!(forwards(&moved).is_empty());
    assert_eq!(d.stats().queued, 0);
    // Once: the next view does not see it here any more.
    assert!(handed_back(&d.set_peers_and_pump(vec![(head, node(1))])).is_empty());

    // The sender places it again with its own view: here, where b's CPU
    // is free now.
    let mut sender = Dispatcher::new(head, node(1));
    sender.set_peers(vec![(me, full(1))]);
    let placed = sender.handed_back(Owner::Local(7), c);
    assert!(forwards(&placed).is_empty(), "{placed:?}");
    assert!(
        placed.iter().any(|x| matches!(x, Action::Start { .. })),
        "{placed:?}"
    );
}

#[test]
fn d_6_pinned_work_and_actor_restarts_never_go_back() {
    let (me, other) = (NodeId::random(), NodeId::random());
    let mut d = Dispatcher::new(me, node(1));
    d.set_peers(vec![(other, full(1))]);
    let job = JobId::random();
    let mut hold = task(job, 1, 0);
    hold.spilled = true;
    d.submit(hold, Owner::Spilled(1));
    let mut pinned = task(job, 1, 0);
    pinned.spilled = true;
    pinned.strategy = WireStrategy::NodeAffinity {
        node: me,
        soft: false,
    };
    d.submit(pinned, Owner::Spilled(2));
    let mut restart = spilled_actor();
    if let crate::proto::task::TaskKind::CreateActor(c) = &mut restart.kind {
        c.restarts = 1;
    }
    d.submit(restart, Owner::Spilled(3));
    let a = d.set_peers_and_pump(vec![(other, node(8))]);
    assert!(
        handed_back(&a).is_empty() && forwards(&a).is_empty(),
        "work pinned to this node and a restart the head placed wait here: {a:?}"
    );
}
