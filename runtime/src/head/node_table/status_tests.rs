//! NT-6: a raylet's mirror kept by deltas equals the table's rows.

use super::tests::{reg, table};
use super::*;
use crate::proto::common::{NodeStatus, StatusDelta};
use crate::raylet::status_mirror::StatusMirror;
use prism_scheduler::{Quantity, CPU};
use proptest::prelude::*;

fn fetch(t: &NodeTable, now: Instant, m: &mut StatusMirror) -> (bool, usize) {
    let (epoch, version) = m.cursor();
    let d = t.status_since(now, epoch, version);
    let (full, sent) = (d.full, d.nodes.len());
    m.apply(
        StatusDelta {
            cluster_id: crate::ids::ClusterId::random(),
            head_address: String::new(),
            epoch: d.epoch,
            version: d.version,
            full: d.full,
            nodes: d.nodes,
            gone: d.gone,
            ended_jobs: Vec::new(),
        },
        now,
    );
    (full, sent)
}

/// A row without its heartbeat's age (as of the row's last change).
fn ageless(mut n: NodeStatus) -> NodeStatus {
    n.last_heartbeat_ms_ago = 0;
    n
}

fn rows(m: &mut StatusMirror, t: &NodeTable, now: Instant) -> (Vec<NodeStatus>, Vec<NodeStatus>) {
    fetch(t, now, m);
    let (epoch, version) = m.cursor();
    // An up-to-date mirror asks for nothing and gets nothing.
    let again = t.status_since(now, epoch, version);
    assert!(!again.full && again.gone.is_empty() && again.nodes.is_empty());
    let mirror = m
        .apply(
            StatusDelta {
                cluster_id: crate::ids::ClusterId::random(),
                head_address: String::new(),
                epoch,
                version,
                full: false,
                nodes: Vec::new(),
                gone: Vec::new(),
                ended_jobs: Vec::new(),
            },
            now,
        )
        .nodes;
    let whole = t.status(now);
    let norm = |v: Vec<NodeStatus>| v.into_iter().map(ageless).collect();
    (norm(mirror), norm(whole))
}

#[test]
fn nt_6_deltas_carry_only_changes_and_a_new_run_gets_everything() {
    let t0 = Instant::now();
    let mut t = table();
    let ids: Vec<NodeId> = (0..5).map(|_| NodeId::random()).collect();
    for (i, id) in ids.iter().enumerate() {
        t.handle_register(t0, *id, reg(&format!("n{i}")));
    }
    let mut m = StatusMirror::default();
    assert_eq!(fetch(&t, t0, &mut m), (true, 5), "a first fetch is whole");
    // Heartbeats that change nothing send nothing.
    let two = ResourceSet::new().with(CPU, Quantity::whole(2));
    for id in &ids {
        t.handle_heartbeat(t0, *id, two.clone());
    }
    assert_eq!(fetch(&t, t0, &mut m), (false, 0));
    // One node's free resources change: one row.
    t.handle_heartbeat(t0, ids[1], ResourceSet::new());
    assert_eq!(fetch(&t, t0, &mut m), (false, 1));
    // A draining node is sent when it starts draining, not again while
    // its deadline only comes nearer: the mirror counts it down.
    t.handle_drain(t0, ids[2], "maintenance".into(), Duration::from_secs(60))
        .unwrap();
    assert_eq!(fetch(&t, t0, &mut m), (false, 1));
    let later = t0 + Duration::from_secs(25);
    assert_eq!(fetch(&t, later, &mut m), (false, 0));
    let (mirror, whole) = rows(&mut m, &t, later);
    assert_eq!(mirror, whole);
    let left = |rows: &[NodeStatus]| {
        rows.iter()
            .find_map(|n| n.draining.as_ref())
            .map(|d| d.ms_left)
    };
    assert_eq!(left(&mirror), Some(35_000));
    t.handle_unregister(ids[2]);
    assert_eq!(fetch(&t, t0, &mut m), (false, 1));
    assert_eq!(fetch(&t, t0, &mut m), (false, 0));
    // Another head run (a restarted head): everything again.
    let other = table();
    let (epoch, version) = m.cursor();
    assert!(other.status_since(t0, epoch, version).full);
    let (mirror, whole) = rows(&mut m, &t, t0);
    assert_eq!(mirror, whole);
}

#[derive(Debug, Clone)]
enum Op {
    Register(u8),
    Beat(u8, u8),
    Tick(u16),
    Drain(u8),
    Seen(u8),
    Leave(u8),
    Fetch,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6).prop_map(Op::Register),
        (0u8..8, 0u8..3).prop_map(|(n, c)| Op::Beat(n, c)),
        (0u16..1500).prop_map(Op::Tick),
        (0u8..8).prop_map(Op::Drain),
        (0u8..8).prop_map(Op::Seen),
        (0u8..8).prop_map(Op::Leave),
        Just(Op::Fetch),
    ]
}

proptest! {
    /// NT-6 over any history, with dead nodes forgotten along the way.
    #[test]
    fn nt_6_a_mirror_kept_by_deltas_equals_the_rows(ops in prop::collection::vec(op(), 1..80)) {
        let mut t = table();
        t.max_dead = 3;
        let mut now = Instant::now();
        let mut ids: Vec<NodeId> = Vec::new();
        let mut m = StatusMirror::default();
        let pick = |ids: &[NodeId], i: u8| (!ids.is_empty()).then(|| ids[i as usize % ids.len()]);
        for o in ops {
            match o {
                Op::Register(n) => {
                    let id = NodeId::random();
                    t.handle_register(now, id, reg(&format!("n{n}")));
                    ids.push(id);
                }
                Op::Beat(i, c) => if let Some(id) = pick(&ids, i) {
                    let free = ResourceSet::new().with(CPU, Quantity::whole(c.into()));
                    t.handle_heartbeat(now, id, free);
                },
                Op::Tick(ms) => {
                    now += Duration::from_millis(ms.into());
                    t.tick(now);
                }
                Op::Drain(i) => if let Some(id) = pick(&ids, i) {
                    let _ = t.handle_drain(now, id, "d".into(), Duration::from_millis(500));
                },
                Op::Seen(i) => if let Some(id) = pick(&ids, i) {
                    t.drain_seen(id);
                },
                Op::Leave(i) => if let Some(id) = pick(&ids, i) {
                    t.handle_unregister(id);
                },
                Op::Fetch => {
                    fetch(&t, now, &mut m);
                }
            }
        }
        let (mirror, whole) = rows(&mut m, &t, now);
        prop_assert_eq!(mirror, whole);
    }
}
