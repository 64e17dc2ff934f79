//! The caller's side of direct actor calls ([`crate::proto::direct`]): a
//! call to an actor whose worker listens on this machine is written to
//! that worker's socket, and its outcome read back, with no raylet hop.
//! Invariants:
//!
//! - **DC-1** calls through one handle start in the order they were made:
//!   a process calls an actor directly only while none of its calls to that
//!   actor sent through the raylet is unanswered, and everything it sends
//!   while a link is up goes on that link;
//! - **DC-2** every call sent on a link gets one answer: its outcome from
//!   the worker, or, when the link breaks first, the raylet's (the calls
//!   still in flight are handed to it, under the link's lock, before any
//!   later call can go through the raylet);
//! - **DC-3** an actor that does not listen here (another node, not built
//!   yet, restarting) is called through the raylet, and looked for again
//!   no sooner than [`LOOK_AGAIN`] later.

use super::core::Core;
use crate::ids::ActorId;
use crate::proto::codec;
use crate::proto::direct::DirectEvent;
use crate::proto::task::{LocalRequest, LostCalls, ReplyTo, TaskKind, TaskSpec, MAX_TASK_FRAME};
use dashmap::DashMap;
use prism_objectstore::{IdHasher, ObjectId};
use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an actor found not listening here is called through the raylet
/// before this process looks for its socket again (DC-3).
const LOOK_AGAIN: Duration = Duration::from_millis(500);
/// How long a worker may take to welcome a new connection.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(2);

/// Direct-call state of one process (caller side, and the worker side's
/// reply routes in [`super::direct_serve`]).
#[derive(Debug, Default)]
pub(crate) struct Direct {
    /// Where this node's actor workers listen (`<session>/a`); `None`
    /// when direct calls are off.
    pub(super) dir: Option<PathBuf>,
    /// Where the raylet sends this process's results (a call's `reply_to`).
    pub(super) reply_to: Option<ReplyTo>,
    /// How long an idle lease is kept for the next task (`lease.rs`).
    pub(super) lease_idle: Duration,
    links: DashMap<ActorId, Arc<Link>>,
    absent: DashMap<ActorId, Instant>,
    /// Unanswered calls sent through the raylet, per actor (DC-1).
    via_raylet: DashMap<ActorId, usize>,
    raylet_calls: DashMap<ObjectId, ActorId, IdHasher>,
    pub(super) serve: super::direct_serve::Serve,
}

/// One connection to an actor's worker.
#[derive(Debug)]
struct Link {
    actor: ActorId,
    restarts: u32,
    state: Mutex<LinkState>,
}

#[derive(Debug)]
struct LinkState {
    /// `None` once broken.
    stream: Option<UnixStream>,
    /// Sent and not answered, oldest first.
    inflight: VecDeque<TaskSpec>,
}

impl Direct {
    /// Direct calls under `session` (the raylet's session directory).
    pub(super) fn new(session: Option<PathBuf>, reply_to: ReplyTo, lease_idle: Duration) -> Direct {
        Direct {
            dir: session.map(|s| s.join("a")),
            reply_to: Some(reply_to),
            lease_idle,
            ..Direct::default()
        }
    }

    /// The socket `actor`'s worker listens on, if direct calls are on.
    pub(super) fn socket(&self, actor: ActorId) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(actor.to_string()))
    }

    /// The socket leased worker `worker` listens on, if direct calls are on.
    pub(super) fn worker_socket(&self, worker: u64) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(crate::proto::direct::lease_socket_name(worker)))
    }

    /// Whether a link to `actor`'s worker is open.
    pub(super) fn linked(&self, actor: ActorId) -> bool {
        self.links.contains_key(&actor)
    }

    /// An answer for `id` came from the raylet.
    pub(super) fn answered(&self, id: ObjectId) {
        if let Some((_, actor)) = self.raylet_calls.remove(&id) {
            if let Some(mut n) = self.via_raylet.get_mut(&actor) {
                *n = n.saturating_sub(1);
            }
            self.via_raylet.remove_if(&actor, |_, n| *n == 0);
        }
    }

    fn count_raylet_call(&self, id: ObjectId, actor: ActorId) {
        self.raylet_calls.insert(id, actor);
        *self.via_raylet.entry(actor).or_default() += 1;
    }

    /// The live link to `actor`, opening one if DC-1 and DC-3 allow.
    fn link(&self, core: &Arc<Core>, actor: ActorId) -> Option<Arc<Link>> {
        if let Some(l) = self.links.get(&actor) {
            return Some(l.clone());
        }
        let path = self.socket(actor)?;
        if self.via_raylet.get(&actor).is_some_and(|n| *n > 0) {
            return None;
        }
        let now = Instant::now();
        if self.absent.get(&actor).is_some_and(|t| *t > now) {
            return None;
        }
        let Some((stream, restarts)) = open(&path) else {
            self.absent.insert(actor, now + LOOK_AGAIN);
            return None;
        };
        let reader = stream.try_clone().ok()?;
        let link = Arc::new(Link {
            actor,
            restarts,
            state: Mutex::new(LinkState {
                stream: Some(stream),
                inflight: VecDeque::new(),
            }),
        });
        match self.links.entry(actor) {
            // Another thread of this process opened one first: use it.
            dashmap::Entry::Occupied(e) => return Some(e.get().clone()),
            dashmap::Entry::Vacant(v) => {
                v.insert(link.clone());
            }
        }
        let (me, l) = (core.clone(), link.clone());
        let started = std::thread::Builder::new()
            .name("prism-direct".into())
            .spawn(move || read_outcomes(&me, &l, reader));
        if started.is_err() {
            // Calls other threads already sent on it go to the raylet.
            link.hand_over(core);
            return None;
        }
        Some(link)
    }
}

/// Connects to a worker's socket and reads its welcome.
pub(super) fn open(path: &std::path::Path) -> Option<(UnixStream, u32)> {
    let mut s = UnixStream::connect(path).ok()?;
    s.set_read_timeout(Some(WELCOME_TIMEOUT)).ok()?;
    let restarts = match codec::read_frame::<DirectEvent>(&mut s, MAX_TASK_FRAME) {
        Ok(Some(DirectEvent::Welcome { restarts })) => restarts,
        _ => return None,
    };
    s.set_read_timeout(None).ok()?;
    Some((s, restarts))
}

/// Reads a link's outcomes until it breaks (then DC-2's hand-over).
fn read_outcomes(core: &Arc<Core>, link: &Arc<Link>, stream: UnixStream) {
    let mut r = std::io::BufReader::with_capacity(64 << 10, stream);
    let why = loop {
        match codec::read_frame::<DirectEvent>(&mut r, MAX_TASK_FRAME) {
            Ok(Some(DirectEvent::Finished {
                task_id, outcome, ..
            })) => {
                let known = {
                    let mut st = link.state.lock().unwrap_or_else(|p| p.into_inner());
                    let pos = st.inflight.iter().position(|t| t.task_id == task_id);
                    pos.and_then(|p| st.inflight.remove(p)).is_some()
                };
                if known {
                    core.finish(task_id.result(), outcome);
                }
            }
            Ok(Some(other)) => break format!("unexpected {other:?}"),
            Ok(None) => break "the worker closed the connection".to_string(),
            Err(e) => break e.to_string(),
        }
    };
    tracing::debug!(actor = %link.actor, "direct link to the actor's worker ended: {why}");
    link.hand_over(core);
}

impl Link {
    /// Writes `spec`; gives it back if the link was already broken.
    fn send(&self, core: &Arc<Core>, spec: TaskSpec) -> Option<TaskSpec> {
        let Ok(frame) = codec::encode(&spec) else {
            return Some(spec);
        };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(stream) = st.stream.as_mut() else {
            return Some(spec);
        };
        let wrote = stream.write_all(&frame);
        st.inflight.push_back(spec);
        if wrote.is_err() {
            drop(st);
            // This call too: it may have reached the worker.
            self.hand_over(core);
        }
        None
    }

    /// DC-2: the link is broken; the raylet answers what it held.
    fn hand_over(&self, core: &Arc<Core>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = st.stream.take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        let calls: Vec<TaskSpec> = st.inflight.drain(..).collect();
        if !calls.is_empty() {
            // Counted and sent before the link leaves the map: a later
            // call finds it broken, or the count, and so goes through the
            // raylet after these (DC-1, DC-2).
            for c in &calls {
                core.direct
                    .count_raylet_call(c.task_id.result(), self.actor);
            }
            let lost = LostCalls {
                actor_id: self.actor,
                restarts: self.restarts,
                calls,
            };
            if let Err(e) = core.send(&LocalRequest::DirectLost(lost)) {
                tracing::warn!(actor = %self.actor, "cannot hand lost direct calls to the raylet: {e}");
            }
        }
        core.direct
            .links
            .remove_if(&self.actor, |_, l| std::ptr::eq(&**l, self));
    }
}

impl Core {
    /// Sends a task to a leased worker or the raylet (`lease.rs`), or an
    /// actor call straight to its worker when DC-1 and DC-3 allow.
    pub(crate) fn send_spec(self: &Arc<Self>, mut spec: TaskSpec) -> super::error::Result<()> {
        let TaskKind::ActorCall(call) = &spec.kind else {
            return self.leases.submit(self, spec);
        };
        let actor = call.actor_id;
        if let Some(link) = self.direct.link(self, actor) {
            spec.reply_to = self.direct.reply_to;
            match link.send(self, spec) {
                None => return Ok(()),
                Some(back) => spec = back,
            }
        }
        let id = spec.task_id.result();
        self.direct.count_raylet_call(id, actor);
        let sent = self.send(&LocalRequest::Submit(spec));
        if sent.is_err() {
            self.direct.answered(id);
        }
        sent
    }
}
