//! Tests of the task history (TH-1..TH-4).

use super::*;
use crate::proto::task::TaskKind;

fn spec(id: TaskId) -> TaskSpec {
    TaskSpec::new(id, JobId::random(), "f", "f", TaskKind::Task)
}

#[test]
fn a_task_is_open_until_it_ends_then_done_with_its_times() {
    let mut h = TaskHistory::new(10);
    let id = TaskId([1; 16]);
    h.submitted(&spec(id), "task", 100);
    h.started(id, Some(42), 0, 150);
    assert_eq!(h.open(&id).map(|t| t.state), Some(TaskState::Running));
    h.finished(id, None, 300);
    assert!(h.open(&id).is_none());
    let done: Vec<_> = h.done().collect();
    assert_eq!(done.len(), 1);
    let t = done[0].to_info(NodeId::random());
    assert_eq!(
        (
            t.state,
            t.submitted_us,
            t.started_us,
            t.ended_us,
            t.worker_pid
        ),
        (TaskState::Finished, 100, Some(150), Some(300), Some(42))
    );
    assert_eq!((t.name.as_str(), t.kind.as_str()), ("f", "task"));
    assert_eq!(
        (h.finished_total, h.failed_total, h.seconds.count),
        (1, 0, 1)
    );
}

#[test]
fn a_failure_keeps_its_reason() {
    let mut h = TaskHistory::new(10);
    let id = TaskId([2; 16]);
    h.submitted(&spec(id), "task", 1);
    h.finished(id, Some("boom".into()), 2);
    let t = h.done().next().unwrap();
    assert_eq!(
        (t.state, t.error.as_deref()),
        (TaskState::Failed, Some("boom"))
    );
}

#[test]
fn forwarded_tasks_are_forgotten_here_th1() {
    let mut h = TaskHistory::new(10);
    let id = TaskId([3; 16]);
    h.submitted(&spec(id), "task", 1);
    h.forwarded(id, true);
    h.finished(id, None, 5);
    assert_eq!(h.done().count(), 0);
    assert!(h.away.is_empty(), "the peer's answer ends its wait");
    // Handed back by the peer: here again, as of when it first came,
    // and listed where it ends.
    let back = TaskId([8; 16]);
    h.submitted(&spec(back), "task", 2);
    h.forwarded(back, true);
    h.submitted(&spec(back), "task", 6);
    h.started(back, Some(9), 0, 7);
    h.finished(back, None, 8);
    let done: Vec<_> = h
        .done()
        .map(|t| (t.state, t.submitted_us, t.ended_us))
        .collect();
    assert_eq!(done, vec![(TaskState::Finished, 2, Some(8))]);
    // One this raylet hands back to its sender is not waited for.
    h.submitted(&spec(id), "task", 9);
    h.forwarded(id, false);
    assert!(h.away.is_empty());
}

#[test]
fn only_the_last_cap_finished_tasks_are_kept_th2() {
    let mut h = TaskHistory::new(3);
    for i in 0..5u8 {
        let id = TaskId([i; 16]);
        h.submitted(&spec(id), "task", i as u64);
        h.finished(id, None, 10 + i as u64);
    }
    let kept: Vec<u64> = h.done().map(|t| t.submitted_us).collect();
    assert_eq!(kept, vec![2, 3, 4]);
}

fn event(id: TaskId, ended: Option<u64>, error: Option<&str>) -> TaskEvent {
    TaskEvent {
        task_id: id,
        job_id: JobId::random(),
        name: "Log.push".into(),
        function: "Log::push".into(),
        actor_call: true,
        resources: Resources::default(),
        attempt: 0,
        arrived_us: 10,
        started_us: Some(11),
        ended_us: ended,
        error: error.map(String::from),
    }
}

#[test]
fn direct_work_runs_from_its_report_until_it_ends_th3() {
    let mut h = TaskHistory::new(10);
    let id = TaskId([4; 16]);
    h.reported(event(id, None, None), Some(7), false);
    let running: Vec<_> = h.direct_running().collect();
    assert_eq!(running.len(), 1);
    assert_eq!(
        (running[0].state, running[0].kind, running[0].worker_pid),
        (TaskState::Running, "actor_call", Some(7))
    );
    h.reported(event(id, Some(20), None), Some(7), false);
    assert_eq!(h.direct_running().count(), 0);
    let t = h.done().next().unwrap();
    assert_eq!(
        (t.state, t.submitted_us, t.started_us, t.ended_us),
        (TaskState::Finished, 10, Some(11), Some(20))
    );
    // One that ends within one report is listed (and counted) once.
    h.reported(
        event(TaskId([5; 16]), Some(30), Some("boom")),
        Some(7),
        false,
    );
    assert_eq!((h.finished_total, h.failed_total), (1, 1));
    assert_eq!(h.done().count(), 2);
}

#[test]
fn direct_work_fails_with_its_worker_th3() {
    let mut h = TaskHistory::new(10);
    h.reported(event(TaskId([6; 16]), None, None), Some(7), false);
    h.reported(event(TaskId([7; 16]), None, None), Some(8), false);
    h.worker_exited(7, "killed by signal 9", 40);
    let failed: Vec<_> = h.done().collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (
            failed[0].task_id,
            failed[0].state,
            failed[0].error.as_deref()
        ),
        (
            TaskId([6; 16]),
            TaskState::Failed,
            Some("killed by signal 9")
        )
    );
    assert_eq!(h.direct_running().count(), 1);
    // A running report read after its worker's exit: ended with it.
    h.reported(event(TaskId([8; 16]), None, None), Some(9), true);
    let late = h.done().find(|r| r.task_id == TaskId([8; 16])).unwrap();
    assert_eq!(late.worker_pid, Some(9), "its pid is kept");
    assert_eq!(h.direct_running().count(), 1, "only the live worker's");
    assert_eq!(h.done().count(), 2);
}

#[test]
fn names_are_shared_and_filters_apply_to_records() {
    let mut h = TaskHistory::new(10);
    for i in 0..2u8 {
        h.submitted(&spec(TaskId([i; 16])), "task", 1);
    }
    let (a, b) = (
        h.open(&TaskId([0; 16])).unwrap(),
        h.open(&TaskId([1; 16])).unwrap(),
    );
    assert!(Arc::ptr_eq(&a.name, &b.name));
    let f = TaskFilter {
        state: Some(TaskState::Queued),
        name: Some("F".into()),
        node: Some("n-ab".into()),
        ..Default::default()
    };
    assert!(a.passes(&f, "n-abcdef"));
    assert!(!a.passes(&f, "n-cdef"));
}

#[test]
fn tasks_waiting_in_owners_are_listed_from_their_last_snapshot_th4() {
    let mut h = TaskHistory::new(10);
    let job = JobId::random();
    let waiting = |i: u8| TaskEvent::arrived(&spec(TaskId([i; 16])), 0);
    h.owner_waiting(1, job, vec![waiting(1), waiting(2), waiting(3)], 100);
    h.owner_waiting(2, job, vec![waiting(9)], 100);
    let ids = |h: &TaskHistory| {
        let mut v: Vec<u8> = h.waiting().iter().map(|r| r.task_id.0[0]).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&h), vec![1, 2, 3, 9]);
    let r = h.waiting()[0].clone();
    assert_eq!(
        (r.state, r.job_id, r.worker_pid),
        (TaskState::Queued, job, None)
    );
    // A later snapshot replaces the last; one still waiting keeps when
    // it was first heard of.
    h.owner_waiting(1, job, vec![waiting(2), waiting(4)], 200);
    assert_eq!(ids(&h), vec![2, 4, 9]);
    let times: Vec<(u8, u64)> = h
        .waiting()
        .iter()
        .map(|r| (r.task_id.0[0], r.submitted_us))
        .filter(|(i, _)| *i != 9)
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    assert_eq!(times, vec![(2, 100), (4, 200)]);
    // One listed here otherwise is listed only so: running on a lease,
    // ended, or sent through the raylet.
    h.reported(event(TaskId([2; 16]), None, None), Some(7), false);
    h.submitted(&spec(TaskId([9; 16])), "task", 250);
    assert_eq!(ids(&h), vec![4]);
    h.reported(event(TaskId([4; 16]), Some(300), None), Some(7), false);
    assert!(h.waiting().is_empty());
    // A retry waiting in its owner is listed though its attempt before
    // ended.
    let mut retry = waiting(4);
    retry.attempt = 1;
    h.owner_waiting(1, job, vec![retry], 350);
    assert_eq!(ids(&h), vec![4]);
    // An empty snapshot, or the owner's going, ends its listing.
    h.owner_waiting(1, job, vec![waiting(5)], 400);
    h.owner_waiting(2, job, vec![waiting(6)], 400);
    h.owner_waiting(1, job, Vec::new(), 500);
    h.owner_gone(2);
    assert!(h.waiting().is_empty());
    // At most MAX_WAITING per owner.
    let many: Vec<TaskEvent> = (0..MAX_WAITING + 5)
        .map(|_| TaskEvent::arrived(&spec(TaskId::random()), 0))
        .collect();
    h.owner_waiting(3, job, many, 600);
    assert_eq!(h.waiting().len(), MAX_WAITING);
}
