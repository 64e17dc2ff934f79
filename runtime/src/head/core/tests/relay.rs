//! Requests a raylet relays for its processes act as their job's owner
//! (AC-1, AC-4): groups, the model registry and listings are judged and
//! scoped as that user's, audited and signed in their name.

use super::access::{add_user, refusal, submit};
use super::*;
use crate::proto::access::AuditQuery;
use crate::proto::head::RelayedRequest;
use crate::proto::models::ModelRequest;
use crate::proto::runs::RunReport;

const NODE: Caller = Caller::Node { cert: [7; 32] };

fn relayed(sim: &mut Sim, job: Option<JobId>, request: RelayedRequest) -> HeadResponse {
    match sim
        .core
        .handle(sim.now, NODE, HeadRequest::Relayed { job, request })
    {
        Reply::Now(r) => r,
        Reply::Later(_) => HeadResponse::Ok,
    }
}

fn create(job: JobId) -> RelayedRequest {
    RelayedRequest::PlacementGroup(PgRequest::Create(one_cpu_group(job)))
}

fn group_of(r: &RelayedRequest) -> crate::ids::PlacementGroupId {
    match r {
        RelayedRequest::PlacementGroup(PgRequest::Create(c)) => c.pg,
        _ => unreachable!(),
    }
}

#[test]
fn relayed_requests_act_as_the_jobs_owner() {
    let mut sim = Sim::new();
    let alice = add_user(&mut sim, "alice", "developer", &["vision"], "s-alice");
    let bob = add_user(&mut sim, "bob", "developer", &["ads"], "s-bob");
    let job_a = submit(&mut sim, alice, "vision");
    let job_b = submit(&mut sim, bob, "ads");

    // Bob's job makes a group; Alice's job may not remove it, and the
    // attempt is in the trail as Alice's, from her job.
    let bobs = create(job_b);
    let pg_b = group_of(&bobs);
    let r = relayed(&mut sim, Some(job_b), bobs);
    assert!(!matches!(r, HeadResponse::Error { .. }), "{r:?}");
    let remove = RelayedRequest::PlacementGroup(PgRequest::Remove { pg: pg_b });
    let no = refusal(Some(relayed(&mut sim, Some(job_a), remove.clone())));
    assert_eq!(
        no,
        format!(
            "alice (developer in vision) may not remove placement group {pg_b} in namespace \
             ads: namespace ads was not granted to alice"
        )
    );
    let trail = sim.core.audit.query(&AuditQuery {
        action: Some("placement_group.remove".into()),
        ..Default::default()
    });
    let last = trail.last().expect("the refusal is audited");
    assert_eq!(
        (last.user.as_str(), last.origin.clone()),
        ("alice", format!("job {job_a} via cluster"))
    );
    assert!(last.outcome.starts_with("denied: "), "{last:?}");
    // Reading it is refused too; Bob's job removes its own.
    let get = RelayedRequest::PlacementGroup(PgRequest::Get { pg: pg_b });
    assert!(refusal(Some(relayed(&mut sim, Some(job_a), get))).contains("in namespace ads"));
    let r = relayed(&mut sim, Some(job_b), remove);
    assert!(!matches!(r, HeadResponse::Error { .. }), "{r:?}");

    // A group Alice's job creates is hers, whatever job the request names.
    let spoof = create(job_b);
    let pg = group_of(&spoof);
    let r = relayed(&mut sim, Some(job_a), spoof);
    assert!(!matches!(r, HeadResponse::Error { .. }), "{r:?}");
    assert_eq!(sim.core.groups.get(pg).map(|g| g.job), Some(job_a));

    // The registry: a version is registered in the owner's name, and a
    // developer's job may not promote it to production.
    let report = RunReport::points("run-a", "mlp", job_a, vec![]);
    let _ = sim
        .core
        .handle(sim.now, NODE, HeadRequest::ReportRun(report));
    let register = RelayedRequest::Models(ModelRequest::Register {
        name: "digits".into(),
        run_id: "run-a".into(),
        checkpoint: "/w".into(),
        card: String::new(),
        who: "mallory".into(),
    });
    let HeadResponse::Models(models) = relayed(&mut sim, Some(job_a), register) else {
        panic!("registered")
    };
    assert_eq!(models[0].versions[0].created_by, "alice");
    let promote = RelayedRequest::Models(ModelRequest::SetAlias {
        namespace: String::new(),
        name: "digits".into(),
        alias: "production".into(),
        version: 1,
        who: "alice".into(),
    });
    assert!(refusal(Some(relayed(&mut sim, Some(job_a), promote)))
        .ends_with("the role lacks permission models:production"));

    // Listings are the owner's: Alice's job sees vision's runs only.
    let report = RunReport::points("run-b", "mlp", job_b, vec![]);
    let _ = sim
        .core
        .handle(sim.now, NODE, HeadRequest::ReportRun(report));
    let HeadResponse::Runs(runs) = relayed(&mut sim, Some(job_a), RelayedRequest::Runs) else {
        panic!("runs")
    };
    assert_eq!(
        runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
        ["run-a"]
    );
    // AC-6: registering from ads's run reads as from a run that does not
    // exist.
    let from_run = |run: &str| {
        RelayedRequest::Models(ModelRequest::Register {
            name: "digits".into(),
            run_id: run.into(),
            checkpoint: "/w".into(),
            card: String::new(),
            who: String::new(),
        })
    };
    let message = |r: HeadResponse| match r {
        HeadResponse::Error { kind, message } => (kind, message.replace("run-b", "RUN")),
        other => panic!("{other:?}"),
    };
    let hidden = message(relayed(&mut sim, Some(job_a), from_run("run-b")));
    let missing = relayed(&mut sim, Some(job_a), from_run("no-such-run"));
    let missing = match missing {
        HeadResponse::Error { kind, message } => (kind, message.replace("no-such-run", "RUN")),
        other => panic!("{other:?}"),
    };
    assert_eq!(hidden, missing);

    // A named actor of another namespace is not the job's to find.
    let named = |ns: &str| RelayedRequest::NamedActor {
        namespace: ns.into(),
        name: "keeper".into(),
    };
    assert!(refusal(Some(relayed(&mut sim, Some(job_a), named("ads"))))
        .contains("alice (developer in vision) may not read actor keeper in namespace ads"));
    let r = relayed(&mut sim, Some(job_a), named("vision"));
    assert_eq!(r, HeadResponse::Actor(None));

    // A process of no known job acts as nobody once there are users.
    let no = refusal(Some(relayed(&mut sim, None, RelayedRequest::Runs)));
    assert!(no.starts_with("a process whose job its raylet does not know acts as nobody"));
    // Only a raylet relays.
    let r = sim.core.handle(
        sim.now,
        alice,
        HeadRequest::Relayed {
            job: Some(job_a),
            request: RelayedRequest::Runs,
        },
    );
    assert!(
        matches!(&r, Reply::Now(HeadResponse::Error { kind: ErrorKind::Unauthorized, message }) if message.contains("only a raylet relays")),
        "{r:?}"
    );
}

#[test]
fn without_users_a_relayed_request_acts_as_the_admin() {
    let mut sim = Sim::new();
    let r = relayed(&mut sim, None, create(JobId::random()));
    assert!(!matches!(r, HeadResponse::Error { .. }), "{r:?}");
    let r = relayed(&mut sim, None, RelayedRequest::Status);
    assert!(matches!(r, HeadResponse::Status(_)), "{r:?}");
}

#[test]
fn a_job_reads_what_it_runs_on_without_state_read_but_changes_only_with_permissions() {
    use crate::proto::access::AccessRequest;
    let mut sim = Sim::new();
    let runner = AccessRequest::AddRole {
        name: "runner".into(),
        permissions: vec!["jobs:submit".into()],
    };
    sim.core.access(sim.now, Caller::Client, runner, "", "fp");
    let sam = add_user(&mut sim, "sam", "runner", &["ads"], "s-sam");
    let job = submit(&mut sim, sam, "ads");
    let r = relayed(&mut sim, Some(job), RelayedRequest::Status);
    assert!(matches!(r, HeadResponse::Status(_)), "{r:?}");
    let mine = RelayedRequest::NamedActor {
        namespace: "ads".into(),
        name: "keeper".into(),
    };
    assert_eq!(
        relayed(&mut sim, Some(job), mine),
        HeadResponse::Actor(None)
    );
    let no = refusal(Some(relayed(&mut sim, Some(job), create(job))));
    assert!(
        no.ends_with("the role lacks permission placement:create"),
        "{no}"
    );
    // A user who says it relays is refused, and the attempt is audited.
    let r = sim.core.handle(
        sim.now,
        sam,
        HeadRequest::Relayed {
            job: Some(job),
            request: RelayedRequest::Status,
        },
    );
    assert!(matches!(r, Reply::Now(HeadResponse::Error { .. })), "{r:?}");
    let trail = sim.core.audit.query(&AuditQuery {
        action: Some("relay".into()),
        ..Default::default()
    });
    assert_eq!(
        trail.iter().map(|e| e.user.as_str()).collect::<Vec<_>>(),
        ["sam"]
    );
}

/// An actor of `job` in `namespace`, registered by its raylet.
fn actor_of(sim: &mut Sim, job: JobId, namespace: &str) -> crate::ids::ActorId {
    let actor = crate::ids::ActorId::random();
    let info = super::actor_info(actor, job, namespace);
    let r = sim
        .core
        .handle(sim.now, NODE, HeadRequest::RegisterActor(info, None));
    assert_eq!(r, Reply::Now(HeadResponse::Ok));
    actor
}

#[test]
fn a_kill_through_a_handle_is_judged_and_audited_as_the_killers_job() {
    let mut sim = Sim::new();
    let alice = add_user(&mut sim, "alice", "developer", &["vision"], "s-alice");
    let bob = add_user(&mut sim, "bob", "developer", &["ads"], "s-bob");
    let job_a = submit(&mut sim, alice, "vision");
    let job_b = submit(&mut sim, bob, "ads");
    let bobs = actor_of(&mut sim, job_b, "ads");
    let kill = |actor_id| RelayedRequest::KillActor {
        actor_id,
        no_restart: true,
    };
    // Alice's job holds a handle to Bob's actor: it may not kill it.
    let no = refusal(Some(relayed(&mut sim, Some(job_a), kill(bobs))));
    assert_eq!(
        no,
        format!(
            "alice (developer in vision) may not kill actor {bobs} (C) in namespace ads: \
             namespace ads was not granted to alice"
        )
    );
    // Bob's job may; the raylet then kills it.
    assert_eq!(relayed(&mut sim, Some(job_b), kill(bobs)), HeadResponse::Ok);
    // An actor the head does not know yet: the permission decides.
    let unknown = crate::ids::ActorId::random();
    assert_eq!(
        relayed(&mut sim, Some(job_a), kill(unknown)),
        HeadResponse::Ok
    );
    let trail = sim.core.audit.query(&AuditQuery {
        action: Some("actor.kill".into()),
        ..Default::default()
    });
    let seen: Vec<(&str, bool)> = trail
        .iter()
        .map(|e| (e.user.as_str(), e.outcome.starts_with("denied")))
        .collect();
    assert_eq!(seen, [("alice", true), ("bob", false), ("alice", false)]);
    assert_eq!(trail[1].origin, format!("job {job_b} via cluster"));
    assert_eq!(trail[1].target, format!("actor {bobs} (no restart)"));
    // Asked of the head directly, it is not the head's to do.
    let r = sim.core.handle(
        sim.now,
        bob,
        HeadRequest::KillActor {
            actor_id: bobs,
            no_restart: true,
        },
    );
    assert!(
        matches!(&r, Reply::Now(HeadResponse::Error { message, .. }) if message.contains("prism::kill")),
        "{r:?}"
    );
}
