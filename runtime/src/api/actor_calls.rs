//! The actor edge of the process's runtime: calls in order through one
//! handle, creations, name lookups and kills, and requests answered by the
//! raylet as the result of a pseudo task.

use super::core::Core;
use super::error::Result;
use super::object_ref::{EncodedArg, ObjectRef};
use super::ownership::Slot;
use super::value::Value;
use crate::proto::head::{ErrorKind, HeadResponse};
use crate::proto::task::{LocalRequest, TaskKind, TaskSpec};
use prism_objectstore::ObjectId;
use std::sync::Arc;
use std::time::Duration;

impl Core {
    /// Calls an actor's method; calls through one handle stay in order.
    pub(crate) fn submit_call<R>(
        self: &Arc<Self>,
        actor: crate::ids::ActorId,
        caller: crate::ids::HandleId,
        seq: u64,
        method: &'static str,
        args: Vec<EncodedArg>,
        rule: Option<&crate::proto::common::Residency>,
    ) -> Result<ObjectRef<R>> {
        let call = crate::proto::task::ActorCall {
            actor_id: actor,
            caller,
            seq,
        };
        let spec = TaskSpec::new(
            crate::ids::TaskId::random(),
            self.job_id,
            method,
            method,
            TaskKind::ActorCall(call),
        );
        let result = spec.task_id.result();
        if let Some(rule) = rule {
            // A resident actor's result is kept under its rule.
            self.rules.insert(result, rule.clone());
        }
        let submitted = self.submit_spec(spec, args, true);
        if submitted.is_err() {
            self.rules.remove(&result);
        }
        submitted
    }

    /// Creates an actor; the ref resolves when its constructor has run.
    /// Also returns the actor's residency rule, if it has one.
    pub(crate) fn create_actor(
        self: &Arc<Self>,
        opts: &super::actor::ActorOptions,
        args: Vec<EncodedArg>,
    ) -> Result<(
        crate::ids::ActorId,
        ObjectRef<()>,
        Option<crate::proto::common::Residency>,
    )> {
        let actor = crate::ids::ActorId::random();
        let spec = opts.spec(actor, self.job_id)?;
        let rule = spec.residency.as_deref().cloned();
        let created = self.submit_spec(spec, args, true)?;
        Ok((actor, created, rule))
    }

    /// A live named actor's id and residency rule.
    pub(crate) fn lookup_actor(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
    ) -> Result<(crate::ids::ActorId, Option<crate::proto::common::Residency>)> {
        // A head lookup, answered whatever the node's load: the worker
        // waiting for it is not blocked on the cluster.
        self.ask_raylet_quick("get_actor", Duration::from_secs(60), |request_id| {
            LocalRequest::LookupActor {
                request_id,
                name: name.to_string(),
                namespace: namespace.to_string(),
            }
        })
    }

    /// Sends a request whose answer comes back as the result of a pseudo
    /// task `request_id`, and waits for it.
    /// A worker waiting here counts as blocked: the raylet lends its CPU
    /// to other work meanwhile (for answers that may wait on the cluster's
    /// resources, such as a placement group's reservation).
    pub(crate) fn ask_raylet<T: Value>(
        self: &Arc<Self>,
        what: &'static str,
        timeout: Duration,
        request: impl FnOnce(crate::ids::TaskId) -> LocalRequest,
    ) -> Result<T> {
        self.ask(what, timeout, true, request)
    }

    /// [`Core::ask_raylet`] for a control request the raylet (or the head
    /// through it) answers whatever the node's load: the worker keeps its
    /// CPU. Counting it blocked made the raylet start another worker for
    /// its queue, a new process per call.
    pub(crate) fn ask_raylet_quick<T: Value>(
        self: &Arc<Self>,
        what: &'static str,
        timeout: Duration,
        request: impl FnOnce(crate::ids::TaskId) -> LocalRequest,
    ) -> Result<T> {
        self.ask(what, timeout, false, request)
    }

    fn ask<T: Value>(
        self: &Arc<Self>,
        what: &'static str,
        timeout: Duration,
        blocks: bool,
        request: impl FnOnce(crate::ids::TaskId) -> LocalRequest,
    ) -> Result<T> {
        let request_id = ObjectId::random();
        self.owned.insert(request_id, Slot::for_request(what));
        let r: ObjectRef<T> = ObjectRef::owned(request_id, self.clone());
        self.send(&request(crate::ids::TaskId::of_result(request_id)))?;
        let deadline = std::time::Instant::now() + timeout;
        if !blocks {
            let answered = self
                .owned
                .get(request_id)
                .and_then(|slot| slot.wait(Some(deadline)));
            if answered.is_none() {
                return Err(crate::Error::Timeout {
                    what: format!("the raylet's answer to a {what} request"),
                    ms: timeout.as_millis() as u64,
                });
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        self.get::<T>(r.id(), Some(left.max(Duration::from_millis(1))))
    }

    /// Kills an actor's worker, once the head allows it (the raylet asks
    /// it as this job's owner); returns when the kill is on its way.
    pub(crate) fn kill_actor(
        self: &Arc<Self>,
        actor: crate::ids::ActorId,
        no_restart: bool,
    ) -> Result<()> {
        // Longer than the raylet waits for an absent head (its wait, a
        // dial, one request), when both read the same settings: its answer
        // (allowed, refused, the head unreachable) then comes first. A
        // kill that times out here may still happen.
        let head_wait = crate::config::Config::from_env()
            .map_or(70_000, |c| {
                c.head_wait_ms.saturating_add(c.connect_timeout_ms)
            })
            .saturating_add(20_000);
        let answer: HeadResponse =
            self.ask_raylet_quick("kill", Duration::from_millis(head_wait), |request_id| {
                LocalRequest::KillActor {
                    request_id,
                    actor_id: actor,
                    no_restart,
                }
            })?;
        match answer {
            HeadResponse::Ok => Ok(()),
            HeadResponse::Error {
                kind: ErrorKind::Forbidden | ErrorKind::Unauthorized,
                message,
            } => Err(crate::Error::Refused(message)),
            HeadResponse::Error { kind, message } => Err(crate::Error::ClusterState(format!(
                "the head could not judge the kill ({kind:?}): {message}"
            ))),
            other => Err(crate::Error::ClusterState(format!(
                "unexpected answer to a kill: {other:?}"
            ))),
        }
    }
}
