//! AC-1..3 and AU-1 through the core: users added by the admin, their
//! requests gated, their jobs owned and namespaced, their listings scoped,
//! every change (and every refusal of one) in the trail.

use super::*;
use crate::proto::access::{AccessReply, AccessRequest, AuditQuery};

const FROM: &str = "10.0.0.7:5000";

pub(super) fn add_user(sim: &mut Sim, name: &str, role: &str, ns: &[&str], secret: &str) -> Caller {
    let req = AccessRequest::AddUser {
        name: name.into(),
        role: role.into(),
        namespaces: ns.iter().map(|s| s.to_string()).collect(),
    };
    let r = sim.core.access(sim.now, Caller::Client, req, secret, "fp");
    let HeadResponse::Access(AccessReply::UserAdded { token, .. }) = r else {
        panic!("{r:?}")
    };
    assert_eq!(token, format!("{name}@{secret}.fp"));
    let id = sim.core.authenticate(name, secret).unwrap();
    Caller::User {
        id,
        from: FROM.parse().unwrap(),
    }
}

pub(super) fn submit(sim: &mut Sim, caller: Caller, ns: &str) -> JobId {
    let sub = JobSubmission {
        hash: [1; 32],
        name: "train".into(),
        args: vec![],
        env: vec![],
        namespace: ns.into(),
        demand: Default::default(),
        priority: 0,
        spot: false,
    };
    let id = JobId::random();
    let gate = sim
        .core
        .gate(sim.now, caller, &HeadRequest::SubmitJob(sub.clone()));
    assert_eq!(gate, None);
    assert_eq!(
        sim.core.submit_job(sim.now, caller, id, sub),
        HeadResponse::JobSubmitted { job_id: id }
    );
    sim.core.job_started(id, 4242);
    id
}

pub(super) fn refusal(r: Option<HeadResponse>) -> String {
    match r {
        Some(HeadResponse::Error {
            kind: ErrorKind::Forbidden,
            message,
        }) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn ac_users_act_within_their_role_and_namespaces_and_leave_a_trail() {
    let mut sim = Sim::new();
    let alice = add_user(&mut sim, "alice", "developer", &["vision"], "s-alice");
    let bob = add_user(&mut sim, "bob", "developer", &["ads"], "s-bob");
    let viewer = add_user(&mut sim, "vera", "viewer", &["*"], "s-vera");

    let job_a = submit(&mut sim, alice, "");
    assert_eq!(sim.core.job(job_a).unwrap().namespace, "vision");
    assert_eq!(sim.core.job(job_a).unwrap().owner, "alice");
    let job_b = submit(&mut sim, bob, "ads");

    // Bob may not stop Alice's job; the refusal names everything (AC-2).
    let stop_a = HeadRequest::StopJob { job_id: job_a };
    let msg = refusal(sim.core.gate(sim.now, bob, &stop_a));
    assert_eq!(
        msg,
        format!("bob (developer in ads) may not stop job {job_a} in namespace vision: the role lacks permission jobs:stop-any")
    );
    // Submitting into a namespace not granted is refused too.
    let sub = JobSubmission {
        hash: [1; 32],
        name: "x".into(),
        args: vec![],
        env: vec![],
        namespace: "vision".into(),
        demand: Default::default(),
        priority: 0,
        spot: false,
    };
    let msg = refusal(sim.core.gate(sim.now, bob, &HeadRequest::SubmitJob(sub)));
    assert!(
        msg.ends_with("namespace vision was not granted to bob"),
        "{msg}"
    );
    // The viewer reads everything and changes nothing.
    assert_eq!(sim.core.gate(sim.now, viewer, &HeadRequest::ListJobs), None);
    assert!(refusal(sim.core.gate(sim.now, viewer, &stop_a)).contains("lacks permission jobs:stop"));
    let drain = HeadRequest::DrainNode {
        node_id: NodeId::random(),
        reason: "x".into(),
        deadline_ms: 1,
    };
    assert!(refusal(sim.core.gate(sim.now, alice, &drain)).contains("nodes:manage"));
    let add = HeadRequest::Access(AccessRequest::AddUser {
        name: "eve".into(),
        role: "admin".into(),
        namespaces: vec![],
    });
    assert!(refusal(sim.core.gate(sim.now, alice, &add)).contains("users:manage"));

    // Alice stops her own job; listings are scoped to each user's namespaces.
    assert_eq!(sim.core.gate(sim.now, alice, &stop_a), None);
    assert!(matches!(
        sim.core.handle(sim.now, alice, stop_a),
        Reply::Now(HeadResponse::Ok)
    ));
    let Reply::Now(HeadResponse::Jobs(seen)) = sim.core.handle(sim.now, bob, HeadRequest::ListJobs)
    else {
        panic!()
    };
    assert_eq!(
        seen.iter().map(|j| j.job_id).collect::<Vec<_>>(),
        vec![job_b]
    );
    let Reply::Now(HeadResponse::Jobs(all)) =
        sim.core.handle(sim.now, viewer, HeadRequest::ListJobs)
    else {
        panic!()
    };
    assert_eq!(all.len(), 2);

    // AC-3: a revoked user is refused on the connection they already hold.
    let revoke = AccessRequest::RevokeUser { name: "bob".into() };
    sim.core.access(sim.now, Caller::Client, revoke, "", "fp");
    assert!(refusal(sim.core.gate(sim.now, bob, &HeadRequest::ListJobs)).contains("revoked"));
    assert!(sim.core.authenticate("bob", "s-bob").is_err());

    // AU-1: the trail holds the changes and the refused attempts, chained.
    let entries = sim.core.audit.query(&AuditQuery::default());
    let actions: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e.user.as_str(),
                e.action.as_str(),
                e.outcome.split(':').next().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("admin", "user.add", "ok"),
            ("admin", "user.add", "ok"),
            ("admin", "user.add", "ok"),
            ("alice", "job.submit", "ok"),
            ("bob", "job.submit", "ok"),
            ("bob", "job.stop", "denied"),
            ("bob", "job.submit", "denied"),
            ("vera", "job.stop", "denied"),
            ("alice", "node.drain", "denied"),
            ("alice", "user.add", "denied"),
            ("alice", "job.stop", "ok"),
            ("admin", "user.revoke", "ok"),
        ]
    );
    assert_eq!(entries[3].origin, FROM);
    assert_eq!(entries[0].origin, "join token");
    assert_eq!(crate::head::access::audit::verify(&entries), (12, None));
}

#[test]
fn a_users_model_requests_are_signed_with_their_own_name() {
    let mut sim = Sim::new();
    let alice = add_user(&mut sim, "alice", "developer", &["vision"], "s");
    let mut req = HeadRequest::Models(crate::proto::models::ModelRequest::SetAlias {
        namespace: String::new(),
        name: "digits".into(),
        alias: "production".into(),
        version: 1,
        who: "admin".into(),
    });
    assert!(refusal(sim.core.gate(sim.now, alice, &req)).contains("models:production"));
    sim.core.stamp(alice, &mut req).unwrap();
    let HeadRequest::Models(crate::proto::models::ModelRequest::SetAlias {
        who, namespace, ..
    }) = req
    else {
        panic!()
    };
    // Signed by her, in her namespace (MN-2: no model of that name yet).
    assert_eq!((who.as_str(), namespace.as_str()), ("alice", "vision"));
}

#[test]
fn a_job_is_announced_only_by_its_owner_and_an_unregistered_one_acts_as_nobody() {
    let mut sim = Sim::new();
    let alice = add_user(&mut sim, "alice", "developer", &["vision"], "s-alice");
    let bob = add_user(&mut sim, "bob", "developer", &["vision"], "s-bob");
    let job = submit(&mut sim, alice, "vision");
    // Bob may not announce Alice's job (his link closing would end it).
    let announce = HeadRequest::RegisterDriver {
        job_id: job,
        entrypoint: "./x".into(),
        pid: 7,
    };
    assert_eq!(
        sim.core.gate(sim.now, bob, &announce),
        None,
        "bob may submit"
    );
    let Reply::Now(r) = sim.core.handle(sim.now, bob, announce.clone()) else {
        panic!()
    };
    assert_eq!(
        refusal(Some(r)),
        format!("bob may not announce job {job}: it is alice's")
    );
    let Reply::Now(r) = sim.core.handle(sim.now, alice, announce) else {
        panic!()
    };
    assert_eq!(r, HeadResponse::Ok);
    // A job the head never registered creates nothing once there are users.
    let stranger = JobId::random();
    let create = one_cpu_group(stranger);
    let node = Caller::Node { cert: [7; 32] };
    let relayed = HeadRequest::Relayed {
        job: Some(stranger),
        request: crate::proto::head::RelayedRequest::PlacementGroup(PgRequest::Create(
            create.clone(),
        )),
    };
    let Reply::Now(r) = sim.core.handle(sim.now, node, relayed) else {
        panic!()
    };
    let no = refusal(Some(r));
    assert!(
        no.starts_with(&format!("job {stranger} is not registered with the head")),
        "{no}"
    );
    // Bare, a raylet's group request is refused: raylets relay them.
    let bare = sim
        .core
        .gate_job(sim.now, node, &pg_req(PgRequest::Create(create)));
    assert!(refusal(bare).ends_with("this one came bare"));
}
