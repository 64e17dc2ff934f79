//! LO-2: when tasks wait behind the leases held and when they go through
//! the raylet (the owner's side, without sockets but the leases' own).

use super::*;
use crate::ids::JobId;

fn held(busy_for: Option<Duration>, revoked: bool) -> (Held, UnixStream) {
    let (stream, other) = UnixStream::pair().unwrap();
    let now = Instant::now();
    let busy = busy_for.map(|_| (task(), false));
    let h = Held {
        lease: TaskId::random(),
        stream,
        busy,
        busy_since: now - busy_for.unwrap_or_default(),
        revoked,
        idle_since: busy_for.is_none().then_some(now),
    };
    (h, other)
}

fn task() -> TaskSpec {
    TaskSpec::new(
        TaskId::random(),
        JobId::random(),
        "m::f",
        "f",
        TaskKind::Task,
    )
}

fn shape(leases: Vec<Held>, waiting: usize) -> Shape {
    Shape {
        queue: (0..waiting).map(|_| task()).collect(),
        held: leases,
        ..Shape::default()
    }
}

#[test]
fn lo_2_tasks_wait_behind_a_lease_that_moves() {
    let (h, _peer) = held(Some(Duration::from_millis(1)), false);
    let mut s = shape(vec![h], 3);
    let mut spill = Spill::new();
    s.spill_if_unasked(&mut spill);
    assert!(spill.is_empty() && s.queue.len() == 3);
}

#[test]
fn lo_2_tasks_behind_a_stalled_or_revoked_lease_go_to_the_raylet() {
    for (busy, revoked) in [(STALLED * 2, false), (Duration::from_millis(1), true)] {
        let (h, _peer) = held(Some(busy), revoked);
        let mut s = shape(vec![h], 3);
        let mut spill = Spill::new();
        s.spill_if_unasked(&mut spill);
        assert_eq!(
            (spill.len(), s.queue.len()),
            (3, 0),
            "busy {busy:?}, revoked {revoked}"
        );
    }
    // One stalled lease and one idle one: the idle one serves the queue.
    let (stuck, _a) = held(Some(STALLED * 2), false);
    let (idle, _b) = held(None, false);
    let mut s = shape(vec![stuck, idle], 2);
    let mut spill = Spill::new();
    s.spill_if_unasked(&mut spill);
    assert!(spill.is_empty());
}

#[test]
fn lo_2_tasks_wait_for_a_lease_asked_for_even_with_none_held() {
    let mut s = shape(Vec::new(), 2);
    s.asking = true;
    let mut spill = Spill::new();
    s.spill_if_unasked(&mut spill);
    assert!(spill.is_empty());
    s.asking = false;
    s.spill_if_unasked(&mut spill);
    assert_eq!(spill.len(), 2);
}

#[test]
fn lo_2_only_the_work_the_leases_run_in_the_budget_waits_here() {
    let (a, _pa) = held(Some(Duration::from_millis(1)), false);
    let (b, _pb) = held(None, false);
    let mut s = shape(vec![a, b], 0);
    assert_eq!(s.room(), MAX_QUEUED, "no run time known yet");
    // Tasks of ~5 ms: twenty per lease in 100 ms.
    for _ in 0..50 {
        observe(&mut s.took_us, Duration::from_millis(5));
    }
    assert_eq!(s.room(), 2 * (WAIT_BUDGET.as_millis() as usize / 5));
    s.queue = (0..100).map(|_| task()).collect();
    let first = s.queue[0].task_id;
    let mut spill = Spill::new();
    s.spill_beyond_room(&mut spill);
    assert_eq!((s.queue.len(), spill.len()), (s.room(), 100 - s.room()));
    assert_eq!(s.queue[0].task_id, first, "the oldest stay, in order");
    // Quick tasks (one slow first one aside) all wait here.
    let mut quick = shape(Vec::new(), 0);
    observe(&mut quick.took_us, Duration::from_millis(40));
    observe(&mut quick.took_us, Duration::from_micros(90));
    assert_eq!(quick.room(), MAX_QUEUED);
}
