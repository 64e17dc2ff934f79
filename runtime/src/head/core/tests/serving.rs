//! Serving's rows (`core/serving.rs`): a controller's report is judged as
//! its job and taken from the namespace's live controller only (SV-3),
//! listings are scoped by namespace (AC-4), an ended serving's row goes and
//! an older report never brings it back (SV-1), rows are bounded and
//! expire (SV-2).

use super::access::{add_user, refusal, submit};
use super::*;
use crate::proto::serving::{ServeReport, CONTROLLER_NAME};

const NODE: Caller = Caller::Node { cert: [7; 32] };

fn now(sim: &mut Sim, caller: Caller, req: HeadRequest) -> HeadResponse {
    match sim.core.handle_gated(sim.now, caller, req) {
        Reply::Now(r) => r,
        Reply::Later(_) => panic!("answered later"),
    }
}

/// An actor of `job` named `name` in `namespace`, as its raylet registers it.
fn actor_named(sim: &mut Sim, job: JobId, namespace: &str, name: &str) -> ActorId {
    let actor = ActorId::random();
    let mut info = super::actor_info(actor, job, namespace);
    info.name = Some(name.into());
    let r = now(sim, NODE, HeadRequest::RegisterActor(info, None));
    assert_eq!(r, HeadResponse::Ok);
    actor
}

/// Report number `n` of the controller `actor` (started at 1000).
fn reported(actor: ActorId, job: JobId, namespace: &str, ended: bool, n: u64) -> HeadRequest {
    HeadRequest::ReportServe(ServeReport {
        job_id: job,
        actor_id: Some(actor),
        namespace: namespace.into(),
        status: format!("{{\"deployments\":[],\"from\":\"{namespace}\",\"n\":{n}}}"),
        ended,
        order: (1000, n),
    })
}

fn namespaces(r: HeadResponse) -> Vec<String> {
    match r {
        HeadResponse::Serve(rows) => rows.into_iter().map(|r| r.namespace).collect(),
        other => panic!("{other:?}"),
    }
}

fn error(r: HeadResponse) -> String {
    match r {
        HeadResponse::Error { message, .. } => message,
        other => panic!("not an error: {other:?}"),
    }
}

#[test]
fn a_controllers_report_is_its_own_and_each_tenant_sees_its_own() {
    let mut sim = Sim::new();
    let alice = add_user(&mut sim, "alice", "developer", &["vision"], "s-alice");
    let bob = add_user(&mut sim, "bob", "developer", &["ads"], "s-bob");
    let job_a = submit(&mut sim, alice, "vision");
    let job_b = submit(&mut sim, bob, "ads");
    let ca = actor_named(&mut sim, job_a, "vision", CONTROLLER_NAME);
    let cb = actor_named(&mut sim, job_b, "ads", CONTROLLER_NAME);
    let ok = |r| assert_eq!(r, HeadResponse::Ok);
    ok(now(&mut sim, NODE, reported(ca, job_a, "vision", false, 1)));
    ok(now(&mut sim, NODE, reported(cb, job_b, "ads", false, 1)));
    // Alice's job may not speak for ads's serving.
    let why = refusal(Some(now(
        &mut sim,
        NODE,
        reported(ca, job_a, "ads", false, 2),
    )));
    assert!(
        why.contains("alice (developer in vision) may not report serving in namespace ads"),
        "{why}"
    );
    // Nor may a user, directly.
    let why = refusal(Some(now(
        &mut sim,
        alice,
        reported(ca, job_a, "vision", false, 2),
    )));
    assert!(why.contains("speak for a node"), "{why}");
    // SV-3: another actor of vision's, or none (a driver), may not either.
    let other = actor_named(&mut sim, job_a, "vision", "keeper");
    let why = error(now(
        &mut sim,
        NODE,
        reported(other, job_a, "vision", true, 3),
    ));
    assert!(
        why.contains("only the serve controller (actor prism-serve in namespace vision)"),
        "{why}"
    );
    let mut driver = reported(ca, job_a, "vision", true, 3);
    if let HeadRequest::ReportServe(r) = &mut driver {
        r.actor_id = None;
    }
    assert!(error(now(&mut sim, NODE, driver)).contains("only the serve controller"));

    assert_eq!(
        namespaces(now(&mut sim, alice, HeadRequest::ListServe)),
        ["vision"]
    );
    assert_eq!(
        namespaces(now(&mut sim, bob, HeadRequest::ListServe)),
        ["ads"]
    );
    let all = |sim: &mut Sim| namespaces(now(sim, Caller::Client, HeadRequest::ListServe));
    assert_eq!(all(&mut sim), ["ads", "vision"]);
    // Ads's row is still its own report, not Alice's attempt.
    let HeadResponse::Serve(rows) = now(&mut sim, bob, HeadRequest::ListServe) else {
        panic!()
    };
    assert!(rows[0].status.contains("\"from\":\"ads\"") && rows[0].job_id == job_b);

    // Shut down: the row goes, and a report sent before, arriving late,
    // does not bring it back (SV-1).
    ok(now(&mut sim, NODE, reported(ca, job_a, "vision", true, 5)));
    ok(now(&mut sim, NODE, reported(ca, job_a, "vision", false, 4)));
    assert_eq!(all(&mut sim), ["ads"]);
    // Serving again (a later report, or a new controller) does.
    ok(now(&mut sim, NODE, reported(ca, job_a, "vision", false, 6)));
    assert_eq!(all(&mut sim), ["ads", "vision"]);

    // An oversized status is refused, naming the limit.
    let mut big = reported(cb, job_b, "ads", false, 7);
    if let HeadRequest::ReportServe(r) = &mut big {
        r.status = "x".repeat(crate::head::core::serving::MAX_SERVE_STATUS + 1);
    }
    assert!(error(now(&mut sim, NODE, big)).contains("limit"));
    // Rows nobody reports for go after the TTL (SV-2).
    sim.now.wall_ms += crate::head::core::serving::SERVE_ROW_TTL_MS;
    assert!(all(&mut sim).is_empty());
}

#[test]
fn a_bad_namespace_is_refused() {
    let mut sim = Sim::new();
    let job = JobId::random();
    let c = actor_named(&mut sim, job, "a b", CONTROLLER_NAME);
    let why = error(now(&mut sim, NODE, reported(c, job, "a b", false, 1)));
    assert!(why.contains("invalid namespace \"a b\""), "{why}");
}
