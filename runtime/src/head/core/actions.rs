//! What each request would do, as the gate judges it (AC-1..4 of
//! [`crate::head::access`]): the permission it needs, the namespace it acts
//! in, and the name it leaves in the audit trail (`access.rs` judges it,
//! `relay.rs` for what raylets relay).

use super::HeadCore;
use crate::head::access::{Action, Permission, Principal};
use crate::proto::access::{AccessRequest, KeyUse};
use crate::proto::head::HeadRequest;
use crate::proto::models::ModelRequest;
use crate::proto::placement::PgRequest;

/// An action needing `needs`, in namespace `ns` (`None`: cluster-wide),
/// audited as `audit` (`None`: not audited).
pub(super) fn act(
    audit: Option<&'static str>,
    what: String,
    needs: Permission,
    ns: Option<String>,
) -> Action {
    Action {
        audit,
        what,
        needs,
        namespace: ns,
    }
}

impl HeadCore {
    /// What `req` would do, as `who` would be judged for it.
    pub(super) fn action_of(&self, who: &Principal, req: &HeadRequest) -> Action {
        use HeadRequest as R;
        use Permission as P;
        let job_ns = |id| self.jobs.get(id).map(|j| j.namespace.clone());
        let read = |what: &str| act(None, what.into(), P::StateRead, None);
        // AC-4: a read of one row is judged in that row's namespace.
        let read_in = |what: String, ns| act(None, what, P::StateRead, ns);
        // A write for a job the head does not know (pruned, or never
        // registered) is judged in no namespace anyone but `*` holds.
        let owned_ns = |id| {
            Some(
                job_ns(id)
                    .unwrap_or_else(|| format!("unknown (job {id} is not known to the head)")),
            )
        };
        let pg_ns = |pg| self.groups.get(pg).and_then(|g| job_ns(g.job));
        // Model requests come with their namespace filled in (MN-1, MN-2);
        // none left is the table's `default`.
        let model_ns = |namespace: &String| match namespace.as_str() {
            "" => "default".to_string(),
            ns => ns.to_string(),
        };
        match req {
            R::GetActor { actor_id } => read_in(
                format!("read actor {actor_id}"),
                self.actors.get(*actor_id).map(|a| a.namespace.clone()),
            ),
            R::KillActor { actor_id, .. } => {
                // An actor the head does not know yet (its registration on
                // its way) is judged by the permission alone.
                let info = self.actors.get(*actor_id);
                let what = match info {
                    Some(a) => format!("kill actor {actor_id} ({})", a.class),
                    None => format!("kill actor {actor_id}"),
                };
                let ns = info.map(|a| a.namespace.clone());
                act(Some("actor.kill"), what, P::ActorsCreate, ns)
            }
            R::GetNamedActor { namespace, name } => {
                read_in(format!("read actor {name}"), Some(namespace.clone()))
            }
            R::PlacementGroup(PgRequest::Get { pg } | PgRequest::Wait { pg, .. }) => {
                read_in(format!("read placement group {pg}"), pg_ns(*pg))
            }
            R::GetRun { run_id } => read_in(
                format!("read run {run_id}"),
                self.runs.job_of(run_id).and_then(job_ns),
            ),
            R::Join { node_name } => {
                act(None, format!("join node {node_name}"), P::NodesManage, None)
            }
            R::Register(_)
            | R::Heartbeat { .. }
            | R::Unregister { .. }
            | R::DrainStarted { .. }
            | R::AddObjectLocation { .. }
            | R::UpdateObjectLocations { .. }
            | R::FreeObjects { .. }
            | R::UpdateActor { .. }
            | R::ReportServe(_) => act(None, "speak for a node".into(), P::NodesManage, None),
            R::DrainNode { node_id, .. } => act(
                Some("node.drain"),
                format!("drain node {node_id}"),
                P::NodesManage,
                None,
            ),
            R::UploadBinary { .. } => act(None, "upload a job binary".into(), P::JobsSubmit, None),
            R::SubmitJob(sub) => {
                let ns = if sub.namespace.is_empty() {
                    who.home_namespace()
                } else {
                    sub.namespace.clone()
                };
                act(
                    Some("job.submit"),
                    format!("submit job {}", sub.name),
                    P::JobsSubmit,
                    Some(ns),
                )
            }
            R::RegisterDriver { job_id, .. } => act(
                Some("job.start"),
                format!("start job {job_id}"),
                P::JobsSubmit,
                Some(who.home_namespace()),
            ),
            R::StopJob { job_id } => {
                let own = self.jobs.get(*job_id).is_some_and(|j| j.owner == who.name);
                let needs = if own { P::JobsStop } else { P::JobsStopAny };
                act(
                    Some("job.stop"),
                    format!("stop job {job_id}"),
                    needs,
                    job_ns(*job_id),
                )
            }
            R::JobLogs { job_id, .. } => act(
                None,
                format!("read the logs of job {job_id}"),
                P::LogsRead,
                job_ns(*job_id),
            ),
            R::WorkerLog { pid, .. } => act(
                None,
                format!("read the log of worker {pid}"),
                P::LogsRead,
                None,
            ),
            R::RegisterActor(info, _) => act(
                Some("actor.create"),
                format!("create actor {}", info.class),
                P::ActorsCreate,
                Some(info.namespace.clone()),
            ),
            R::PlacementGroup(PgRequest::Create(c)) => act(
                Some("placement_group.create"),
                format!("create placement group {}", c.pg),
                P::PlacementCreate,
                owned_ns(c.job),
            ),
            R::PlacementGroup(PgRequest::Remove { pg }) => act(
                Some("placement_group.remove"),
                format!("remove placement group {pg}"),
                P::PlacementCreate,
                self.groups.get(*pg).and_then(|g| owned_ns(g.job)),
            ),
            R::ReportRun(r) => act(
                None,
                format!("report training run {}", r.run_id),
                P::RunsWrite,
                // The run's own job where it exists (its points are
                // added there), else the job it names.
                owned_ns(self.runs.job_of(&r.run_id).unwrap_or(r.job_id)),
            ),
            R::Models(ModelRequest::SetAlias {
                namespace,
                name,
                alias,
                version,
                ..
            }) => act(
                Some("model.alias"),
                format!("point {name}@{alias} at version {version}"),
                if alias == "production" {
                    P::ModelsProduction
                } else {
                    P::ModelsWrite
                },
                Some(model_ns(namespace)),
            ),
            // Judged in its run's namespace, the one the version goes to
            // (MR-4).
            R::Models(ModelRequest::Register { name, run_id, .. }) => act(
                Some("model.register"),
                format!("register a version of {name}"),
                P::ModelsWrite,
                self.runs.job_of(run_id).and_then(owned_ns),
            ),
            R::Models(ModelRequest::SetCard {
                namespace,
                name,
                version,
                ..
            }) => act(
                Some("model.card"),
                format!("change the card of {name} v{version}"),
                P::ModelsWrite,
                Some(model_ns(namespace)),
            ),
            R::Models(ModelRequest::Show { namespace, name }) => {
                read_in(format!("read model {name}"), Some(model_ns(namespace)))
            }
            R::Access(AccessRequest::AddUser { name, .. }) => act(
                Some("user.add"),
                format!("add user {name}"),
                P::UsersManage,
                None,
            ),
            R::Access(AccessRequest::RevokeUser { name }) => act(
                Some("user.revoke"),
                format!("revoke user {name}"),
                P::UsersManage,
                None,
            ),
            R::Access(AccessRequest::AddRole { name, .. }) => act(
                Some("role.add"),
                format!("define role {name}"),
                P::UsersManage,
                None,
            ),
            R::Access(AccessRequest::ListUsers | AccessRequest::ListRoles) => {
                act(None, "list users and roles".into(), P::UsersManage, None)
            }
            R::Queue(crate::proto::queue::QueueRequest::SetQuota(q)) => act(
                Some("quota.set"),
                format!("set the quota of namespace {}", q.namespace),
                P::QuotasManage,
                None,
            ),
            R::NamespaceKey {
                namespace,
                usage: KeyUse::Masking,
                ..
            } => act(
                Some("pii.key"),
                "read the masking key of personal data".into(),
                P::PiiRead,
                Some(namespace.clone()),
            ),
            R::Queue(crate::proto::queue::QueueRequest::SetAtRest { namespace, seal }) => act(
                Some("namespace.at_rest"),
                format!(
                    "{} files at rest in namespace {namespace}",
                    if *seal { "seal" } else { "stop sealing" }
                ),
                P::QuotasManage,
                None,
            ),
            R::Access(AccessRequest::Audit(_) | AccessRequest::VerifyAudit) => {
                act(None, "read the audit trail".into(), P::AuditRead, None)
            }
            // What the CLI did in the caller's name (`prism up`, `serve
            // deploy`): only someone who may start work notes it.
            R::Access(AccessRequest::Record { action, .. }) => act(
                None,
                format!("note {action} in the audit trail"),
                P::JobsSubmit,
                None,
            ),
            _ => read("read cluster state"),
        }
    }
}
