//! Users, roles and the audit trail in the head core: the gate every
//! request from a user passes (AC-1..3 of [`crate::head::access`]), the
//! access requests themselves, and the audit entry each state-changing
//! request leaves (AU-1..3).

use super::actions::act;
use super::{Caller, Clock, HeadCore};
use crate::head::access::audit::Record;
use crate::head::access::{authorize, Permission, Principal};
use crate::ids::JobId;
use crate::proto::access::{AccessReply, AccessRequest, KeyUse, Me};
use crate::proto::head::{ErrorKind, HeadRequest, HeadResponse};
use crate::proto::models::ModelRequest;

pub(super) fn forbidden(message: String) -> HeadResponse {
    HeadResponse::Error {
        kind: ErrorKind::Forbidden,
        message,
    }
}

impl HeadCore {
    /// Who `caller` acts as: the cluster admin for the join token, the
    /// user for a user's token (`Err` once revoked, AC-3), nobody for a
    /// node (cluster members are trusted with their own requests).
    pub fn principal(&self, caller: Caller) -> Result<Option<Principal>, String> {
        match caller {
            Caller::Node { .. } => Ok(None),
            Caller::Client => Ok(Some(Principal::cluster_admin())),
            Caller::User { id, .. } => self.users.principal(id).map(Some),
            Caller::Viewer { id, .. } => self.viewer_principal(id).map(Some),
        }
    }

    /// The id of the user whose token is `name@secret`.
    pub fn authenticate(&self, name: &str, secret: &str) -> Result<u64, String> {
        self.users.authenticate(name, secret)
    }

    /// AC-1/AC-2: the refusal, if `caller` may not send `req`. A refusal
    /// of a state-changing request is audited; nothing else changes.
    pub fn gate(&mut self, now: Clock, caller: Caller, req: &HeadRequest) -> Option<HeadResponse> {
        if !caller.is_gated() {
            return None;
        }
        let who = match self.principal(caller) {
            Ok(Some(p)) => p,
            Ok(None) => return None,
            Err(message) => return Some(forbidden(message)),
        };
        // MN-2: a model request is judged in the namespace it will act in
        // (the server's early gate sees it before `handle` fills that in);
        // a name several of one's namespaces hold is named again.
        let stamped;
        let req = match req {
            HeadRequest::Models(_) => {
                let mut s = req.clone();
                if let Err(message) = self.stamp_model_namespace(&who, &mut s) {
                    return Some(HeadResponse::Error {
                        kind: ErrorKind::BadRequest,
                        message,
                    });
                }
                stamped = s;
                &stamped
            }
            _ => req,
        };
        // Judged by their handlers: who one is, and a namespace's at-rest
        // key (membership, no permission).
        if matches!(
            req,
            HeadRequest::Access(AccessRequest::WhoAmI)
                | HeadRequest::NamespaceKey {
                    usage: KeyUse::AtRest,
                    ..
                }
        ) {
            return None;
        }
        if let Some(missing) = self.hide_unseen_run(now, &who, origin(caller), req) {
            return Some(missing);
        }
        let action = self.action_of(&who, req);
        match authorize(&who, &action) {
            Ok(()) => None,
            Err(denied) => {
                if let Some(name) = action.audit {
                    let record = Record {
                        user: who.name.clone(),
                        origin: origin(caller),
                        action: name.into(),
                        target: action.what.clone(),
                        namespace: action.namespace.clone().unwrap_or_default(),
                        outcome: format!("denied: {denied}"),
                    };
                    self.audit.append(now.wall_ms, record);
                }
                Some(forbidden(denied.message))
            }
        }
    }

    /// AC-6: a request that names a run by id, from a user who may not see
    /// the run's namespace, is answered as for a run that does not exist:
    /// a refusal naming the namespace would tell that the run exists, and
    /// where. `None` where the request goes on to be judged; else the
    /// answer and the run's namespace (empty: its job is gone). A caller
    /// whose role lacks the permission is refused for that alone, in the
    /// words a missing run's request gets.
    fn unseen_run(&self, who: &Principal, req: &HeadRequest) -> Option<(HeadResponse, String)> {
        let run_id = match req {
            HeadRequest::GetRun { run_id }
            | HeadRequest::Models(ModelRequest::Register { run_id, .. }) => run_id,
            _ => return None,
        };
        let job = self.runs.job_of(run_id)?;
        let ns = self.jobs.get(job).map(|j| j.namespace.clone());
        let ns = ns.unwrap_or_default();
        if who.in_namespace(&ns) {
            return None;
        }
        let mut action = self.action_of(who, req);
        action.namespace = None;
        if let Err(denied) = authorize(who, &action) {
            return Some((forbidden(denied.message), ns));
        }
        // Then, as the model table does before it looks for the run, the
        // name.
        if let HeadRequest::Models(ModelRequest::Register { name, .. }) = req {
            if let Err(message) = crate::head::model_table::valid_name("model name", name) {
                let bad = HeadResponse::Error {
                    kind: ErrorKind::BadRequest,
                    message,
                };
                return Some((bad, ns));
            }
        }
        let answer = match req {
            HeadRequest::GetRun { .. } => HeadResponse::Run(None),
            // As the model table answers a run it does not have.
            _ => HeadResponse::Error {
                kind: ErrorKind::BadRequest,
                message: crate::head::model_table::no_run(run_id),
            },
        };
        Some((answer, ns))
    }

    /// AC-6 for `who`'s `req` (sent from `from`): the answer a missing run
    /// gets, if it names a run `who` may not see. A registration is
    /// audited in the run's namespace, whose admins see what the caller
    /// was not told.
    pub(super) fn hide_unseen_run(
        &mut self,
        now: Clock,
        who: &Principal,
        from: String,
        req: &HeadRequest,
    ) -> Option<HeadResponse> {
        let (missing, ns) = self.unseen_run(who, req)?;
        if let (
            HeadRequest::Models(ModelRequest::Register { name, .. }),
            HeadResponse::Error { message, kind },
        ) = (req, &missing)
        {
            let failed = match kind {
                ErrorKind::Forbidden => "denied",
                _ => "failed",
            };
            let record = Record {
                user: who.name.clone(),
                origin: from,
                action: "model.register".into(),
                target: format!("model {name}"),
                namespace: ns.clone(),
                outcome: format!(
                    "{failed}: {message} (its run is in namespace {ns:?}, not theirs)"
                ),
            };
            self.audit.append(now.wall_ms, record);
        }
        Some(missing)
    }

    /// AC-5: judges `req` (AC-1/AC-2) and, if allowed, acts on it, in
    /// one turn. The server judges a user's request as it arrives too,
    /// before anything else is done for it; the head's state may change
    /// before the request's turn comes, so it is judged again here.
    pub fn handle_gated(&mut self, now: Clock, caller: Caller, req: HeadRequest) -> super::Reply {
        match self.gate(now, caller, &req) {
            Some(refusal) => super::Reply::Now(refusal),
            None => self.handle(now, caller, req),
        }
    }

    /// A raylet relays a driver's actor creation or training run: the
    /// job's owner must be allowed it (AC-1 for what a user's jobs do; the
    /// rest a raylet relays is judged in `relay.rs`).
    /// Jobs of the join token's admin, or of owners who are no users, pass;
    /// a job the head never registered passes only while there are no
    /// users.
    pub(super) fn gate_job(
        &mut self,
        now: Clock,
        caller: Caller,
        req: &HeadRequest,
    ) -> Option<HeadResponse> {
        let Caller::Node { .. } = caller else {
            return None;
        };
        let (job, action) = match req {
            HeadRequest::RegisterActor(info, _) => (
                info.job_id,
                act(
                    Some("actor.create"),
                    format!("create actor {}", info.class),
                    Permission::ActorsCreate,
                    Some(info.namespace.clone()),
                ),
            ),
            // Raylets relay these for their processes (`relay.rs`), judged
            // as the process's job; bare, they would be judged as nobody.
            HeadRequest::PlacementGroup(_) | HeadRequest::Models(_) => {
                return Some(forbidden(format!(
                    "a raylet sends its processes' {} requests relayed, as their job; this one \
                     came bare",
                    super::names::request_name(req)
                )))
            }
            // A serve controller's state, for the namespace it serves in:
            // its job's owner must be allowed to create actors there (as
            // to create that controller). Refusals are not audited.
            HeadRequest::ReportServe(r) => (
                r.job_id,
                act(
                    None,
                    "report serving".to_string(),
                    Permission::ActorsCreate,
                    Some(r.namespace.clone()),
                ),
            ),
            // The raylet names the reporting connection's job; a run of
            // another job's namespace is not its to add to.
            HeadRequest::ReportRun(r) => {
                let run_job = self.runs.job_of(&r.run_id).unwrap_or(r.job_id);
                (
                    r.job_id,
                    act(
                        Some("run.report"),
                        format!("report training run {}", r.run_id),
                        Permission::RunsWrite,
                        self.jobs.get(run_job).map(|j| j.namespace.clone()),
                    ),
                )
            }
            _ => return None,
        };
        let refusal = match self.job_principal(job) {
            Err(why) => format!("{why}; it may not {}", action.what),
            Ok(who) => authorize(&who, &action).err()?.message,
        };
        // A refused serving report is no action anyone took: its controller
        // reports again every few seconds and would flood the trail.
        if matches!(req, HeadRequest::ReportServe(_)) {
            return Some(forbidden(refusal));
        }
        let owner = self.relayed_owner(Some(job));
        let record = Record {
            user: owner,
            origin: format!("job {job}"),
            action: action.audit.unwrap_or("job").into(),
            target: action.what,
            namespace: action.namespace.unwrap_or_default(),
            outcome: format!("denied: {refusal}"),
        };
        self.audit.append(now.wall_ms, record);
        Some(forbidden(refusal))
    }

    /// Who `job`'s requests act as: its owner (the cluster admin for jobs
    /// of the join token or of owners who are no users; `Err` for a revoked
    /// owner), or, for a job the head never registered (started by
    /// whoever may reach a raylet's socket), the admin while there are no
    /// users and nobody once there are.
    pub(super) fn job_principal(&self, job: JobId) -> Result<Principal, String> {
        match self.jobs.get(job) {
            None if self.users.any() => Err(format!(
                "job {job} is not registered with the head, so it acts as nobody (start its \
                 driver with PRISM_USER_TOKEN, or submit it)"
            )),
            None => Ok(Principal::cluster_admin()),
            Some(j) => self
                .users
                .principal_named(&j.owner)
                .unwrap_or_else(|| Ok(Principal::cluster_admin())),
        }
    }

    /// A user's request names who asks where the request carries it (the
    /// model registry's `who`), so that nobody signs as someone else; a
    /// model request that names no namespace gets its caller's (MN-2),
    /// or is refused when that is ambiguous.
    pub(crate) fn stamp(&self, caller: Caller, req: &mut HeadRequest) -> Result<(), String> {
        if let Ok(Some(p)) = self.principal(caller) {
            self.stamp_model_namespace(&p, req)?;
        }
        let Caller::User { id, .. } = caller else {
            return Ok(());
        };
        if let HeadRequest::Models(
            ModelRequest::Register { who, .. }
            | ModelRequest::SetAlias { who, .. }
            | ModelRequest::SetCard { who, .. },
        ) = req
        {
            if let Ok(p) = self.users.principal(id) {
                *who = p.name;
            }
        }
        Ok(())
    }

    /// A user, role or audit request; `secret` is a fresh token secret
    /// drawn by the shell (used by `AddUser`), `fingerprint` the CA's.
    pub fn access(
        &mut self,
        now: Clock,
        caller: Caller,
        req: AccessRequest,
        secret: &str,
        fingerprint: &str,
    ) -> HeadResponse {
        let who = match self.principal(caller) {
            Ok(Some(p)) => p,
            Ok(None) => return forbidden("a node cannot manage users".into()),
            Err(message) => return forbidden(message),
        };
        let bad = |message: String| HeadResponse::Error {
            kind: ErrorKind::BadRequest,
            message,
        };
        let reply = match req {
            AccessRequest::WhoAmI => AccessReply::Me(Me {
                name: who.name.clone(),
                role: who.role.clone(),
                namespaces: who.namespaces.clone(),
                permissions: who
                    .permissions
                    .iter()
                    .map(|p| p.name().to_string())
                    .collect(),
            }),
            AccessRequest::AddUser {
                name,
                role,
                namespaces,
            } => {
                let done = self
                    .users
                    .add(now.wall_ms, &who.name, &name, &role, namespaces, secret);
                let ns = done
                    .as_ref()
                    .map(|u| u.namespaces.join(","))
                    .unwrap_or_default();
                let target = format!("user {name} as {role} in {ns}");
                match self.audited(now, caller, &who.name, "user.add", target, done) {
                    Ok(user) => AccessReply::UserAdded {
                        user,
                        token: format!("{name}@{secret}.{fingerprint}"),
                    },
                    Err(e) => return bad(e),
                }
            }
            AccessRequest::RevokeUser { name } => {
                let done = self.users.revoke(now.wall_ms, &name);
                let target = format!("user {name}");
                match self.audited(now, caller, &who.name, "user.revoke", target, done) {
                    Ok(()) => AccessReply::Users(self.users.list()),
                    Err(e) => return bad(e),
                }
            }
            AccessRequest::AddRole { name, permissions } => {
                let done = self.users.add_role(&name, &permissions);
                let target = format!("role {name} = {}", permissions.join(","));
                match self.audited(now, caller, &who.name, "role.add", target, done) {
                    Ok(_) => AccessReply::Roles(self.users.roles()),
                    Err(e) => return bad(e),
                }
            }
            AccessRequest::ListUsers => AccessReply::Users(self.users.list()),
            AccessRequest::ListRoles => AccessReply::Roles(self.users.roles()),
            AccessRequest::Audit(q) => AccessReply::Audit(self.audit.query(&q)),
            AccessRequest::Record { action, target } => {
                let valid = (3..=64).contains(&action.len())
                    && action.contains('.')
                    && action
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_' || c == '-');
                if !valid || target.len() > 1024 {
                    return bad(format!(
                        "an audit note needs an action like `cluster.up` (lowercase, with a dot, at most 64 characters) and a target of at most 1024 bytes; got {action:?}"
                    ));
                }
                self.audit_record(
                    now,
                    caller,
                    who.name.clone(),
                    &action,
                    target,
                    String::new(),
                    "ok".into(),
                );
                let last = self.audit.entries().last().cloned();
                AccessReply::Audit(last.into_iter().collect())
            }
            AccessRequest::VerifyAudit => {
                let (entries, broken) = crate::head::access::audit::verify(self.audit.entries());
                AccessReply::Verified { entries, broken }
            }
        };
        HeadResponse::Access(reply)
    }
}

impl HeadCore {
    /// Records a user or role change with its outcome and hands the
    /// outcome back.
    fn audited<T>(
        &mut self,
        now: Clock,
        caller: Caller,
        who: &str,
        action: &str,
        target: String,
        done: Result<T, String>,
    ) -> Result<T, String> {
        let outcome = match &done {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        self.audit_record(
            now,
            caller,
            who.into(),
            action,
            target,
            String::new(),
            outcome,
        );
        done
    }
}

/// Where a caller speaks from, for the trail.
pub(super) fn origin(caller: Caller) -> String {
    match caller {
        Caller::User { from, .. } | Caller::Viewer { from, .. } => from.to_string(),
        Caller::Client => "join token".into(),
        Caller::Node { .. } => "cluster".into(),
    }
}
