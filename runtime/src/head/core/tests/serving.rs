//! Serving's rows (`core/serving.rs`): a controller's report is judged as
//! its job, listings are scoped by namespace (AC-4), an ended serving's
//! row goes and an older report never brings it back (SV-1), rows are
//! bounded and expire (SV-2).

use super::access::{add_user, refusal, submit};
use super::*;
use crate::proto::serving::ServeReport;

const NODE: Caller = Caller::Node { cert: [7; 32] };

fn report(job: JobId, namespace: &str, ended: bool) -> HeadRequest {
    reported(job, namespace, ended, 1)
}

/// Report number `n` of a controller started at 1000.
fn reported(job: JobId, namespace: &str, ended: bool, n: u64) -> HeadRequest {
    HeadRequest::ReportServe(ServeReport {
        job_id: job,
        namespace: namespace.into(),
        status: format!("{{\"deployments\":[],\"from\":\"{namespace}\",\"n\":{n}}}"),
        ended,
        order: (1000, n),
    })
}

fn now(sim: &mut Sim, caller: Caller, req: HeadRequest) -> HeadResponse {
    match sim.core.handle_gated(sim.now, caller, req) {
        Reply::Now(r) => r,
        Reply::Later(_) => panic!("answered later"),
    }
}

fn namespaces(r: HeadResponse) -> Vec<String> {
    match r {
        HeadResponse::Serve(rows) => rows.into_iter().map(|r| r.namespace).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_controllers_report_is_its_jobs_and_each_tenant_sees_its_own() {
    let mut sim = Sim::new();
    let alice = add_user(&mut sim, "alice", "developer", &["vision"], "s-alice");
    let bob = add_user(&mut sim, "bob", "developer", &["ads"], "s-bob");
    let job_a = submit(&mut sim, alice, "vision");
    let job_b = submit(&mut sim, bob, "ads");
    assert_eq!(
        now(&mut sim, NODE, report(job_a, "vision", false)),
        HeadResponse::Ok
    );
    assert_eq!(
        now(&mut sim, NODE, report(job_b, "ads", false)),
        HeadResponse::Ok
    );
    // Alice's job may not speak for ads's serving.
    let why = refusal(Some(now(&mut sim, NODE, report(job_a, "ads", false))));
    assert!(
        why.contains("alice (developer in vision) may not report serving in namespace ads"),
        "{why}"
    );
    // Nor may a user, directly.
    let why = refusal(Some(now(&mut sim, alice, report(job_a, "vision", false))));
    assert!(why.contains("speak for a node"), "{why}");

    assert_eq!(
        namespaces(now(&mut sim, alice, HeadRequest::ListServe)),
        ["vision"]
    );
    assert_eq!(
        namespaces(now(&mut sim, bob, HeadRequest::ListServe)),
        ["ads"]
    );
    assert_eq!(
        namespaces(now(&mut sim, Caller::Client, HeadRequest::ListServe)),
        ["ads", "vision"]
    );
    // Ads's row is still its own report, not Alice's attempt.
    let HeadResponse::Serve(rows) = now(&mut sim, bob, HeadRequest::ListServe) else {
        panic!()
    };
    assert!(rows[0].status.contains("\"from\":\"ads\"") && rows[0].job_id == job_b);

    // Shut down: the row goes, and a report sent before, arriving late,
    // does not bring it back (SV-1).
    let ok = |r| assert_eq!(r, HeadResponse::Ok);
    ok(now(&mut sim, NODE, reported(job_a, "vision", true, 5)));
    ok(now(&mut sim, NODE, reported(job_a, "vision", false, 4)));
    let all = |sim: &mut Sim| namespaces(now(sim, Caller::Client, HeadRequest::ListServe));
    assert_eq!(all(&mut sim), ["ads"]);
    // Serving again (a later report, or a new controller) does.
    ok(now(&mut sim, NODE, reported(job_a, "vision", false, 6)));
    assert_eq!(all(&mut sim), ["ads", "vision"]);
    // A bad namespace is refused (by the gate here; by the table for an
    // admin's job).
    match now(&mut sim, NODE, reported(job_b, "a b", false, 9)) {
        HeadResponse::Error { message, .. } => assert!(message.contains("a b"), "{message}"),
        other => panic!("{other:?}"),
    }
    let mut bare = Sim::new();
    match now(&mut bare, NODE, reported(JobId::random(), "a b", false, 9)) {
        HeadResponse::Error { message, .. } => {
            assert!(message.contains("invalid namespace"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // An oversized status is refused, naming the limit.
    let mut big = report(job_b, "ads", false);
    if let HeadRequest::ReportServe(r) = &mut big {
        r.status = "x".repeat(crate::head::core::serving::MAX_SERVE_STATUS + 1);
    }
    match now(&mut sim, NODE, big) {
        HeadResponse::Error { message, .. } => assert!(message.contains("limit"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Rows nobody reports for go after the TTL (SV-2).
    sim.now.wall_ms += crate::head::core::serving::SERVE_ROW_TTL_MS;
    assert!(all(&mut sim).is_empty());
}
