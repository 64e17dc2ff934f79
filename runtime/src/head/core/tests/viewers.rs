//! Join-token viewers through the core (AC-1, AC-4): the dashboard's
//! read-only token reads the namespaces it was given and changes nothing.

use super::access::{add_user, refusal, submit};
use super::*;
use crate::proto::access::{AccessReply, AccessRequest, KeyUse};

fn viewer(sim: &mut Sim, ns: &[&str]) -> Caller {
    let id = sim
        .core
        .viewer(ns.iter().map(|s| s.to_string()).collect())
        .unwrap();
    Caller::Viewer {
        id,
        from: "10.0.0.9:6000".parse().unwrap(),
    }
}

/// Alice's job in vision, Bob's in ads, and a viewer of vision.
fn two_teams() -> (Sim, Caller, JobId, JobId, Caller) {
    let mut sim = Sim::new();
    let alice = add_user(&mut sim, "alice", "developer", &["vision"], "s-alice");
    let bob = add_user(&mut sim, "bob", "developer", &["ads"], "s-bob");
    let job_a = submit(&mut sim, alice, "vision");
    let job_b = submit(&mut sim, bob, "ads");
    let v = viewer(&mut sim, &["vision"]);
    (sim, alice, job_a, job_b, v)
}

#[test]
fn a_viewer_list_is_checked_and_the_same_list_shares_one_id() {
    let mut sim = Sim::new();
    let a = sim.core.viewer(vec!["ads".into(), "vision".into()]);
    let b = sim
        .core
        .viewer(vec!["vision".into(), "ads".into(), "ads".into()]);
    assert_eq!(a, b);
    assert_ne!(sim.core.viewer(vec!["*".into()]), a);
    assert!(sim.core.viewer(vec![]).unwrap_err().contains("named none"));
    assert!(sim
        .core
        .viewer(vec!["no spaces".into()])
        .unwrap_err()
        .contains("invalid namespace \"no spaces\""));
}

#[test]
fn ac_4_a_viewer_reads_its_namespaces_only_and_changes_nothing() {
    let (mut sim, _, job_a, job_b, v) = two_teams();

    // Reads pass the gate; the listing keeps vision's rows only.
    assert_eq!(sim.core.gate(sim.now, v, &HeadRequest::ListJobs), None);
    let Reply::Now(HeadResponse::Jobs(seen)) = sim.core.handle(sim.now, v, HeadRequest::ListJobs)
    else {
        panic!()
    };
    assert_eq!(
        seen.iter().map(|j| j.job_id).collect::<Vec<_>>(),
        vec![job_a]
    );
    let seen = sim.core.visibility(v).expect("a restricted view");
    assert!(seen.sees(job_a) && !seen.sees(job_b));
    // A viewer of every namespace sees everything, as the admin does.
    let all = viewer(&mut sim, &["*"]);
    assert_eq!(sim.core.visibility(all), None);
    assert_eq!(sim.core.visibility(Caller::Client), None);

    // Nothing changes: stopping, submitting, keys (AC-1, AC-2).
    let stop = HeadRequest::StopJob { job_id: job_a };
    assert_eq!(
        refusal(sim.core.gate(sim.now, v, &stop)),
        format!(
            "join-token viewer (viewer in vision) may not stop job {job_a} in namespace vision: \
             the role lacks permission jobs:stop-any"
        )
    );
    let key = HeadRequest::NamespaceKey {
        namespace: "vision".into(),
        usage: KeyUse::AtRest,
        job: None,
    };
    assert_eq!(
        sim.core.gate(sim.now, v, &key),
        None,
        "judged by its handler"
    );
    let Reply::Now(r) = sim.core.handle(sim.now, v, key) else {
        panic!()
    };
    assert!(refusal(Some(r)).contains("it is given no keys"));
    // It says who it is.
    let me = sim.core.access(sim.now, v, AccessRequest::WhoAmI, "", "fp");
    let HeadResponse::Access(AccessReply::Me(me)) = me else {
        panic!("{me:?}")
    };
    assert_eq!(
        (me.name.as_str(), me.role.as_str(), me.namespaces),
        ("join-token viewer", "viewer", vec!["vision".to_string()])
    );
    // The refused stop is in the trail, from the viewer's address.
    let trail = sim.core.audit.query(&Default::default());
    let last = trail.last().unwrap();
    assert_eq!(
        (
            last.user.as_str(),
            last.action.as_str(),
            last.origin.as_str()
        ),
        ("join-token viewer", "job.stop", "10.0.0.9:6000")
    );
}

#[test]
fn ac_4_one_row_asked_by_id_or_name_is_judged_in_its_namespace() {
    use crate::proto::placement::PgRequest;
    use crate::proto::runs::{RunPoint, RunReport};
    let (mut sim, alice, job_a, job_b, v) = two_teams();
    let point = vec![RunPoint {
        step: 1,
        values: vec![("loss".into(), 0.5)],
        seconds: 1.0,
    }];
    for (run, job) in [("run-a", job_a), ("run-b", job_b)] {
        let r = RunReport::points(run, "mlp", job, point.clone());
        sim.core
            .handle(sim.now, Caller::Client, HeadRequest::ReportRun(r));
    }

    // Reads of one row in another namespace are refused, naming it.
    let named = HeadRequest::GetNamedActor {
        namespace: "ads".into(),
        name: "keeper".into(),
    };
    assert!(refusal(sim.core.gate(sim.now, v, &named)).starts_with(
        "join-token viewer (viewer in vision) may not read actor keeper in namespace ads"
    ));
    let run_b = HeadRequest::GetRun {
        run_id: "run-b".into(),
    };
    // AC-6: another namespace's run reads as no run at all.
    assert_eq!(
        sim.core.gate(sim.now, v, &run_b),
        Some(HeadResponse::Run(None))
    );
    let run_a = HeadRequest::GetRun {
        run_id: "run-a".into(),
    };
    assert_eq!(sim.core.gate(sim.now, v, &run_a), None);
    // The run listing keeps vision's run only.
    let Reply::Now(HeadResponse::Runs(runs)) = sim.core.handle(sim.now, v, HeadRequest::ListRuns)
    else {
        panic!()
    };
    assert_eq!(
        runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
        ["run-a"]
    );
    // Writes to another namespace's run or group, or for its job, too.
    let spoof = RunReport::points("run-b", "mlp", job_a, point.clone());
    assert!(refusal(
        sim.core
            .gate(sim.now, alice, &HeadRequest::ReportRun(spoof))
    )
    .contains("may not report training run run-b in namespace ads"));
    // AC-6: registering a model from another namespace's run is answered
    // as from a run that does not exist.
    let register = |run_id: &str| {
        HeadRequest::Models(crate::proto::models::ModelRequest::Register {
            name: "ranker".into(),
            run_id: run_id.into(),
            checkpoint: String::new(),
            card: Default::default(),
            who: String::new(),
        })
    };
    let no_run = |id: &str| HeadResponse::Error {
        kind: ErrorKind::BadRequest,
        message: crate::head::model_table::no_run(id),
    };
    let hidden = sim.core.gate(sim.now, alice, &register("run-b"));
    assert_eq!(hidden, Some(no_run("run-b")));
    // Ads's admins see the attempt in their namespace's trail.
    let trail = sim.core.audit.query(&Default::default());
    let seen = trail.iter().any(|e| {
        e.namespace == "ads" && e.action == "model.register" && e.outcome.contains("not theirs")
    });
    assert!(seen, "{trail:#?}");
    let missing = sim.core.handle(sim.now, alice, register("no-such-run"));
    assert_eq!(missing, Reply::Now(no_run("no-such-run")));
    assert_eq!(sim.core.gate(sim.now, alice, &register("run-a")), None);
    // A bad name is refused for the name first, as for a missing run.
    let badly_named = |run_id: &str| {
        HeadRequest::Models(crate::proto::models::ModelRequest::Register {
            name: "a b".into(),
            run_id: run_id.into(),
            checkpoint: String::new(),
            card: Default::default(),
            who: String::new(),
        })
    };
    let Reply::Now(missing) = sim.core.handle(sim.now, alice, badly_named("nope")) else {
        panic!()
    };
    assert!(
        matches!(&missing, HeadResponse::Error { kind: ErrorKind::BadRequest, message } if message.contains("model name \"a b\"")),
        "{missing:?}"
    );
    assert_eq!(
        sim.core.gate(sim.now, alice, &badly_named("run-b")),
        Some(missing)
    );
    // A viewer (no models:write) is refused for the permission alone, in
    // the same words whether the run is ads's or missing.
    let as_missing = |r: Option<HeadResponse>, id: &str| format!("{r:?}").replace(id, "RUN");
    let hidden = sim.core.gate(sim.now, v, &register("run-b"));
    assert!(refusal(hidden.clone()).contains("lacks permission models:write"));
    assert_eq!(
        as_missing(hidden, "run-b"),
        as_missing(sim.core.gate(sim.now, v, &register("nope")), "nope")
    );
    let create_for = |job| HeadRequest::PlacementGroup(PgRequest::Create(one_cpu_group(job)));
    let create = create_for(job_b);
    assert!(refusal(sim.core.gate(sim.now, alice, &create)).contains("in namespace ads"));
    // Relayed by a raylet as Alice's job, the same report is refused;
    // her own run is taken.
    let node = Caller::Node { cert: [7; 32] };
    let spoof = RunReport::points("run-b", "mlp", job_a, point.clone());
    let Reply::Now(r) = sim
        .core
        .handle(sim.now, node, HeadRequest::ReportRun(spoof))
    else {
        panic!()
    };
    assert!(refusal(Some(r)).contains(
        "alice (developer in vision) may not report training run run-b in namespace ads"
    ));
    let own = RunReport::points("run-a", "mlp", job_a, point.clone());
    let r = sim.core.handle(sim.now, node, HeadRequest::ReportRun(own));
    assert!(matches!(r, Reply::Now(HeadResponse::Ok)), "{r:?}");
    // A group for a job the head does not know is nobody's to create.
    let mut unknown = create_for(job_b);
    if let HeadRequest::PlacementGroup(PgRequest::Create(c)) = &mut unknown {
        c.job = JobId::random();
    }
    assert!(refusal(sim.core.gate(sim.now, alice, &unknown)).contains("is not known to the head"));
    // A viewer writes no audit notes.
    let note = HeadRequest::Access(AccessRequest::Record {
        action: "user.revoke".into(),
        target: "user bob".into(),
    });
    assert!(refusal(sim.core.gate(sim.now, v, &note)).contains("lacks permission jobs:submit"));
}

#[test]
fn ac_5_a_request_is_judged_again_in_the_turn_that_acts_on_it() {
    let (mut sim, alice, _, job_b, _) = two_teams();
    // Alice kills an actor the head does not know yet: the gate the
    // server runs as the request arrives judges it by her permission
    // alone, and passes it.
    let actor = crate::ids::ActorId::random();
    let kill = HeadRequest::KillActor {
        actor_id: actor,
        no_restart: true,
    };
    assert_eq!(sim.core.gate(sim.now, alice, &kill), None);
    // Before her request's turn, the ads team's job registers it.
    let info = super::actor_info(actor, job_b, "ads");
    let r = sim.core.handle(
        sim.now,
        Caller::Node { cert: [9; 32] },
        HeadRequest::RegisterActor(info, None),
    );
    assert_eq!(r, Reply::Now(HeadResponse::Ok));
    // Her request's turn judges it again, on ads' actor now: refused,
    // and the actor lives on.
    let Reply::Now(r) = sim.core.handle_gated(sim.now, alice, kill) else {
        panic!()
    };
    let why = refusal(Some(r));
    assert!(
        why.contains("alice (developer in vision) may not kill actor")
            && why.contains("in namespace ads"),
        "{why}"
    );
    let get = HeadRequest::GetActor { actor_id: actor };
    let Reply::Now(HeadResponse::Actor(Some(a))) = sim.core.handle(sim.now, Caller::Client, get)
    else {
        panic!()
    };
    assert_ne!(a.state, crate::proto::head::ActorState::Dead, "{a:?}");
}
