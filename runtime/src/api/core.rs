//! The process's runtime: one connection to the local raylet's task socket,
//! the table of objects this process owns (small results live here, inline),
//! and the local object store client. Drivers and workers share it.

use super::error::{Error, Result, TaskError};
use super::object_ref::OwnerGuard;
use super::ownership::{Owned, SlotState};
use super::value::{Encoded, Value};
use crate::ids::{JobId, NodeId};
use crate::object_store::{ObjectError, StoreClient};
use crate::proto::codec;
use crate::proto::task::{Failure, LocalEvent, LocalRequest, Outcome, TaskSpec};
use dashmap::DashMap;
use prism_objectstore::{IdHasher, ObjectId};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Results and arguments up to this size travel inline in messages; larger
/// ones go through the object store.
pub const INLINE_MAX: usize = 100 * 1024;

/// Why one try of a `get` gave no value.
enum GetError {
    /// The object is lost (its owner may rebuild it).
    Lost(String),
    /// Anything else.
    Other(Error),
}
use GetError::{Lost, Other};

impl From<Error> for GetError {
    fn from(e: Error) -> Self {
        Other(e)
    }
}

/// How long a `get` without a timeout waits on the store before asking again.
const FOREVER: Duration = Duration::from_secs(30 * 24 * 3600);

/// The process's connection to Prism.
#[derive(Debug)]
pub struct Core {
    tx: Mutex<std::os::unix::net::UnixStream>,
    pub(crate) owned: Owned,
    pub(crate) borrowed: super::borrowing::Borrowed,
    /// Borrow releases queued to be sent in a batch (BR-5).
    pub(crate) releases: Mutex<Vec<(crate::proto::task::ReplyTo, ObjectId)>>,
    pub(crate) keepalive: DashMap<ObjectId, Vec<Arc<OwnerGuard>>, IdHasher>,
    /// Refs inside results of tasks that ran here, by result, until the
    /// results' owners release them (RR-1).
    pub(crate) held: DashMap<ObjectId, Vec<Arc<OwnerGuard>>, IdHasher>,
    /// Residency rules of objects this process owns (until freed): a task
    /// reading one is placed inside its rule.
    pub(crate) rules: DashMap<ObjectId, crate::proto::common::Residency, IdHasher>,
    pub(crate) store: StoreClient,
    pub(crate) node_id: NodeId,
    pub(crate) job_id: JobId,
    pub(crate) handle: tokio::runtime::Handle,
    pub(crate) worker: bool,
    /// Direct actor calls on this machine, both sides.
    pub(crate) direct: super::direct::Direct,
    /// Workers leased for this process's tasks.
    pub(crate) leases: super::lease::Leases,
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
        direct: super::direct::Direct,
    ) -> Arc<Core> {
        Arc::new(Core {
            tx: Mutex::new(tx),
            owned: Owned::default(),
            borrowed: Default::default(),
            releases: Mutex::new(Vec::new()),
            keepalive: DashMap::default(),
            held: DashMap::default(),
            rules: DashMap::default(),
            store,
            node_id,
            job_id,
            handle,
            worker,
            direct,
            leases: Default::default(),
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

    /// Sends this process's metric changes to the raylet (before a
    /// worker's result; once a second from a driver).
    pub(crate) fn flush_metrics(&self) {
        let updates = crate::metrics::take_pending();
        if !updates.is_empty() {
            let _ = self.send(&LocalRequest::Metrics(updates));
        }
    }

    /// Handles one event from the raylet (the reader task calls this).
    pub(crate) fn on_event(self: &Arc<Self>, ev: LocalEvent) -> Option<(TaskSpec, Vec<u32>)> {
        match ev {
            LocalEvent::Finished { task_id, outcome } => {
                if self.leases.answered(self, task_id, &outcome) {
                    return None;
                }
                self.direct.answered(task_id.result());
                self.finish(task_id.result(), outcome);
                None
            }
            LocalEvent::Execute { task, gpus } => Some((task, gpus)),
            LocalEvent::RevokeLease { lease } => {
                self.leases.revoke(self, lease);
                None
            }
            LocalEvent::Warning { message } => {
                eprintln!("prism: warning: {message}");
                None
            }
            LocalEvent::Logs(lines) => {
                print_worker_output(&lines);
                None
            }
            LocalEvent::Borrows { objects, release } => {
                self.on_borrows(objects, release);
                None
            }
            LocalEvent::ReleaseHeld { results } => {
                for id in results {
                    self.result_released(id);
                }
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
        for s in self.owned.all() {
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

    pub(crate) fn bump(&self) {
        *self.changed.0.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.1.notify_all();
    }

    /// A task's outcome reached this process, its owner.
    pub(crate) fn finish(self: &Arc<Self>, id: ObjectId, outcome: Outcome) {
        // RR-1: who holds the refs inside the result, released with it.
        let (outcome, holder) = outcome.take_holder();
        if let Some(h) = holder {
            match self.owned.get(id) {
                Some(s) => {
                    // A run again elsewhere releases the earlier holder (one
                    // run again on the same worker replaced what it held).
                    if let Some(earlier) = s.set_holder(Some(h)).filter(|e| *e != h) {
                        self.release_holder(earlier, id);
                    }
                    // Let go meanwhile: whoever swaps the holder out
                    // releases it, this or `forget_owned`, once.
                    if self.owned.get(id).is_none() {
                        if let Some(h) = s.set_holder(None) {
                            self.release_holder(h, id);
                        }
                    }
                }
                None => self.release_holder(h, id),
            }
        }
        // A task's arguments stay with its lineage (LN-2: they may have to be
        // rebuilt to run it again); anything else's go now, and so does the
        // lineage of a result held here (it cannot be lost without us).
        if let (Outcome::Inline(_), Some(s)) = (&outcome, self.owned.get(id)) {
            s.lineage.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
        if self.owned.get(id).is_none_or(|s| !s.has_lineage()) {
            self.keepalive.remove(&id);
        }
        let Some(name) = self.owned.get(id).map(|s| s.name.clone()) else {
            // The owner dropped every ref first: free a stored result.
            if let Outcome::Stored { .. } = outcome {
                self.free_copies(id);
            }
            return;
        };
        // LN-2: the task could not read an argument this process owns and
        // can rebuild: rebuild the argument, then run the task again.
        if let Outcome::Failed(Failure::ObjectLost { object, .. }) = &outcome {
            let arg = *object;
            if arg != id && self.rebuild(arg).is_ok() {
                let me = self.clone();
                let arg_slot = self.owned.get(arg);
                self.handle.spawn(async move {
                    if let Some(s) = arg_slot {
                        s.ready().await;
                    }
                    if let Err(why) = me.rebuild(id) {
                        me.fail(id, format!("an argument was rebuilt, but {why}"));
                    }
                });
                return;
            }
        }
        // (`take_holder` above made any `Holding` plain.)
        let state = match outcome {
            Outcome::Inline(bytes)
            | Outcome::Holding {
                inline: Some(bytes),
                ..
            } => {
                let mut b = Encoded::with_capacity(bytes.len());
                b.extend_from_slice(&bytes);
                SlotState::Inline(Arc::new(b))
            }
            Outcome::Stored { .. } | Outcome::Holding { inline: None, .. } => SlotState::Stored,
            Outcome::Failed(f) => SlotState::Failed(TaskError::from_failure(&name, f)),
        };
        // OW-1: an escaped inline value reaches the store.
        if let Some(Some(b)) = self.owned.finish(id, state) {
            self.store_copy(id, &b);
        }
        self.bump();
    }

    /// Ends an owned object's wait with `ObjectLost`.
    fn fail(&self, id: ObjectId, detail: String) {
        if let Some(slot) = self.owned.get(id) {
            slot.set(SlotState::Failed(TaskError::ObjectLost {
                task: slot.name.clone(),
                object: id.to_string(),
                detail,
            }));
            self.bump();
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
    pub(crate) fn get<T: Value>(
        self: &Arc<Self>,
        id: ObjectId,
        timeout: Option<Duration>,
    ) -> Result<T> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            // Refs read out of the value are borrowed from their owners.
            let (once, refs) =
                super::borrowing::decoding_value(|| self.get_once(id, deadline, timeout));
            if !refs.is_empty() && once.is_ok() {
                self.register_decoded(refs);
            }
            match once {
                // LN-1: a lost object its owner can rebuild is made again.
                Err(Lost(message)) => match self.rebuild(id) {
                    Ok(()) => continue,
                    Err(why) => {
                        let name = self.owned.get(id).map_or("get".into(), |s| s.name.clone());
                        return Err(TaskError::ObjectLost {
                            task: name,
                            object: id.to_string(),
                            detail: format!("{message}; {why}"),
                        }
                        .into());
                    }
                },
                Err(Other(e)) => return Err(e),
                Ok(v) => return Ok(v),
            }
        }
    }

    fn get_once<T: Value>(
        &self,
        id: ObjectId,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> std::result::Result<T, GetError> {
        let timed_out = |what: &str| Error::Timeout {
            what: what.to_string(),
            ms: timeout.map_or(0, |t| t.as_millis() as u64),
        };
        let mut owned = false;
        if let Some(slot) = self.owned.get(id) {
            owned = true;
            let mut state = slot.state();
            if matches!(state, SlotState::Pending) {
                state = slot
                    .settles_soon(deadline)
                    .or_else(|| self.blocking(|| slot.wait(deadline)))
                    .ok_or_else(|| timed_out(&format!("task {} ({id})", slot.name)))?;
            }
            match state {
                SlotState::Inline(b) => return Ok(T::decode(&b)?),
                SlotState::Failed(e) => return Err(Error::from(e).into()),
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
            Err(ObjectError::Lost { message }) => return Err(Lost(message)),
            Err(ObjectError::Refused { .. }) if timeout.is_some() => {
                return Err(timed_out(&format!("object {id}")).into())
            }
            Err(ObjectError::Refused { message, .. }) => {
                return Err(Error::from(TaskError::ObjectLost {
                    task: "get".into(),
                    object: id.to_string(),
                    detail: message,
                })
                .into())
            }
            Err(e) => return Err(Error::from(e).into()),
        };
        Ok(T::decode(&view)?)
    }

    /// Runs the task that made `id` again (LN-1): only its owner can, only
    /// for a task's result (a put's value or an actor call's result exists
    /// nowhere else), and at most `max_retries` times.
    pub(crate) fn rebuild(&self, id: ObjectId) -> std::result::Result<(), String> {
        let Some(slot) = self.owned.get(id) else {
            return Err("only its owner can rebuild it, and this process is not its owner".into());
        };
        let again = {
            let mut lineage = slot.lineage.lock().unwrap_or_else(|p| p.into_inner());
            let Some(spec) = lineage.as_mut() else {
                return Err(format!(
                    "it was made by {}, which cannot be run again",
                    slot.origin.describe()
                ));
            };
            if spec.attempt >= spec.max_retries {
                return Err(format!(
                    "its task {} has no retries left to run again (max_retries {})",
                    spec.name, spec.max_retries
                ));
            }
            spec.attempt += 1;
            spec.clone()
        };
        tracing::warn!(object = %id, task = %again.name, attempt = again.attempt, "rebuilding a lost object by running its task again");
        slot.set(SlotState::Pending);
        self.send(&LocalRequest::Submit(again))
            .map_err(|e| e.to_string())
    }

    /// The value of `id` if this process owns it and holds it inline (no
    /// blocking needed: async `get`'s fast path); `None` otherwise.
    pub(crate) fn get_inline<T: Value>(&self, id: ObjectId) -> Option<Result<T>> {
        match self.owned.get(id).map(|s| s.state()) {
            Some(SlotState::Inline(b)) => {
                let (value, refs) = super::borrowing::decoding_value(|| T::decode(&b));
                // Refs to borrow: registered by the blocking path.
                refs.is_empty().then_some(value)
            }
            _ => None,
        }
    }

    /// Waits until the object is ready (async `get`).
    pub(crate) async fn ready(&self, id: ObjectId) {
        if let Some(slot) = self.owned.get(id) {
            slot.ready().await;
        }
    }

    fn is_ready(&self, id: ObjectId) -> bool {
        match self.owned.get(id) {
            Some(slot) => !slot.is_pending(),
            None => matches!(self.store.info(id), Ok(Some(i)) if i.sealed),
        }
    }

    /// The positions (ascending) of the first `want` ready ids.
    fn ready_positions(&self, ids: &[ObjectId], want: usize) -> Vec<usize> {
        let mut ready = Vec::with_capacity(want);
        for (i, id) in ids.iter().enumerate() {
            if ready.len() >= want {
                break;
            }
            if self.is_ready(*id) {
                ready.push(i);
            }
        }
        ready
    }

    /// Ray's `wait`: the positions in `ids` (ascending) of the first
    /// `num_returns` ready ones, once that many are ready or `timeout`
    /// passes. Enough already ready answers without blocking (a worker
    /// does not tell its raylet it blocks).
    pub(crate) fn wait(
        &self,
        ids: &[ObjectId],
        num_returns: usize,
        timeout: Option<Duration>,
    ) -> Vec<usize> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let want = num_returns.min(ids.len());
        let ready = self.ready_positions(ids, want);
        if ready.len() >= want {
            return ready;
        }
        self.blocking(|| loop {
            let seen = *self.changed.0.lock().unwrap_or_else(|p| p.into_inner());
            let ready = self.ready_positions(ids, want);
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            if ready.len() >= want || expired {
                return ready;
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
    pub(crate) fn cancel(self: &Arc<Self>, id: ObjectId, force: bool) -> Result<()> {
        let task_id = crate::ids::TaskId::of_result(id);
        if self.leases.cancel(self, task_id, force) {
            return Ok(());
        }
        self.send(&LocalRequest::Cancel { task_id, force })
    }
}

/// Prints workers' output as the driver's own, each line prefixed with what
/// printed it (stdout lines to stdout, stderr lines to stderr).
fn print_worker_output(lines: &[crate::proto::state::LogLine]) {
    use std::io::Write;
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for l in lines {
        let text = crate::raylet::worker_logs::render(l);
        let _ = if l.stderr {
            writeln!(err, "{text}")
        } else {
            writeln!(out, "{text}")
        };
    }
    let _ = out.flush();
}
