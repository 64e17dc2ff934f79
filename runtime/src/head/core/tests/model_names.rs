//! Model names per namespace (MR-5) and the namespace a model request acts
//! in when it names none (MN-1, MN-2 in `core/model_names.rs`).

use super::access::{add_user, refusal, submit};
use super::*;
use crate::proto::head::RelayedRequest;
use crate::proto::models::{ModelInfo, ModelRequest};
use crate::proto::runs::RunReport;

const NODE: Caller = Caller::Node { cert: [7; 32] };

/// Registers `name` from a fresh run of `job`, as the cluster's admin.
fn register(sim: &mut Sim, job: JobId, run: &str, name: &str) {
    let report = RunReport::points(run, "mlp", job, vec![]);
    let _ = sim
        .core
        .handle(sim.now, NODE, HeadRequest::ReportRun(report));
    let req = HeadRequest::Models(ModelRequest::Register {
        name: name.into(),
        run_id: run.into(),
        checkpoint: String::new(),
        card: String::new(),
        who: "admin".into(),
    });
    let r = sim.core.handle(sim.now, Caller::Client, req);
    assert!(matches!(r, Reply::Now(HeadResponse::Models(_))), "{r:?}");
}

fn show(sim: &mut Sim, caller: Caller, namespace: &str, name: &str) -> HeadResponse {
    let req = HeadRequest::Models(ModelRequest::Show {
        namespace: namespace.into(),
        name: name.into(),
    });
    match sim.core.handle_gated(sim.now, caller, req) {
        Reply::Now(r) => r,
        Reply::Later(_) => panic!("answered later"),
    }
}

fn shown(r: HeadResponse) -> ModelInfo {
    match r {
        HeadResponse::Models(mut m) if m.len() == 1 => m.remove(0),
        other => panic!("not one model: {other:?}"),
    }
}

fn error(r: HeadResponse) -> String {
    match r {
        HeadResponse::Error { message, .. } => message,
        other => panic!("not an error: {other:?}"),
    }
}

#[test]
fn mr_5_two_tenants_each_have_their_own_model_of_one_name() {
    let mut sim = Sim::new();
    let alice = add_user(&mut sim, "alice", "developer", &["vision"], "s-alice");
    let bob = add_user(&mut sim, "bob", "developer", &["ads"], "s-bob");
    let job_a = submit(&mut sim, alice, "vision");
    let job_b = submit(&mut sim, bob, "ads");
    register(&mut sim, job_a, "run-a", "ranker");
    register(&mut sim, job_b, "run-b", "ranker");
    register(&mut sim, job_b, "run-c", "ranker");

    // MN-2: each finds their own, unnamed.
    let a = shown(show(&mut sim, alice, "", "ranker"));
    assert_eq!((a.namespace.as_str(), a.versions.len()), ("vision", 1));
    let b = shown(show(&mut sim, bob, "", "ranker"));
    assert_eq!((b.namespace.as_str(), b.versions.len()), ("ads", 2));
    // Naming another tenant's namespace is refused, as for any name.
    let why = refusal(Some(show(&mut sim, alice, "ads", "ranker")));
    assert!(
        why.contains("alice (developer in vision) may not read model ranker in namespace ads"),
        "{why}"
    );
    let why = refusal(Some(show(&mut sim, alice, "ads", "no-such")));
    assert!(
        why.contains("may not read model no-such in namespace ads"),
        "{why}"
    );
    // A name only another tenant has reads as any unknown name: nothing
    // tells Alice that ads has one.
    register(&mut sim, job_b, "run-d", "ctr");
    let unknown = error(show(&mut sim, alice, "", "ctr"));
    let never = error(show(&mut sim, alice, "", "never-registered"));
    assert_eq!(
        unknown.replace("ctr", "X"),
        never.replace("never-registered", "X")
    );
    assert!(
        unknown.contains("in namespace vision") && !unknown.contains("ads"),
        "{unknown}"
    );

    // The admin sees both: an unnamed request is ambiguous, and says so;
    // a named one acts there.
    let why = error(show(&mut sim, Caller::Client, "", "ranker"));
    assert!(
        why.contains("model ranker is in namespaces ads, vision: name one"),
        "{why}"
    );
    assert_eq!(
        shown(show(&mut sim, Caller::Client, "ads", "ranker"))
            .versions
            .len(),
        2
    );
    assert_eq!(
        shown(show(&mut sim, Caller::Client, "", "ctr")).namespace,
        "ads"
    );
}

#[test]
fn mn_1_a_process_acts_on_its_jobs_models() {
    let mut sim = Sim::new();
    let alice = add_user(
        &mut sim,
        "alice",
        "developer",
        &["vision", "ads"],
        "s-alice",
    );
    let job_a = submit(&mut sim, alice, "vision");
    let job_b = submit(&mut sim, alice, "ads");
    register(&mut sim, job_a, "run-a", "ranker");
    register(&mut sim, job_b, "run-b", "ranker");
    let get = |sim: &mut Sim, job| {
        let request = RelayedRequest::Models(ModelRequest::Show {
            namespace: String::new(),
            name: "ranker".into(),
        });
        match sim.core.handle(
            sim.now,
            NODE,
            HeadRequest::Relayed {
                job: Some(job),
                request,
            },
        ) {
            Reply::Now(r) => shown(r).namespace,
            Reply::Later(_) => panic!("answered later"),
        }
    };
    assert_eq!(get(&mut sim, job_a), "vision");
    assert_eq!(get(&mut sim, job_b), "ads");
    // Alice herself sees both, so must name one: the gate says so, not a
    // refusal judged in a namespace the request would not act in.
    let why = error(show(&mut sim, alice, "", "ranker"));
    assert!(why.contains("in namespaces ads, vision"), "{why}");
    let promote = HeadRequest::Models(ModelRequest::SetAlias {
        namespace: String::new(),
        name: "ranker".into(),
        alias: "production".into(),
        version: 1,
        who: "alice".into(),
    });
    match sim.core.gate(sim.now, alice, &promote) {
        Some(HeadResponse::Error {
            kind: crate::proto::head::ErrorKind::BadRequest,
            message,
        }) => assert!(message.contains("name one (--namespace)"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        shown(show(&mut sim, alice, "vision", "ranker"))
            .versions
            .len(),
        1
    );
}
