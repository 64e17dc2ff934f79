//! Serving's rows (`core/serving.rs`): a controller's report is judged as
//! its job, listings are scoped by namespace (AC-4), an ended serving's
//! row goes.

use super::access::{add_user, refusal, submit};
use super::*;
use crate::proto::serving::ServeReport;

const NODE: Caller = Caller::Node { cert: [7; 32] };

fn report(job: JobId, namespace: &str, ended: bool) -> HeadRequest {
    HeadRequest::ReportServe(ServeReport {
        job_id: job,
        namespace: namespace.into(),
        status: format!("{{\"deployments\":[],\"from\":\"{namespace}\"}}"),
        ended,
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

    // Shut down: the row goes.
    assert_eq!(
        now(&mut sim, NODE, report(job_a, "vision", true)),
        HeadResponse::Ok
    );
    assert_eq!(
        namespaces(now(&mut sim, Caller::Client, HeadRequest::ListServe)),
        ["ads"]
    );
    // An oversized status is refused, naming the limit.
    let mut big = report(job_b, "ads", false);
    if let HeadRequest::ReportServe(r) = &mut big {
        r.status = "x".repeat(crate::head::core::serving::MAX_SERVE_STATUS + 1);
    }
    match now(&mut sim, NODE, big) {
        HeadResponse::Error { message, .. } => assert!(message.contains("limit"), "{message}"),
        other => panic!("{other:?}"),
    }
}
