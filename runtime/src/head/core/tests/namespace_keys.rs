//! NK-1..4 through the core: a namespace's masking key goes to holders of
//! `pii:read` there — asked directly, or through a raylet for a job, judged
//! as the job's owner — and to nobody else; grants and refusals are
//! audited. Its at-rest key goes to its members, with its durable mark.

use super::access::{add_user, refusal, submit};
use super::failures::put_rows;
use super::*;
use crate::proto::access::{AccessRequest, AuditQuery, KeyUse};
use crate::proto::queue::QueueRequest;

fn ask(sim: &mut Sim, caller: Caller, job: Option<JobId>, ns: &str) -> HeadResponse {
    ask_for(sim, caller, job, KeyUse::Masking, ns)
}

fn ask_for(
    sim: &mut Sim,
    caller: Caller,
    job: Option<JobId>,
    usage: KeyUse,
    ns: &str,
) -> HeadResponse {
    let req = HeadRequest::NamespaceKey {
        job,
        usage,
        namespace: ns.into(),
    };
    if let Some(no) = sim.core.gate(sim.now, caller, &req) {
        return no;
    }
    match sim.core.handle(sim.now, caller, req) {
        Reply::Now(r) => r,
        other => panic!("{other:?}"),
    }
}

fn key_of(r: HeadResponse) -> [u8; 32] {
    match r {
        HeadResponse::NamespaceKey { key: Some(key), .. } => key,
        other => panic!("expected a key, got {other:?}"),
    }
}

#[test]
fn nk_masking_keys_go_to_pii_readers_in_their_namespaces_only() {
    let mut sim = Sim::new();
    let node = Caller::Node { cert: [7; 32] };
    let add_role = AccessRequest::AddRole {
        name: "steward".into(),
        permissions: vec!["pii:read".into(), "jobs:submit".into()],
    };
    sim.core.access(sim.now, Caller::Client, add_role, "", "fp");
    let sara = add_user(&mut sim, "sara", "steward", &["vision"], "s-sara");
    let alice = add_user(&mut sim, "alice", "developer", &["vision"], "s-alice");
    let job_s = submit(&mut sim, sara, "vision");
    let job_a = submit(&mut sim, alice, "vision");

    // NK-2: the steward's job gets vision's key, the same as she does.
    let k = key_of(ask(&mut sim, node, Some(job_s), "vision"));
    assert_eq!(k, key_of(ask(&mut sim, sara, None, "vision")));
    // NK-1: another namespace's key differs (the admin may read it).
    let ads = key_of(ask(&mut sim, Caller::Client, None, "ads"));
    assert_ne!(k, ads);
    // ...but not for the steward, who was not granted ads.
    let no = refusal(Some(ask(&mut sim, node, Some(job_s), "ads")));
    assert_eq!(
        no,
        "sara (steward in vision) may not read the masking key of personal data in namespace ads: namespace ads was not granted to sara"
    );
    // A developer's job, or the developer herself, is refused (AC-2).
    let no = refusal(Some(ask(&mut sim, node, Some(job_a), "vision")));
    assert_eq!(
        no,
        "alice (developer in vision) may not read the masking key of personal data in namespace vision: the role lacks permission pii:read"
    );
    let no = refusal(Some(ask(&mut sim, alice, None, "vision")));
    assert!(no.ends_with("lacks permission pii:read"), "{no}");
    // A user cannot borrow a steward's job to be judged as her.
    let no = refusal(Some(ask(&mut sim, alice, Some(job_s), "vision")));
    assert!(no.starts_with("alice (developer"), "{no}");
    // A job the head never registered acts as nobody once there are users.
    let stranger = JobId::random();
    let no = refusal(Some(ask(&mut sim, node, Some(stranger), "vision")));
    assert!(no.contains("is not registered with the head"), "{no}");
    // A node asks only for a job.
    assert!(refusal(Some(ask(&mut sim, node, None, "vision"))).contains("only for one of its jobs"));

    // NK-2: revoking the steward stops her running job's next request.
    let revoke = AccessRequest::RevokeUser {
        name: "sara".into(),
    };
    sim.core.access(sim.now, Caller::Client, revoke, "", "fp");
    assert!(refusal(Some(ask(&mut sim, node, Some(job_s), "vision"))).contains("revoked"));

    // NK-3: one grant per job and namespace, every refusal.
    let trail = sim.core.audit.query(&AuditQuery {
        action: Some("pii.key".into()),
        ..Default::default()
    });
    let ok: Vec<_> = trail.iter().filter(|e| e.outcome == "ok").collect();
    let denied = trail
        .iter()
        .filter(|e| e.outcome.starts_with("denied"))
        .count();
    assert_eq!(ok.len(), 3, "{trail:#?}");
    assert_eq!(denied, 6, "{trail:#?}");
    assert!(ok
        .iter()
        .any(|e| e.user == "sara" && e.origin == format!("job {job_s}")));
}

#[test]
fn nk_at_rest_keys_go_to_members_with_the_durable_mark() {
    let mut sim = Sim::new();
    let node = Caller::Node { cert: [7; 32] };
    let alice = add_user(&mut sim, "alice", "developer", &["vision"], "s-alice");
    let early = submit(&mut sim, alice, "vision");
    let at_rest =
        |sim: &mut Sim, job: JobId, ns: &str| ask_for(sim, node, Some(job), KeyUse::AtRest, ns);
    let HeadResponse::NamespaceKey { key, seal, .. } = at_rest(&mut sim, early, "vision") else {
        panic!()
    };
    assert!(!seal, "not marked yet");
    let key = key.expect("a member gets the key");
    assert_ne!(
        key,
        key_of(ask(&mut sim, Caller::Client, None, "vision")),
        "NK-1: per use"
    );
    // NK-5: a non-member of a namespace that does not seal: no key, no refusal.
    assert_eq!(
        at_rest(&mut sim, early, "ads"),
        HeadResponse::NamespaceKey {
            namespace: "ads".into(),
            key: None,
            seal: false
        }
    );
    // Marking needs quotas:manage, and is audited.
    let mark = |ns: &str| {
        HeadRequest::Queue(QueueRequest::SetAtRest {
            namespace: ns.into(),
            seal: true,
        })
    };
    assert!(refusal(sim.core.gate(sim.now, alice, &mark("vision"))).contains("quotas:manage"));
    for ns in ["vision", "ads"] {
        assert_eq!(sim.core.gate(sim.now, Caller::Client, &mark(ns)), None);
        let _ = sim.core.handle(sim.now, Caller::Client, mark(ns));
    }
    // NK-4: the running job keeps what it saw; a new one seals.
    let HeadResponse::NamespaceKey { seal, .. } = at_rest(&mut sim, early, "vision") else {
        panic!()
    };
    assert!(!seal, "pinned for the job that saw it unmarked");
    let late = submit(&mut sim, alice, "vision");
    let HeadResponse::NamespaceKey {
        key: again, seal, ..
    } = at_rest(&mut sim, late, "vision")
    else {
        panic!()
    };
    assert!(seal && again == Some(key), "marked; the same key");
    // A non-member of a namespace that seals is refused (AC-2).
    let no = refusal(Some(at_rest(&mut sim, late, "ads")));
    assert_eq!(
        no,
        "alice (developer in vision) may not read the at-rest key in namespace ads: namespace ads was not granted to alice"
    );
    // NK-4: a recovered head seals the same namespaces.
    let rows = put_rows(sim.core.take_changes());
    let mut core = recovered(sim.now, rows);
    let Reply::Now(HeadResponse::Queue(view)) = core.handle(
        sim.now,
        Caller::Client,
        HeadRequest::Queue(QueueRequest::Show),
    ) else {
        panic!()
    };
    assert_eq!(view.sealed, vec!["ads".to_string(), "vision".to_string()]);
    let trail = sim.core.audit.query(&AuditQuery {
        action: Some("namespace.at_rest".into()),
        ..Default::default()
    });
    assert_eq!(
        trail.len(),
        3,
        "the refused mark and the two done: {trail:#?}"
    );
}

#[test]
fn nk_without_users_an_unregistered_job_is_the_admins() {
    // An embedded or single-user cluster: drivers are not registered.
    let mut sim = Sim::new();
    let node = Caller::Node { cert: [7; 32] };
    let r = ask(&mut sim, node, Some(JobId::random()), "default");
    assert!(matches!(r, HeadResponse::NamespaceKey { .. }), "{r:?}");
}
