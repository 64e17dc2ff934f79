//! The process's runtime: one connection to the local raylet's task socket,
//! the table of objects this process owns (small results live here, inline),
//! and the local object store client. Drivers and workers share it.

use super::error::{Error, Result, TaskError};
use super::object_ref::{EncodedArg, ObjectRef, OwnerGuard};
use super::options::TaskOptions;
use super::value::{Encoded, Value};
use crate::ids::{JobId, NodeId};
use crate::object_store::{ObjectError, StoreClient};
use crate::proto::codec;
use crate::proto::task::{ArgSpec, LocalEvent, LocalRequest, Outcome, TaskKind, TaskSpec};
use dashmap::DashMap;
use prism_objectstore::ObjectId;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Results and arguments up to this size travel inline in messages; larger
/// ones go through the object store.
pub const INLINE_MAX: usize = 100 * 1024;

/// How long a `get` without a timeout waits on the store before asking again.
const FOREVER: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone)]
pub(crate) enum SlotState {
    Pending,
    Inline(Arc<Encoded>),
    Stored,
    Failed(TaskError),
}

/// One owned object: pending until its task ends.
#[derive(Debug)]
pub(crate) struct Slot {
    name: String,
    state: Mutex<SlotState>,
    cv: Condvar,
    notify: Notify,
    escaped: AtomicBool,
    /// This process holds a pinned copy in the store (unpinned on release).
    stored: AtomicBool,
}

impl Slot {
    fn new(name: &str, state: SlotState) -> Arc<Slot> {
        Arc::new(Slot {
            name: name.to_string(),
            state: Mutex::new(state),
            cv: Condvar::new(),
            notify: Notify::new(),
            escaped: AtomicBool::new(false),
            stored: AtomicBool::new(false),
        })
    }

    fn state(&self) -> SlotState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, s: SlotState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
        self.cv.notify_all();
        self.notify.notify_waiters();
    }

    /// Waits until not pending; `None` on timeout.
    fn wait(&self, deadline: Option<Instant>) -> Option<SlotState> {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if !matches!(*g, SlotState::Pending) {
                return Some(g.clone());
            }
            match deadline {
                None => g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    g = self
                        .cv
                        .wait_timeout(g, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }

    async fn ready(&self) {
        loop {
            let n = self.notify.notified();
            if !matches!(self.state(), SlotState::Pending) {
                return;
            }
            n.await;
        }
    }
}

/// The process's connection to Prism.
#[derive(Debug)]
pub struct Core {
    tx: Mutex<std::os::unix::net::UnixStream>,
    slots: DashMap<ObjectId, Arc<Slot>>,
    keepalive: DashMap<ObjectId, Vec<Arc<OwnerGuard>>>,
    pub(crate) store: StoreClient,
    pub(crate) node_id: NodeId,
    pub(crate) job_id: JobId,
    pub(crate) handle: tokio::runtime::Handle,
    pub(crate) worker: bool,
    changed: (Mutex<u64>, Condvar),
    lost: Mutex<Option<String>>,
}

static CORE: RwLock<Option<Arc<Core>>> = RwLock::new(None);

/// This process's runtime, if `prism::init()` ran.
pub(crate) fn current() -> Result<Arc<Core>> {
    CORE.read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or(Error::NotInitialized)
}

pub(crate) fn install(core: Option<Arc<Core>>) {
    *CORE.write().unwrap_or_else(|p| p.into_inner()) = core;
}

impl Core {
    pub(crate) fn new(
        tx: std::os::unix::net::UnixStream,
        store: StoreClient,
        node_id: NodeId,
        job_id: JobId,
        handle: tokio::runtime::Handle,
        worker: bool,
    ) -> Arc<Core> {
        Arc::new(Core {
            tx: Mutex::new(tx),
            slots: DashMap::new(),
            keepalive: DashMap::new(),
            store,
            node_id,
            job_id,
            handle,
            worker,
            changed: (Mutex::new(0), Condvar::new()),
            lost: Mutex::new(None),
        })
    }

    pub(crate) fn send(&self, req: &LocalRequest) -> Result<()> {
        let frame = codec::encode(req).map_err(|e| Error::Encode(e.to_string()))?;
        let mut tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        std::io::Write::write_all(&mut *tx, &frame).map_err(|_| {
            Error::Disconnected(
                self.lost
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_else(|| "the raylet connection closed".into()),
            )
        })
    }

    /// Handles one event from the raylet (the reader task calls this).
    pub(crate) fn on_event(self: &Arc<Self>, ev: LocalEvent) -> Option<(TaskSpec, Vec<u32>)> {
        match ev {
            LocalEvent::Finished { task_id, outcome } => {
                self.finish(ObjectId(task_id), outcome);
                None
            }
            LocalEvent::Execute { task, gpus } => Some((task, gpus)),
            LocalEvent::Warning { message } => {
                eprintln!("prism: warning: {message}");
                None
            }
            other => {
                tracing::warn!("unexpected event from the raylet: {other:?}");
                None
            }
        }
    }

    /// The raylet connection ended: every pending object fails.
    pub(crate) fn on_lost(&self, why: String) {
        *self.lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
        for s in self.slots.iter() {
            if matches!(s.state(), SlotState::Pending) {
                s.set(SlotState::Failed(TaskError::NodeDied {
                    task: s.name.clone(),
                    node: self.node_id,
                    detail: format!("lost the local raylet: {why}"),
                }));
            }
        }
        self.bump();
    }

    fn bump(&self) {
        *self.changed.0.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.1.notify_all();
    }

    fn finish(self: &Arc<Self>, id: ObjectId, outcome: Outcome) {
        self.keepalive.remove(&id);
        let Some(slot) = self.slots.get(&id).map(|s| s.clone()) else {
            // The owner dropped every ref first: free a stored result.
            if let Outcome::Stored { node, .. } = outcome {
                if node == self.node_id {
                    let _ = self.store.unpin(id);
                }
            }
            return;
        };
        let state = match outcome {
            Outcome::Inline(bytes) => {
                let mut b = Encoded::with_capacity(bytes.len());
                b.extend_from_slice(&bytes);
                SlotState::Inline(Arc::new(b))
            }
            Outcome::Stored { .. } => SlotState::Stored,
            Outcome::Failed(f) => SlotState::Failed(TaskError::from_failure(&slot.name, f)),
        };
        let inline = match &state {
            SlotState::Inline(b) => Some(b.clone()),
            _ => None,
        };
        slot.set(state);
        // Set the state, then look at `escaped`; `escape` does the reverse,
        // so one of the two always copies an escaped value into the store.
        std::sync::atomic::fence(Ordering::SeqCst);
        if let (Some(b), true) = (inline, slot.escaped.load(Ordering::SeqCst)) {
            self.store_copy(id, &b);
        }
        self.bump();
    }

    /// Copies an inline value into the store (idempotent).
    fn store_copy(&self, id: ObjectId, bytes: &[u8]) {
        if matches!(self.store.info(id), Ok(Some(_))) {
            return;
        }
        if let Err(e) = self
            .store
            .put_parts(id, &[bytes], true, Duration::from_secs(60))
        {
            if !matches!(self.store.info(id), Ok(Some(_))) {
                tracing::warn!(object = %id, "cannot copy an escaped value into the store: {e}");
            }
        }
    }

    /// The last local ref to an owned object was dropped.
    pub(crate) fn release(&self, id: ObjectId) {
        // An escaped object may be read by other processes through the refs
        // it was archived in: it stays (and a pending one is still copied to
        // the store when its task ends). See the README's known gaps.
        let escaped = self
            .slots
            .get(&id)
            .is_some_and(|s| s.escaped.load(Ordering::SeqCst));
        if escaped {
            return;
        }
        if let Some((_, slot)) = self.slots.remove(&id) {
            if matches!(slot.state(), SlotState::Stored) || slot.stored.load(Ordering::SeqCst) {
                let _ = self.store.unpin(id);
            }
        }
    }

    /// The owner frees an object now, even if refs to it were passed on
    /// (`prism::free`): its primary copy is unpinned, so the store may evict
    /// it; readers holding a view keep it until they release it.
    pub(crate) fn free(&self, id: ObjectId) {
        if let Some((_, slot)) = self.slots.remove(&id) {
            if matches!(slot.state(), SlotState::Stored) || slot.stored.load(Ordering::SeqCst) {
                let _ = self.store.unpin(id);
            }
        }
    }

    /// A ref is being archived into a value: make its object reachable by
    /// other processes (small inline values are copied into the store).
    pub(crate) fn escape(&self, id: ObjectId) {
        let Some(slot) = self.slots.get(&id).map(|s| s.clone()) else {
            return;
        };
        if slot.escaped.swap(true, Ordering::SeqCst) {
            return;
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        if let SlotState::Inline(b) = slot.state() {
            self.store_copy(id, &b);
        }
    }

    /// Puts a value in the object store. A small value is also kept here,
    /// so this process's own `get`s of it need no round trip to the store.
    pub(crate) fn put<T: Value>(self: &Arc<Self>, value: &T) -> Result<ObjectRef<T>> {
        let id = ObjectId::random();
        let len = value.encoded_len()?;
        let slot = if len <= INLINE_MAX {
            let bytes = value.encode()?;
            self.store
                .put_parts(id, &[&bytes], true, Duration::from_secs(60))?;
            let s = Slot::new("put", SlotState::Inline(Arc::new(bytes)));
            s.stored.store(true, Ordering::SeqCst);
            s
        } else {
            // Large: archived straight into shared memory, one copy.
            let offset = self.store.create(id, len, true, Duration::from_secs(60))?;
            // SAFETY: this client just created the object: until it seals it,
            // the range is its alone (no reader can get an unsealed object,
            // OS-3), and it is exactly the object's `len` bytes.
            let out = unsafe { self.store.segment().bytes_mut(offset, len) };
            let written = out
                .map_err(|e| Error::Encode(e.to_string()))
                .and_then(|out| value.encode_into(out));
            if let Err(e) = written {
                let _ = self.store.abort(id);
                return Err(e);
            }
            self.store.seal(id)?;
            Slot::new("put", SlotState::Stored)
        };
        self.slots.insert(id, slot);
        Ok(ObjectRef::owned(id, self.clone()))
    }

    /// Takes ownership of an object this process just created and sealed
    /// in the store (its pin is dropped with the last ref).
    pub(crate) fn adopt_stored<T>(self: &Arc<Self>, id: ObjectId) -> ObjectRef<T> {
        self.slots.insert(id, Slot::new("put", SlotState::Stored));
        ObjectRef::owned(id, self.clone())
    }

    /// Makes sure an object this process owns is in the local store, for a
    /// view in place: waits for its task, and copies a small (inline) value
    /// into the store, unpinned again with the last ref.
    pub(crate) fn ensure_stored(&self, id: ObjectId, timeout: Option<Duration>) -> Result<()> {
        let Some(slot) = self.slots.get(&id).map(|s| s.clone()) else {
            return Ok(());
        };
        let mut state = slot.state();
        if matches!(state, SlotState::Pending) {
            let deadline = timeout.map(|t| Instant::now() + t);
            state = self
                .blocking(|| slot.wait(deadline))
                .ok_or_else(|| Error::Timeout {
                    what: format!("task {} ({id})", slot.name),
                    ms: timeout.map_or(0, |t| t.as_millis() as u64),
                })?;
        }
        match state {
            SlotState::Inline(b) => {
                self.store_copy(id, &b);
                slot.stored.store(true, Ordering::SeqCst);
                Ok(())
            }
            SlotState::Failed(e) => Err(e.into()),
            SlotState::Stored | SlotState::Pending => Ok(()),
        }
    }

    /// Submits a task.
    pub(crate) fn submit<R>(
        self: &Arc<Self>,
        opts: &TaskOptions,
        args: Vec<EncodedArg>,
    ) -> Result<ObjectRef<R>> {
        let mut spec = TaskSpec::new(
            ObjectId::random().0,
            self.job_id,
            opts.function,
            opts.display_name(),
            TaskKind::Task,
        );
        spec.resources = opts.wire_resources();
        spec.strategy = match &opts.placement {
            Some((pg, index)) => pg.strategy_for(*index)?,
            None => opts.strategy.clone(),
        };
        spec.max_retries = opts.max_retries;
        spec.retry_exceptions = opts.retry_exceptions;
        spec.fail_if_infeasible = opts.fail_if_infeasible;
        self.submit_spec(spec, args, false)
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
        let task_id = ObjectId(spec.task_id);
        let slot = Slot::new(&spec.name, SlotState::Pending);
        self.slots.insert(task_id, slot.clone());
        let r = ObjectRef::owned(task_id, self.clone());
        let mut specs = Vec::with_capacity(args.len());
        let mut waits = Vec::new();
        let mut guards = Vec::new();
        for (i, a) in args.into_iter().enumerate() {
            match a {
                EncodedArg::Value(b) if b.len() <= INLINE_MAX => {
                    specs.push(ArgSpec::Inline(b.to_vec()))
                }
                EncodedArg::Value(b) => {
                    let id = ObjectId::random();
                    self.store
                        .put_parts(id, &[&b], true, Duration::from_secs(60))?;
                    self.slots
                        .insert(id, Slot::new("argument", SlotState::Stored));
                    guards.push(Arc::new(OwnerGuard {
                        id,
                        core: self.clone(),
                    }));
                    specs.push(ArgSpec::Object(id.0));
                }
                EncodedArg::Ref(id, guard) => {
                    guards.extend(guard);
                    match self.slots.get(&id).map(|s| s.clone()) {
                        None => specs.push(ArgSpec::Object(id.0)),
                        Some(s) => match s.state() {
                            SlotState::Pending => {
                                waits.push((i, id, s));
                                specs.push(ArgSpec::Object(id.0));
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
        spec.args = specs;
        if waits.is_empty() {
            self.send(&LocalRequest::Submit(spec))?;
            return Ok(r);
        }
        if in_order {
            for (i, id, s) in waits {
                self.blocking(|| s.wait(None));
                match self.resolved_arg(id, s.state()) {
                    Ok(a) => spec.args[i] = a,
                    Err(e) => {
                        slot.set(SlotState::Failed(e));
                        return Ok(r);
                    }
                }
            }
            self.send(&LocalRequest::Submit(spec))?;
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
            let sent = tokio::task::block_in_place(|| me.send(&LocalRequest::Submit(spec)));
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
                Ok(ArgSpec::Object(id.0))
            }
            SlotState::Stored | SlotState::Pending => Ok(ArgSpec::Object(id.0)),
            SlotState::Failed(e) => Err(e),
        }
    }

    pub(crate) fn blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.worker {
            let _ = self.send(&LocalRequest::Blocked);
        }
        let out = f();
        if self.worker {
            let _ = self.send(&LocalRequest::Unblocked);
        }
        out
    }

    /// The value of `id`, waiting up to `timeout` (forever when `None`).
    pub(crate) fn get<T: Value>(&self, id: ObjectId, timeout: Option<Duration>) -> Result<T> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let timed_out = |what: &str| Error::Timeout {
            what: what.to_string(),
            ms: timeout.map_or(0, |t| t.as_millis() as u64),
        };
        let mut owned = false;
        if let Some(slot) = self.slots.get(&id).map(|s| s.clone()) {
            owned = true;
            let mut state = slot.state();
            if matches!(state, SlotState::Pending) {
                state = self
                    .blocking(|| slot.wait(deadline))
                    .ok_or_else(|| timed_out(&format!("task {} ({id})", slot.name)))?;
            }
            match state {
                SlotState::Inline(b) => return T::decode(&b),
                SlotState::Failed(e) => return Err(e.into()),
                SlotState::Stored | SlotState::Pending => {}
            }
        }
        let left = deadline.map_or(FOREVER, |d| d.saturating_duration_since(Instant::now()));
        let got = if owned {
            self.store.get(id, left)
        } else {
            self.blocking(|| self.store.get(id, left))
        };
        let view = match got {
            Ok(v) => v,
            Err(ObjectError::Refused { .. }) if timeout.is_some() => {
                return Err(timed_out(&format!("object {id}")))
            }
            Err(ObjectError::Refused { message, .. }) => {
                return Err(TaskError::ObjectLost {
                    task: "get".into(),
                    object: id.to_string(),
                    detail: message,
                }
                .into())
            }
            Err(e) => return Err(e.into()),
        };
        T::decode(&view)
    }

    /// Waits until the object is ready (async `get`).
    pub(crate) async fn ready(&self, id: ObjectId) {
        if let Some(slot) = self.slots.get(&id).map(|s| s.clone()) {
            slot.ready().await;
        }
    }

    fn is_ready(&self, id: ObjectId) -> bool {
        match self.slots.get(&id).map(|s| s.state()) {
            Some(SlotState::Pending) => false,
            Some(_) => true,
            None => matches!(self.store.info(id), Ok(Some(i)) if i.sealed),
        }
    }

    /// Ray's `wait`: the first `num_returns` ready ids (in the order given)
    /// and the rest, once enough are ready or `timeout` passes.
    pub(crate) fn wait(
        &self,
        ids: &[ObjectId],
        num_returns: usize,
        timeout: Option<Duration>,
    ) -> (Vec<ObjectId>, Vec<ObjectId>) {
        let deadline = timeout.map(|t| Instant::now() + t);
        let want = num_returns.min(ids.len());
        self.blocking(|| loop {
            let seen = *self.changed.0.lock().unwrap_or_else(|p| p.into_inner());
            let (mut ready, mut rest) = (Vec::new(), Vec::new());
            for id in ids {
                if ready.len() < want && self.is_ready(*id) {
                    ready.push(*id);
                } else {
                    rest.push(*id);
                }
            }
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            if ready.len() >= want || expired {
                return (ready, rest);
            }
            let g = self.changed.0.lock().unwrap_or_else(|p| p.into_inner());
            if *g == seen {
                let mut left = Duration::from_millis(5);
                if let Some(d) = deadline {
                    left = left.min(d.saturating_duration_since(Instant::now()));
                }
                let _ = self.changed.1.wait_timeout(g, left);
            }
        })
    }

    /// Cancels the task that produces `id`.
    pub(crate) fn cancel(&self, id: ObjectId, force: bool) -> Result<()> {
        self.send(&LocalRequest::Cancel {
            task_id: id.0,
            force,
        })
    }
}

impl Core {
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

    /// Calls an actor's method; calls through one handle stay in order.
    pub(crate) fn submit_call<R>(
        self: &Arc<Self>,
        actor: crate::ids::ActorId,
        caller: [u8; 16],
        seq: u64,
        method: &'static str,
        args: Vec<EncodedArg>,
    ) -> Result<ObjectRef<R>> {
        let call = crate::proto::task::ActorCall {
            actor_id: actor,
            caller,
            seq,
        };
        let spec = TaskSpec::new(
            ObjectId::random().0,
            self.job_id,
            method,
            method,
            TaskKind::ActorCall(call),
        );
        self.submit_spec(spec, args, true)
    }

    /// Creates an actor; the ref resolves when its constructor has run.
    pub(crate) fn create_actor(
        self: &Arc<Self>,
        opts: &super::actor::ActorOptions,
        args: Vec<EncodedArg>,
    ) -> Result<(crate::ids::ActorId, ObjectRef<()>)> {
        let actor = crate::ids::ActorId::random();
        let short = opts.class.rsplit("::").next().unwrap_or(opts.class);
        let create = crate::proto::task::ActorCreate {
            actor_id: actor,
            name: opts.name.clone(),
            namespace: opts.namespace.clone(),
            detached: opts.detached,
            max_restarts: opts.max_restarts,
            max_task_retries: opts.max_task_retries,
            max_concurrency: opts.max_concurrency,
            restarts: 0,
        };
        let mut spec = TaskSpec::new(
            actor.0,
            self.job_id,
            opts.class,
            &format!("{short}::new"),
            TaskKind::CreateActor(create),
        );
        spec.resources = crate::proto::common::Resources::from(&opts.resources);
        spec.fail_if_infeasible = opts.fail_if_infeasible;
        spec.strategy = match &opts.placement {
            Some((pg, index)) => pg.strategy_for(*index)?,
            None => opts.strategy.clone(),
        };
        let created = self.submit_spec(spec, args, true)?;
        Ok((actor, created))
    }

    /// A live named actor's id.
    pub(crate) fn lookup_actor(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
    ) -> Result<crate::ids::ActorId> {
        self.ask_raylet("get_actor", Duration::from_secs(60), |request_id| {
            LocalRequest::LookupActor {
                request_id,
                name: name.to_string(),
                namespace: namespace.to_string(),
            }
        })
    }

    /// Sends a request whose answer comes back as the result of a pseudo
    /// task `request_id`, and waits for it.
    pub(crate) fn ask_raylet<T: Value>(
        self: &Arc<Self>,
        what: &'static str,
        timeout: Duration,
        request: impl FnOnce([u8; 16]) -> LocalRequest,
    ) -> Result<T> {
        let request_id = ObjectId::random();
        self.slots
            .insert(request_id, Slot::new(what, SlotState::Pending));
        let r: ObjectRef<T> = ObjectRef::owned(request_id, self.clone());
        self.send(&request(request_id.0))?;
        self.get::<T>(r.id(), Some(timeout))
    }

    /// Kills an actor's worker.
    pub(crate) fn kill_actor(&self, actor: crate::ids::ActorId, no_restart: bool) -> Result<()> {
        self.send(&LocalRequest::KillActor {
            actor_id: actor,
            no_restart,
        })
    }
}
