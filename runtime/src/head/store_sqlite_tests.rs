//! The SQLite store's tests: rows, runs, models and the audit trail
//! survive a head that died; a clean stop is not recovered.

use super::*;
use crate::head::durable::{ObjectRow, Table};
use crate::ids::NodeId;
use prism_objectstore::ObjectId;

fn object(n: u8) -> Row {
    Row::Object(ObjectRow {
        id: ObjectId([n; 16]),
        size: u64::from(n),
        nodes: vec![NodeId([n; 16])],
        residency: None,
    })
}

#[test]
fn models_survive_a_head_that_died() {
    use crate::proto::models::ModelInfo;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("head.db");
    let (mut s, _) = SqliteStore::open(&path).unwrap();
    s.begin_cluster(ClusterId::random()).unwrap();
    let m = ModelInfo {
        name: "digits".into(),
        namespace: "vision".into(),
        versions: vec![],
        aliases: vec![("champion".into(), 1)],
        history: vec![],
    };
    s.commit(&[Change::Put(Row::Model(m.clone()))]).unwrap();
    drop(s);
    let Opened::Recovered { snapshot, .. } = SqliteStore::open(&path).unwrap().1 else {
        panic!("not recovered")
    };
    assert_eq!(snapshot.models, vec![m.clone()]);
    // A cluster written by schema 3 (a model under its global name's key)
    // is recovered, and marked 4: the registry moves the row when it
    // writes again (MR-5).
    let (mut s, _) = SqliteStore::open(&path).unwrap();
    s.commit(&[Change::Delete(
        Table::Model,
        crate::head::durable::model_key("vision", "digits"),
    )])
    .unwrap();
    s.conn
        .execute(
            "INSERT INTO rows(tbl, key, value) VALUES (?1, ?2, ?3)",
            params![
                Table::Model as i64,
                &crate::head::durable::legacy_model_key("digits")[..],
                Row::Model(m.clone()).encode().unwrap()
            ],
        )
        .unwrap();
    s.set_meta("schema", b"3").unwrap();
    drop(s);
    let (s, opened) = SqliteStore::open(&path).unwrap();
    let Opened::Recovered { snapshot, .. } = opened else {
        panic!("not recovered")
    };
    assert_eq!(snapshot.models, vec![m]);
    assert_eq!(s.meta("schema").unwrap().as_deref(), Some(&b"4"[..]));
}

#[test]
fn a_cluster_an_older_build_wrote_is_refused_to_recover_but_not_to_replace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("head.db");
    let (mut s, _) = SqliteStore::open(&path).unwrap();
    s.begin_cluster(ClusterId::random()).unwrap();
    s.set_meta("schema", b"2").unwrap();
    drop(s);
    let e = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(
        e.contains("written by an older build (schema version 2"),
        "{e}"
    );
    assert!(e.contains("start with --fresh"), "{e}");
    let (s, opened) = SqliteStore::open_with(&path, true).unwrap();
    assert!(matches!(opened, Opened::Fresh));
    assert_eq!(s.meta("schema").unwrap().as_deref(), Some(&b"4"[..]));
}

#[test]
fn runs_and_their_points_survive_a_head_that_died() {
    use crate::head::run_table::RunTable;
    use crate::proto::runs::{RunPoint, RunReport};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("head.db");
    let (mut s, _) = SqliteStore::open(&path).unwrap();
    s.begin_cluster(ClusterId::random()).unwrap();
    let mut t = RunTable::default();
    let point = |step| RunPoint {
        step,
        values: vec![("loss".into(), 1.0 / (step as f64 + 1.0))],
        seconds: step as f64,
    };
    for batch in [0..3u64, 3..5] {
        let mut r = RunReport::points(
            "run-1",
            "mlp",
            crate::JobId::random(),
            batch.map(point).collect(),
        );
        r.params = vec![("lr".into(), "0.1".into())];
        t.report(r, 1);
        let c = t.take_changes();
        let mut changes: Vec<Change> = c
            .rows
            .into_iter()
            .map(|r| Change::Put(Row::Run(r)))
            .collect();
        changes.extend(c.points.into_iter().map(|(id, p)| Change::RunPoints(id, p)));
        s.commit(&changes).unwrap();
    }
    drop(s);
    let Opened::Recovered { snapshot, .. } = SqliteStore::open(&path).unwrap().1 else {
        panic!("not recovered")
    };
    let back = RunTable::restore(snapshot.runs, snapshot.run_points);
    assert_eq!(back.get("run-1"), t.get("run-1"));
    assert_eq!(
        back.get("run-1").unwrap().0.params,
        vec![("lr".to_string(), "0.1".to_string())]
    );
}

#[test]
fn dh_2_a_head_that_died_is_recovered_with_its_last_commit_and_a_clean_stop_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("head.db");
    let (mut s, opened) = SqliteStore::open(&path).unwrap();
    assert!(matches!(opened, Opened::Fresh));
    let cluster = ClusterId::random();
    s.begin_cluster(cluster).unwrap();
    s.commit(&[Change::Put(object(1)), Change::Put(object(2))])
        .unwrap();
    s.commit(&[
        Change::Delete(Table::Object, [1; 16]),
        Change::Put(object(3)),
    ])
    .unwrap();
    // The process "dies": the connection is dropped without a clean stop.
    drop(s);
    let (mut s, opened) = SqliteStore::open(&path).unwrap();
    match opened {
        Opened::Recovered {
            cluster_id,
            snapshot,
        } => {
            assert_eq!(cluster_id, cluster);
            let ids: Vec<u8> = snapshot.objects.iter().map(|o| o.id.0[0]).collect();
            assert_eq!(ids, vec![2, 3]);
        }
        other => panic!("{other:?}"),
    }
    s.resume().unwrap();
    s.mark_clean_stop().unwrap();
    drop(s);
    let (mut s, opened) = SqliteStore::open(&path).unwrap();
    assert!(matches!(opened, Opened::Fresh), "a clean stop starts fresh");
    s.begin_cluster(ClusterId::random()).unwrap();
    drop(s);
    match SqliteStore::open(&path).unwrap().1 {
        Opened::Recovered { snapshot, .. } => {
            assert!(snapshot.objects.is_empty(), "a new cluster starts empty")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn au_3_the_trail_outlives_a_fresh_cluster_and_a_damaged_entry_is_read_not_fatal() {
    use crate::head::access::audit::{verify, AuditLog, Record};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("head.db");
    let (mut s, _) = SqliteStore::open(&path).unwrap();
    s.begin_cluster(ClusterId::random()).unwrap();
    let mut log = AuditLog::default();
    for who in ["alice", "bob", "carol"] {
        log.append(
            1,
            Record {
                user: who.into(),
                origin: "o".into(),
                action: "job.submit".into(),
                target: "job".into(),
                namespace: "ns".into(),
                outcome: "ok".into(),
            },
        );
    }
    let changes: Vec<Change> = log.take_fresh().into_iter().map(Change::Audit).collect();
    s.commit(&changes).unwrap();
    s.mark_clean_stop().unwrap();
    drop(s);
    let (mut s, _) = SqliteStore::open_with(&path, true).unwrap();
    s.begin_cluster(ClusterId::random()).unwrap();
    let kept = s.audit_entries().unwrap();
    assert_eq!(verify(&kept), (3, None), "a fresh cluster keeps the trail");
    // Someone flips one byte of entry 2 in the file.
    s.conn
        .execute("UPDATE audit SET user = X'626f63' WHERE seq = 2", [])
        .unwrap();
    let damaged = s.audit_entries().unwrap();
    assert_eq!(damaged[1].user, "boc");
    assert_eq!(
        verify(&damaged).1.unwrap(),
        "entry 2 was altered: its contents no longer match its hash"
    );
}
