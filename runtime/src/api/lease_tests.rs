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
        yield_at: None,
        granted: now,
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
fn lo_2_tasks_behind_a_revoked_lease_wait_for_its_task_then_ask_again() {
    // Its task moves: another lease is asked for once it ends.
    let (h, _peer) = held(Some(Duration::from_millis(1)), true);
    let mut s = shape(vec![h], 3);
    let mut spill = Spill::new();
    s.spill_if_unasked(&mut spill);
    assert!(spill.is_empty() && s.queue.len() == 3);
    // Idle and revoked: nothing serves them (nor is asked for).
    let (h, _peer) = held(None, true);
    let mut s = shape(vec![h], 3);
    s.spill_if_unasked(&mut spill);
    assert_eq!(spill.len(), 3);
}

#[test]
fn lo_2_tasks_behind_a_stalled_or_revoked_lease_go_to_the_raylet() {
    for (busy, revoked) in [(STALLED * 2, false), (STALLED * 2, true)] {
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
    s.asked_at = Some(Instant::now());
    let mut spill = Spill::new();
    s.spill_if_unasked(&mut spill);
    assert!(spill.is_empty());
    s.asking = false;
    s.spill_if_unasked(&mut spill);
    assert_eq!(spill.len(), 2);
}

#[test]
fn lo_2_tasks_wait_for_an_unanswered_lease_only_so_long() {
    let mut s = shape(Vec::new(), 2);
    s.asking = true;
    s.asked_at = Some(Instant::now() - ASK_WAIT - Duration::from_millis(1));
    let mut spill = Spill::new();
    s.spill_if_unasked(&mut spill);
    assert_eq!(
        spill.len(),
        2,
        "the raylet has them once the ask waited too long"
    );
}

#[test]
fn lo_3_a_revoked_lease_is_kept_for_its_tenure_while_tasks_wait() {
    let (mut h, _peer) = held(Some(Duration::from_millis(1)), false);
    let now = h.granted;
    h.yield_at = Some(now + TENURE);
    h.settle(now + TENURE / 2, true);
    assert!(!h.revoked, "inside its tenure, with tasks waiting");
    h.settle(now + TENURE / 2, false);
    assert!(h.revoked, "nothing waits: given back after its task");
    let (mut h, _peer) = held(None, false);
    h.yield_at = Some(h.granted + TENURE);
    h.settle(h.granted + TENURE, true);
    assert!(h.revoked && h.yield_at.is_none(), "its tenure is over");
    // Not revoked by the raylet: never yields by itself.
    let (mut h, _peer) = held(None, false);
    h.settle(h.granted + TENURE * 10, false);
    assert!(!h.revoked);
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

#[test]
fn lo_2_a_decline_for_a_lease_given_back_since_asks_again() {
    // Asked while holding one, declined after giving it back: ask again.
    let mut s = shape(Vec::new(), 3);
    s.asked_holding = true;
    assert!(s.asks_again_after_decline());
    // Declined while holding none: a real decline (the tasks go through
    // the raylet).
    s.asked_holding = false;
    assert!(!s.asks_again_after_decline());
    // Still holding one, or nothing waits: no need.
    let (h, _peer) = held(None, false);
    let mut s = shape(vec![h], 3);
    s.asked_holding = true;
    assert!(!s.asks_again_after_decline());
    let mut s = shape(Vec::new(), 0);
    s.asked_holding = true;
    assert!(!s.asks_again_after_decline());
}

#[test]
fn what_waits_is_listed_at_most_every_list_every_then_once_empty_lo7() {
    let mut inner = Inner::default();
    let t0 = Instant::now();
    assert!(
        inner.waiting_list(t0, false).is_none(),
        "none waits: no list"
    );
    inner.shapes.insert("a".into(), shape(Vec::new(), 3));
    inner.shapes.insert("b".into(), shape(Vec::new(), 2000));
    let first = inner.waiting_list(t0, false).expect("due at once");
    assert_eq!(first.tasks.len(), crate::raylet::task_history::MAX_WAITING);
    assert!(first.tasks.iter().all(|t| t.started_us.is_none()));
    let soon = t0 + listed::LIST_EVERY / 2;
    assert!(inner.waiting_list(soon, false).is_none(), "not due yet");
    let later = t0 + listed::LIST_EVERY;
    assert!(inner.waiting_list(later, false).is_some());
    // None waits any more: one empty list, due even at once if the
    // sweeper stops, and then nothing.
    inner.shapes.clear();
    let empty = inner.waiting_list(later, true).expect("the last, empty");
    assert!(empty.tasks.is_empty());
    assert!(inner
        .waiting_list(later + listed::LIST_EVERY * 2, true)
        .is_none());
}
