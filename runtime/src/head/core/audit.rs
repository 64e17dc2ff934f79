//! The audit entries the head core leaves (AU-1..3 of
//! [`crate::head::access::audit`]): each state-changing request is worked
//! out before it is handled (who, on what, in which namespace) and
//! recorded with its outcome; a user's listings are scoped to their
//! namespaces.

use super::access::origin;
use super::{Caller, Clock, HeadCore};
use crate::head::access::audit::Record;
use crate::proto::head::{HeadRequest, HeadResponse};
use crate::proto::models::ModelRequest;
use crate::proto::placement::PgRequest;

impl HeadCore {
    /// The audit entry a request will leave once handled, if it changes
    /// state (worked out before it is handled: who and on what).
    pub(super) fn audit_intent(&self, caller: Caller, req: &HeadRequest) -> Option<Intent> {
        use HeadRequest as R;
        let (action, target, namespace, job) = match req {
            R::RegisterActor(info, _) => (
                "actor.create",
                format!("actor {} ({})", info.actor_id, info.class),
                info.namespace.clone(),
                Some(info.job_id),
            ),
            R::KillActor {
                actor_id,
                no_restart,
            } => {
                let info = self.actors.get(*actor_id);
                let stays = if *no_restart { " (no restart)" } else { "" };
                (
                    "actor.kill",
                    format!("actor {actor_id}{stays}"),
                    info.map(|a| a.namespace.clone()).unwrap_or_default(),
                    info.map(|a| a.job_id),
                )
            }
            R::PlacementGroup(PgRequest::Create(c)) => (
                "placement_group.create",
                format!("placement group {}", c.pg),
                String::new(),
                Some(c.job),
            ),
            R::PlacementGroup(PgRequest::Remove { pg }) => {
                let job = self.groups.get(*pg).map(|g| g.job);
                (
                    "placement_group.remove",
                    format!("placement group {pg}"),
                    String::new(),
                    job,
                )
            }
            R::StopJob { job_id } => (
                "job.stop",
                format!("job {job_id}"),
                self.jobs
                    .get(*job_id)
                    .map(|j| j.namespace.clone())
                    .unwrap_or_default(),
                None,
            ),
            R::RegisterDriver { job_id, .. } => {
                ("job.start", format!("job {job_id}"), "default".into(), None)
            }
            R::Models(ModelRequest::Register { name, run_id, .. }) => (
                "model.register",
                format!("model {name}"),
                // Its run's, where the version goes (MR-4).
                self.runs
                    .job_of(run_id)
                    .and_then(|job| self.jobs.get(job).map(|j| j.namespace.clone()))
                    .unwrap_or_else(|| "default".into()),
                None,
            ),
            // Named by the request (filled in before it is audited, MN-1/2).
            R::Models(ModelRequest::SetAlias {
                namespace,
                name,
                alias,
                version,
                ..
            }) => (
                "model.alias",
                format!("model {name}@{alias} -> v{version}"),
                namespace.clone(),
                None,
            ),
            R::Models(ModelRequest::SetCard {
                namespace,
                name,
                version,
                ..
            }) => (
                "model.card",
                format!("model {name} v{version}"),
                namespace.clone(),
                None,
            ),
            R::DrainNode { node_id, .. } => {
                ("node.drain", format!("node {node_id}"), String::new(), None)
            }
            _ => return None,
        };
        let user = match (caller, job) {
            (Caller::Node { .. }, Some(job)) => match self.jobs.get(job) {
                Some(j) => j.owner.clone(),
                None => format!("job {job}"),
            },
            (Caller::Node { .. }, None) => "cluster".into(),
            _ => self
                .principal(caller)
                .ok()
                .flatten()
                .map_or("?".into(), |p| p.name),
        };
        Some(Intent {
            user,
            action,
            target,
            namespace,
        })
    }

    /// Records a handled request's intent with its outcome.
    pub(super) fn audit_done(
        &mut self,
        now: Clock,
        origin: String,
        intent: Intent,
        reply: &super::Reply,
    ) {
        let outcome = match reply {
            super::Reply::Now(HeadResponse::Error { message, .. }) => format!("failed: {message}"),
            super::Reply::Now(_) => "ok".into(),
            super::Reply::Later(_) => "accepted".into(),
        };
        let r = Record {
            user: intent.user,
            origin,
            action: intent.action.into(),
            target: intent.target,
            namespace: intent.namespace,
            outcome,
        };
        self.audit.append(now.wall_ms, r);
    }

    /// Appends one entry.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn audit_record(
        &mut self,
        now: Clock,
        caller: Caller,
        user: String,
        action: &str,
        target: String,
        namespace: String,
        outcome: String,
    ) {
        let r = Record {
            user,
            origin: origin(caller),
            action: action.into(),
            target,
            namespace,
            outcome,
        };
        self.audit.append(now.wall_ms, r);
    }
}

/// What an audited request is, before its outcome is known.
#[derive(Debug)]
pub(super) struct Intent {
    user: String,
    action: &'static str,
    target: String,
    namespace: String,
}

impl Intent {
    /// The same, done by `user` (a relayed request's job owner).
    pub(super) fn by(self, user: String) -> Intent {
        Intent { user, ..self }
    }
}
