//! Submitting work from this process: a task's arguments are resolved
//! (small values inline, large ones put in the store, refs to owned objects
//! awaited until their tasks end) before its spec goes to the raylet; the
//! refs a pending task needs are kept alive until it ends.

use super::core::{Core, INLINE_MAX};
use super::error::{Result, TaskError};
use super::object_ref::{EncodedArg, ObjectRef, OwnerGuard};
use super::options::TaskOptions;
use super::ownership::{Slot, SlotState};
use crate::object_store::ObjectError;
use crate::proto::task::{ArgSpec, TaskKind, TaskSpec};
use prism_objectstore::ObjectId;
use std::sync::Arc;
use std::time::Duration;

impl Core {
    /// Submits a task.
    pub(crate) fn submit<R>(
        self: &Arc<Self>,
        opts: &TaskOptions,
        args: Vec<EncodedArg>,
    ) -> Result<ObjectRef<R>> {
        let spec = opts.spec(self.job_id)?;
        let result = spec.task_id.result();
        if let Some(rule) = &spec.residency {
            // The result is this process's, under the task's rule.
            self.rules.insert(result, (**rule).clone());
        }
        let submitted = self.submit_spec(spec, args, false);
        if submitted.is_err() {
            self.rules.remove(&result);
        }
        submitted
    }

    /// Submits `spec` with `args` resolved. Pending ref arguments are awaited
    /// in the background, or on this thread when `in_order` (actor calls
    /// must reach the raylet in the order they were made).
    pub(crate) fn submit_spec<R>(
        self: &Arc<Self>,
        mut spec: TaskSpec,
        args: Vec<EncodedArg>,
        in_order: bool,
    ) -> Result<ObjectRef<R>> {
        let task_id = spec.task_id.result();
        let slot = Slot::for_spec(&spec);
        self.owned.insert(task_id, slot.clone());
        let r = ObjectRef::owned(task_id, self.clone());
        let mut specs = Vec::with_capacity(args.len());
        let mut waits = Vec::new();
        let mut guards = Vec::new();
        for (i, a) in args.into_iter().enumerate() {
            if let EncodedArg::Value(_, refs) = &a {
                for (id, guard) in refs {
                    spec.nested_refs.push(*id);
                    guards.extend(guard.clone());
                }
            }
            match a {
                EncodedArg::Value(b, _) if b.len() <= INLINE_MAX => {
                    specs.push(ArgSpec::Inline(b.to_vec()))
                }
                EncodedArg::Value(b, _) => {
                    let id = ObjectId::random();
                    // A resident task's large argument to a task stays under
                    // its rule (an actor's lives where the actor does).
                    let rule = super::residency::inherited()
                        .filter(|_| matches!(spec.kind, TaskKind::Task));
                    if let Some(rule) = rule {
                        super::residency::claim_owned(self, id, rule)?;
                    }
                    if let Err(e) = self
                        .store
                        .put_parts(id, &[&b], true, Duration::from_secs(60))
                    {
                        self.rules.remove(&id);
                        return Err(e.into());
                    }
                    self.owned
                        .insert(id, Slot::new("argument", SlotState::Stored));
                    guards.push(OwnerGuard::new(id, self.clone()));
                    specs.push(ArgSpec::Object(id));
                }
                EncodedArg::Ref(id, guard) => {
                    guards.extend(guard);
                    match self.owned.get(id) {
                        None => specs.push(ArgSpec::Object(id)),
                        Some(s) => match s.state() {
                            SlotState::Pending => {
                                waits.push((i, id, s));
                                specs.push(ArgSpec::Object(id));
                            }
                            other => match self.resolved_arg(id, other) {
                                Ok(spec) => specs.push(spec),
                                Err(e) => {
                                    slot.set(SlotState::Failed(e));
                                    return Ok(r);
                                }
                            },
                        },
                    }
                }
            }
        }
        if !guards.is_empty() {
            self.keepalive.insert(task_id, guards);
        }
        // A task reading a resident object it did not ask to be resident
        // for runs inside that object's rule (the head would refuse it the
        // object anywhere else).
        if spec.residency.is_none() && matches!(spec.kind, TaskKind::Task) {
            let objects = specs.iter().filter_map(|a| match a {
                ArgSpec::Object(id) => Some(id),
                ArgSpec::Inline(_) => None,
            });
            let nested = spec.nested_refs.iter();
            if let Some(rule) = super::residency::rule_of_args(self, objects.chain(nested)) {
                spec.strategy = super::residency::confine(&spec.strategy, &rule);
            }
        }
        spec.args = specs;
        if waits.is_empty() {
            slot.keep_lineage(&spec);
            self.send_spec(spec)?;
            return Ok(r);
        }
        if in_order {
            for (i, id, s) in waits {
                if s.settles_soon(None).is_none() {
                    self.blocking(|| s.wait(None));
                }
                match self.resolved_arg(id, s.state()) {
                    Ok(a) => spec.args[i] = a,
                    Err(e) => {
                        slot.set(SlotState::Failed(e));
                        return Ok(r);
                    }
                }
            }
            slot.keep_lineage(&spec);
            self.send_spec(spec)?;
            return Ok(r);
        }
        let me = self.clone();
        self.handle.spawn(async move {
            for (i, id, s) in waits {
                s.ready().await;
                match me.resolved_arg(id, s.state()) {
                    Ok(a) => spec.args[i] = a,
                    Err(e) => {
                        slot.set(SlotState::Failed(e));
                        me.bump();
                        return;
                    }
                }
            }
            // A blocking write inside the runtime: let tokio move other
            // tasks (in local mode, the raylet's) off this thread meanwhile.
            slot.keep_lineage(&spec);
            let sent = tokio::task::block_in_place(|| me.send_spec(spec));
            if let Err(e) = sent {
                slot.set(SlotState::Failed(TaskError::NodeDied {
                    task: slot.name.clone(),
                    node: me.node_id,
                    detail: e.to_string(),
                }));
            }
        });
        Ok(r)
    }

    fn resolved_arg(&self, id: ObjectId, state: SlotState) -> Result<ArgSpec, TaskError> {
        match state {
            SlotState::Inline(b) if b.len() <= INLINE_MAX => Ok(ArgSpec::Inline(b.to_vec())),
            SlotState::Inline(b) => {
                let _ = self
                    .store
                    .put_parts(id, &[&b], true, Duration::from_secs(60));
                Ok(ArgSpec::Object(id))
            }
            SlotState::Stored | SlotState::Pending => Ok(ArgSpec::Object(id)),
            SlotState::Failed(e) => Err(e),
        }
    }

    /// An argument object: at once if it is here, else waiting (bounded)
    /// with this task's CPUs lent out, so the task producing it can run.
    pub(crate) fn fetch_arg(
        &self,
        id: ObjectId,
    ) -> std::result::Result<crate::object_store::ObjectView<'_>, ObjectError> {
        if matches!(self.store.info(id), Ok(Some(i)) if i.sealed) {
            if let Ok(v) = self.store.get(id, Duration::from_secs(5)) {
                return Ok(v);
            }
        }
        self.blocking(|| self.store.get(id, Duration::from_secs(600)))
    }
}
