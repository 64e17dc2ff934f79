use super::*;
use proptest::prelude::*;

fn rows() -> Vec<Value> {
    vec![
        json!({"actor_id": "a-1111aaaa", "state": "alive", "name": "x", "restarts": 2, "job_id": "j-77"}),
        json!({"actor_id": "a-2222bbbb", "state": "dead", "name": null, "restarts": 0, "job_id": "j-77"}),
        json!({"actor_id": "a-3333cccc", "state": "alive", "name": "y", "restarts": 1, "job_id": "j-88"}),
    ]
}

fn q(pairs: &[(&str, &str)]) -> Query {
    Query::parse(pairs.iter().copied()).unwrap()
}

fn ids(p: &Page) -> Vec<&str> {
    p.rows
        .iter()
        .map(|r| r["actor_id"].as_str().unwrap())
        .collect()
}

#[test]
fn filters_match_case_insensitively_and_all_must_hold() {
    let p = q(&[("state", "ALIVE"), ("job", "j-77")])
        .apply_values(rows())
        .unwrap();
    assert_eq!(ids(&p), vec!["a-1111aaaa"]);
    assert_eq!(p.total, 1);
}

#[test]
fn ids_match_by_prefix_and_null_by_name() {
    let p = q(&[("actor", "a-2222")]).apply_values(rows()).unwrap();
    assert_eq!(ids(&p), vec!["a-2222bbbb"]);
    let p = q(&[("name", "null")]).apply_values(rows()).unwrap();
    assert_eq!(ids(&p), vec!["a-2222bbbb"]);
}

#[test]
fn sort_and_page() {
    let p = q(&[
        ("sort", "restarts"),
        ("order", "desc"),
        ("limit", "2"),
        ("offset", "1"),
    ])
    .apply_values(rows())
    .unwrap();
    assert_eq!(ids(&p), vec!["a-3333cccc", "a-2222bbbb"]);
    assert_eq!((p.total, p.offset, p.limit), (3, 1, Some(2)));
}

#[test]
fn unknown_fields_and_bad_numbers_are_named() {
    let e = q(&[("colour", "red")]).apply_values(rows()).unwrap_err();
    assert!(
        e.to_string().contains("\"colour\"") && e.to_string().contains("actor_id"),
        "{e}"
    );
    let e = Query::parse([("limit", "ten")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "limit=\"ten\" is not a non-negative whole number"
    );
    assert!(Query::parse([("order", "up")]).is_err());
}

#[test]
fn the_trace_has_one_event_per_finished_run_and_a_name_per_node() {
    use crate::ids::{JobId, TaskId};
    use crate::proto::state::TaskState;
    let node = NodeId::random();
    let task = |i: u8, started: Option<u64>, ended: Option<u64>| TaskInfo {
        task_id: TaskId([i; 16]).to_string(),
        job_id: JobId::random(),
        name: format!("f{i}"),
        function: "f".into(),
        kind: "task".into(),
        state: TaskState::Finished,
        node_id: node,
        worker_pid: Some(7),
        resources: Default::default(),
        attempt: 0,
        submitted_us: 10,
        started_us: started,
        ended_us: ended,
        error: None,
    };
    let trace = chrome_trace(&[task(1, Some(100), Some(250)), task(2, Some(5), None)]);
    let events = trace.as_array().unwrap();
    assert_eq!(events.len(), 2, "{trace:#}");
    assert_eq!(events[0]["ph"], "X");
    assert_eq!(
        (events[0]["ts"].as_u64(), events[0]["dur"].as_u64()),
        (Some(100), Some(150))
    );
    assert_eq!(events[0]["tid"], 7);
    assert_eq!(events[1]["ph"], "M");
}

proptest! {
    /// Paging never invents rows: every page is a slice of the filtered,
    /// sorted rows, and `total` counts them all.
    #[test]
    fn pages_are_slices_of_the_filtered_rows(
        states in proptest::collection::vec(0u8..3, 0..40),
        limit in 0usize..10,
        offset in 0usize..50,
    ) {
        let rows: Vec<Value> = states.iter().enumerate()
            .map(|(i, s)| {
                let state = ["alive", "dead", "pending"][*s as usize];
                json!({"id": i, "state": state})
            })
            .collect();
        let all = q(&[("state", "alive"), ("sort", "id")]).apply_values(rows.clone()).unwrap();
        let want = states.iter().filter(|s| **s == 0).count();
        prop_assert_eq!(all.total, want);
        let page = Query { limit: Some(limit), offset, ..q(&[("state", "alive"), ("sort", "id")]) }
            .apply_values(rows).unwrap();
        prop_assert_eq!(page.total, want);
        let expect: Vec<Value> = all.rows.iter().skip(offset).take(limit).cloned().collect();
        prop_assert_eq!(page.rows, expect);
    }
}

#[test]
fn simple_task_queries_are_pushed_down_and_others_are_not() {
    use crate::proto::state::TaskState;
    let f = q(&[
        ("state", "Finished"),
        ("job", "j-12"),
        ("limit", "10"),
        ("offset", "20"),
    ])
    .task_filter()
    .unwrap();
    assert_eq!(
        (f.state, f.job.as_deref(), f.newest),
        (Some(TaskState::Finished), Some("j-12"), 30)
    );
    assert!(
        q(&[("kind", "task")]).task_filter().is_none(),
        "kind is filtered by the head's caller"
    );
    assert!(
        q(&[("sort", "ended_us")]).task_filter().is_none(),
        "oldest first is not pushed down"
    );
    assert!(q(&[("sort", "name"), ("order", "desc")])
        .task_filter()
        .is_none());
    let f = q(&[("sort", "ended_us"), ("order", "desc")])
        .task_filter()
        .unwrap();
    assert_eq!(f.by, crate::proto::state::TaskTime::Ended);
    assert!(q(&[("state", "sleeping")]).task_filter().is_none());
    assert!(q(&[("sort", "submitted_us"), ("order", "desc")])
        .task_filter()
        .is_some());
}
