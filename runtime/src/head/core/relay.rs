//! What raylets relay for their drivers and workers
//! ([`HeadRequest::Relayed`]) in the head core: judged as the relaying
//! process's job, whose owner's role and namespaces apply (AC-1), with its
//! answers scoped as the owner's would be (AC-4), audited in the owner's
//! name from that job, and signed with the owner's name in the model
//! registry. A driver's request reaches the head through its raylet's
//! node certificate, but acts as the user who started the driver.

use super::access::{forbidden, origin};
use super::{Caller, Clock, HeadCore, Reply};
use crate::head::access::audit::Record;
use crate::head::access::visibility::Visibility;
use crate::head::access::{authorize, authorize_member, Action, Permission, Principal};
use crate::ids::JobId;
use crate::proto::head::{ErrorKind, HeadRequest, HeadResponse, RelayedRequest};
use crate::proto::models::ModelRequest;
use crate::proto::placement::PgRequest;

impl HeadCore {
    /// `request`, relayed by the raylet `caller` for a process of `job`.
    pub(super) fn handle_relayed(
        &mut self,
        now: Clock,
        caller: Caller,
        job: Option<JobId>,
        request: RelayedRequest,
    ) -> Reply {
        if !caller.is_node() {
            // Someone speaking for a job: in the trail, as who they are.
            let who = self.principal(caller).ok().flatten();
            let record = Record {
                user: who.map_or_else(|| "?".into(), |p| p.name),
                origin: origin(caller),
                action: "relay".into(),
                target: format!(
                    "speak for job {}",
                    job.map_or("?".into(), |j| j.to_string())
                ),
                namespace: String::new(),
                outcome: "denied: only a raylet relays requests for its processes".into(),
            };
            self.audit.append(now.wall_ms, record);
            return Reply::Now(HeadResponse::Error {
                kind: ErrorKind::Unauthorized,
                message: "only a raylet relays requests for its processes; send the request \
                          itself"
                    .into(),
            });
        }
        let owner = self.relayed_owner(job);
        let who = self.relayed_principal(job);
        // Once there are users, the registry is signed by who acts; before,
        // by the process's word ($USER: the one person there is).
        let signer = who.as_ref().ok().filter(|_| self.users.any());
        let mut req = request.into_request();
        stamp(&mut req, job, signer.map(|p| p.name.as_str()));
        // AC-6: a process's job sees runs as its owner does.
        let from = |job: Option<JobId>| match job {
            Some(j) => format!("job {j} via {}", origin(caller)),
            None => format!("a process of no known job via {}", origin(caller)),
        };
        if let Ok(p) = &who {
            if let Some(missing) = self.hide_unseen_run(now, p, from(job), &req) {
                return Reply::Now(missing);
            }
        }
        // MN-1: a process's model requests act in its job's namespace.
        let job_ns = job
            .and_then(|j| self.jobs.get(j))
            .map(|j| j.namespace.clone());
        super::model_names::stamp_job_namespace(&mut req, job_ns.as_deref().unwrap_or("default"));
        // Judged once; one who may do nothing is refused in the words an
        // admin's request would be described in.
        let action = self.action_of(who.as_ref().unwrap_or(&Principal::cluster_admin()), &req);
        let refusal = match &who {
            Err(why) => Some(format!("{why}; it may not {}", action.what)),
            Ok(p) => judge(p, &action),
        };
        let from = from(job);
        if let Some(refusal) = refusal {
            // A refused change is audited as the owner's attempt.
            if let Some(name) = action.audit {
                let record = Record {
                    user: owner,
                    origin: from,
                    action: name.into(),
                    target: action.what,
                    namespace: action.namespace.unwrap_or_default(),
                    outcome: format!("denied: {refusal}"),
                };
                self.audit.append(now.wall_ms, record);
            }
            return Reply::Now(forbidden(refusal));
        }
        let intent = self.audit_intent(caller, &req).map(|i| i.by(owner.clone()));
        let mut reply = match req {
            // Allowed: the relaying raylet kills it.
            HeadRequest::KillActor { .. } => Reply::Now(HeadResponse::Ok),
            req => self.handle_request(now, caller, req),
        };
        if let (Ok(p), Reply::Now(r)) = (who, &mut reply) {
            if Visibility::concerns(r) {
                if let Some(v) = Visibility::new(p, self.jobs.namespaces()) {
                    v.scope(r);
                }
            }
        }
        if let Some(intent) = intent {
            self.audit_done(now, from, intent, &reply);
        }
        reply
    }

    /// Who a process of `job` acts as ([`HeadCore::job_principal`]); a
    /// worker whose job its raylet does not know acts as nobody once there
    /// are users.
    fn relayed_principal(&self, job: Option<JobId>) -> Result<Principal, String> {
        match job {
            Some(j) => self.job_principal(j),
            None if self.users.any() => {
                Err("a process whose job its raylet does not know acts as nobody".to_string())
            }
            None => Ok(Principal::cluster_admin()),
        }
    }

    /// The name a process of `job` is audited and signed under.
    pub(super) fn relayed_owner(&self, job: Option<JobId>) -> String {
        match job {
            Some(j) => self
                .jobs
                .get(j)
                .map_or_else(|| format!("job {j}"), |info| info.owner.clone()),
            None => "unknown job".into(),
        }
    }
}

/// The refusal, if `who`'s job may not do `action`. What a job reads to
/// run (a group, a named actor, the runs, the cluster's status) needs no
/// `state:read`, only its namespace (AC-4 then scopes listings); what it
/// changes needs the permission too (AC-1).
fn judge(who: &Principal, action: &Action) -> Option<String> {
    let judged = match (&action.needs, &action.namespace) {
        (Permission::StateRead, None) => Ok(()),
        (Permission::StateRead, Some(ns)) => authorize_member(who, &action.what, ns),
        _ => authorize(who, action),
    };
    judged.err().map(|d| d.message)
}

/// A relayed request carries the raylet's word for its job and the name
/// of who it acts as (`signer`), not the process's: a group is created for
/// the relaying job, and a model version is registered or promoted by the
/// job's owner.
fn stamp(req: &mut HeadRequest, job: Option<JobId>, signer: Option<&str>) {
    match req {
        HeadRequest::PlacementGroup(PgRequest::Create(c)) => {
            if let Some(j) = job {
                c.job = j;
            }
        }
        HeadRequest::Models(
            ModelRequest::Register { who, .. }
            | ModelRequest::SetAlias { who, .. }
            | ModelRequest::SetCard { who, .. },
        ) => {
            if let Some(name) = signer {
                *who = name.to_string();
            }
        }
        _ => {}
    }
}
