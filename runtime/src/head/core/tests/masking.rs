//! MK-1..3 through the core: a namespace's masking key goes to holders of
//! `pii:read` there — asked directly, or through a raylet for a job, judged
//! as the job's owner — and to nobody else; grants and refusals are audited.

use super::access::{add_user, refusal, submit};
use super::*;
use crate::proto::access::{AccessRequest, AuditQuery};

fn ask(sim: &mut Sim, caller: Caller, job: Option<JobId>, ns: &str) -> HeadResponse {
    let req = HeadRequest::MaskingKey {
        job,
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
        HeadResponse::MaskingKey { key, .. } => key,
        other => panic!("expected a key, got {other:?}"),
    }
}

#[test]
fn mk_keys_go_to_pii_readers_in_their_namespaces_only() {
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

    // MK-2: the steward's job gets vision's key, the same as she does.
    let k = key_of(ask(&mut sim, node, Some(job_s), "vision"));
    assert_eq!(k, key_of(ask(&mut sim, sara, None, "vision")));
    // MK-1: another namespace's key differs (the admin may read it).
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
    // A node asks only for a job.
    assert!(refusal(Some(ask(&mut sim, node, None, "vision"))).contains("only for one of its jobs"));

    // MK-2: revoking the steward stops her running job's next request.
    let revoke = AccessRequest::RevokeUser {
        name: "sara".into(),
    };
    sim.core.access(sim.now, Caller::Client, revoke, "", "fp");
    assert!(refusal(Some(ask(&mut sim, node, Some(job_s), "vision"))).contains("revoked"));

    // MK-3: one grant per job and namespace, every refusal.
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
    assert_eq!(denied, 5, "{trail:#?}");
    assert!(ok
        .iter()
        .any(|e| e.user == "sara" && e.origin == format!("job {job_s}")));
}
