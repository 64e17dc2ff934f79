//! The owner's side of task leases (the raylet's side is L-1..L-8 in
//! `raylet/dispatch/lease.rs`): tasks of one shape (CPU-only, default
//! placement) are pushed straight to workers this process leases from its
//! raylet, one at a time each, and their outcomes read back on the same
//! socket, with no raylet hop. Invariants:
//!
//! - **LO-1** a leased worker runs one of this process's tasks at a time:
//!   the next is pushed only after the last one's outcome;
//! - **LO-2** tasks wait here, in order, only while a lease of their shape
//!   is held and making progress (a revoked one while the task it runs
//!   has not stalled: another is asked for once it ends), or while one is
//!   asked for, for at most [`ASK_WAIT`] per request (it may wait its turn
//!   at the raylet, L-7; one declined for a lease given back since is
//!   asked once more), and, unless they are [`QUICK`], only as many as the
//!   leases run in [`WAIT_BUDGET`] by their recent run times (the rest go
//!   through the raylet, which can spread them over nodes); when the last
//!   lease of the shape is given back or lost, what waits asks for another;
//!   when none is asked for (the raylet declined, and not only because a
//!   lease given back since was held when it was asked), or the ask waited
//!   [`ASK_WAIT`], or every lease held has run its task for [`STALLED`] (a
//!   long task, or one blocked on another), what waits goes through the
//!   raylet, which then has the whole backlog (no task waits here
//!   unboundedly behind a leased task that may wait for it);
//! - **LO-3** a lease is returned once idle for `PRISM_LEASE_IDLE_MS`, or, when
//!   revoked, as soon as its task ends, but while tasks wait here not
//!   before it has been held for [`TENURE`]: owners taking turns on a busy
//!   raylet each run a stretch of tasks instead of one;
//! - **LO-4** when a lease's connection breaks, its unanswered task goes to
//!   the raylet ([`LocalRequest::LeaseLost`]);
//! - **LO-5** a task leaves this table for the raylet (spilled, or lost
//!   with its lease) only while the table is locked and its message is
//!   written before the lock goes: a cancel, which looks here first under
//!   the same lock, either finds it here or reaches the raylet after it;
//! - **LO-6** a granted lease's socket is opened off the thread that reads
//!   the raylet's events (the open waits up to the worker's welcome); its
//!   shape is still asking meanwhile, and a revocation that comes first is
//!   kept and honoured once it is open (LO-3);
//! - **LO-7** what waits here is listed to the raylet (`lease_listed.rs`).

use super::core::Core;
use crate::ids::TaskId;
use crate::proto::codec;
use crate::proto::direct::DirectEvent;
use crate::proto::task::{
    Failure, LocalRequest, Outcome, TaskKind, TaskSpec, WireStrategy, MAX_TASK_FRAME,
};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Tasks of one shape that may wait here (LO-2).
const MAX_QUEUED: usize = 100_000;
/// How much work, by its tasks' recent run times (as their workers measure
/// them), may wait here per lease (LO-2): more goes through the raylet,
/// which can spread it over nodes.
const WAIT_BUDGET: Duration = Duration::from_millis(100);
/// Tasks that run quicker than this (on their worker, which does not count
/// the queueing a busy machine adds before and after) all wait here: the
/// raylet's path costs more than running them on the leases.
const QUICK: Duration = Duration::from_millis(1);
/// A lease whose task has run this long holds up what waits here (LO-2).
const STALLED: Duration = Duration::from_millis(20);
/// Leases of one shape at most.
const MAX_LEASES: usize = 64;
/// How long a shape's tasks go through the raylet after a declined lease.
const DECLINED_FOR: Duration = Duration::from_millis(50);
/// How long a lease is kept from its grant, while tasks wait for it, once
/// the raylet revoked it (LO-3): owners taking turns do not churn.
const TENURE: Duration = Duration::from_millis(50);
/// How long tasks wait here for a lease asked for and not answered (the
/// request waits its turn at the raylet, L-7) before they go through the
/// raylet (LO-2).
const ASK_WAIT: Duration = Duration::from_millis(1000);

/// This process's leases.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    inner: Mutex<Inner>,
    /// Lease requests not answered yet: while none is, a result from the
    /// raylet is not looked up here (no lock on that path).
    pending: AtomicUsize,
    /// Tasks whose outcomes came back on a lease, ever.
    ran: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    shapes: HashMap<String, Shape>,
    /// Lease requests not answered yet, and their shape.
    asked: HashMap<TaskId, String>,
    /// Leases granted whose sockets are being opened, and whether they
    /// were revoked meanwhile (LO-6).
    opening: HashMap<TaskId, bool>,
    /// Whether the idle sweeper runs.
    sweeping: bool,
    /// When the tasks waiting here were last listed to the raylet, and
    /// whether any were (LO-7).
    listed_at: Option<Instant>,
    listed_any: bool,
}

#[derive(Debug, Default)]
struct Shape {
    queue: VecDeque<TaskSpec>,
    held: Vec<Held>,
    asking: bool,
    /// When the lease asked for was asked for.
    asked_at: Option<Instant>,
    /// Whether a lease was held when it was asked for: the raylet then
    /// declines it (L-7), and if the lease held is given back before that
    /// answer comes, the shape asks once more, to wait its turn (LO-2).
    asked_holding: bool,
    declined_until: Option<Instant>,
    /// How long its tasks run on a lease, in microseconds, as their
    /// workers measure it (push to outcome where a worker did not say): a
    /// moving average and the last one; `None` before the first.
    took_us: Option<(f64, f64)>,
}

/// One leased worker.
#[derive(Debug)]
struct Held {
    lease: TaskId,
    stream: UnixStream,
    /// The task it runs, and whether that was cancelled here.
    busy: Option<(TaskSpec, bool)>,
    /// When it was pushed its task.
    busy_since: Instant,
    /// Nothing more is pushed to it: given back once its task ends.
    revoked: bool,
    /// Revoked by the raylet while tasks wait, and kept until then (its
    /// [`TENURE`], LO-3).
    yield_at: Option<Instant>,
    /// When its socket opened.
    granted: Instant,
    idle_since: Option<Instant>,
}

/// Tasks to send through the raylet once the lock is let go.
type Spill = Vec<TaskSpec>;

impl Held {
    /// Pushes `spec` (LO-1); gives it back if the write failed.
    fn push(&mut self, spec: TaskSpec) -> Option<TaskSpec> {
        let Ok(frame) = codec::encode(&spec) else {
            return Some(spec);
        };
        if self.stream.write_all(&frame).is_err() {
            return Some(spec);
        }
        self.busy = Some((spec, false));
        self.busy_since = Instant::now();
        self.idle_since = None;
        None
    }

    /// LO-3: a lease the raylet revoked is given back once it has been
    /// held for its [`TENURE`] or nothing waits for it; until then it runs
    /// what waits.
    fn settle(&mut self, now: Instant, waiting: bool) {
        if self.yield_at.is_some_and(|t| now >= t || !waiting) {
            self.yield_at = None;
            self.revoked = true;
        }
    }
}

impl Shape {
    /// Pushes queued tasks to idle, unrevoked leases.
    fn pump(&mut self) {
        for h in self
            .held
            .iter_mut()
            .filter(|h| h.busy.is_none() && !h.revoked)
        {
            let Some(spec) = self.queue.pop_front() else {
                return;
            };
            if let Some(back) = h.push(spec) {
                self.queue.push_front(back);
            }
        }
    }

    /// How many tasks may wait here (LO-2): [`WAIT_BUDGET`] of work per
    /// lease held (or asked for), by their recent run times, or any number
    /// of [`QUICK`] ones.
    fn room(&self) -> usize {
        // The last run time too: one slow task (a worker's first) does not
        // stop a burst of quick ones from waiting here.
        let took = match self.took_us.map(|(avg, last)| avg.min(last)) {
            Some(t) if t >= QUICK.as_secs_f64() * 1e6 => t,
            _ => return MAX_QUEUED,
        };
        let leases = self.held.iter().filter(|h| !h.revoked).count().max(1);
        let per_lease = (WAIT_BUDGET.as_secs_f64() * 1e6 / took.max(1.0)) as usize;
        (leases * per_lease.max(1)).min(MAX_QUEUED)
    }

    /// LO-2: what waits beyond [`Shape::room`] goes through the raylet, the
    /// newest first.
    fn spill_beyond_room(&mut self, spill: &mut Spill) {
        let room = self.room();
        if self.queue.len() > room {
            spill.extend(self.queue.drain(room..));
        }
    }

    /// Whether a lease of this shape is held and its tasks move (LO-2):
    /// one whose task has run less than [`STALLED`] (when it is revoked,
    /// another is asked for once that task ends), or one idle and not
    /// revoked.
    fn progressing(&self, now: Instant) -> bool {
        self.held.iter().any(|h| match h.busy {
            Some(_) => now - h.busy_since < STALLED,
            None => !h.revoked,
        })
    }

    /// LO-2: a request declined because a lease was held when it was
    /// asked for (the raylet declines a second one, L-7), when that lease
    /// has been given back since and tasks wait, is asked for once more,
    /// to wait its turn like anyone's: else they would all go through the
    /// raylet, whose queue then takes every owner's leases.
    fn asks_again_after_decline(&self) -> bool {
        self.asked_holding && self.held.is_empty() && !self.queue.is_empty()
    }

    /// Whether a lease is asked for, for less than [`ASK_WAIT`].
    fn asking_now(&self, now: Instant) -> bool {
        self.asking && self.asked_at.is_some_and(|t| now - t < ASK_WAIT)
    }

    /// LO-2: tasks wait here only while a lease of their shape is held and
    /// progressing, or one is asked for; otherwise what waits goes through
    /// the raylet.
    fn spill_if_unasked(&mut self, spill: &mut Spill) {
        let now = Instant::now();
        if !self.asking_now(now) && !self.progressing(now) {
            spill.extend(self.queue.drain(..));
        }
    }

    /// LO-2: once a lease is given back (revoked) or lost, what waits asks
    /// for another (which waits its turn at the raylet, L-7), or, if none
    /// can be asked for, goes through the raylet.
    fn after_return(
        &mut self,
        core: &Core,
        key: &str,
        asked: &mut HashMap<TaskId, String>,
        pending: &AtomicUsize,
        spill: &mut Spill,
    ) {
        if let Some(next) = self.queue.front().cloned() {
            if self.held.is_empty() {
                // The decline that kept it from asking was for a second
                // lease; with none held, it waits its turn like anyone.
                self.declined_until = None;
            }
            self.ask(core, &next, key, asked, pending);
        }
        self.spill_if_unasked(spill);
    }

    /// Whether nothing here needs the sweeper: no lease held, and no task
    /// waiting for one asked for.
    fn at_rest(&self) -> bool {
        self.held.is_empty() && (!self.asking || self.queue.is_empty())
    }

    /// Whether a lease for `like`'s shape is asked for (already, or now).
    fn ask(
        &mut self,
        core: &Core,
        like: &TaskSpec,
        key: &str,
        asked: &mut HashMap<TaskId, String>,
        pending: &AtomicUsize,
    ) -> bool {
        let now = Instant::now();
        let declined = self.declined_until.is_some_and(|t| t > now);
        if self.asking || declined || self.held.len() >= MAX_LEASES {
            return self.asking_now(now);
        }
        let request_id = TaskId::random();
        let mut shape = TaskSpec::new(request_id, like.job_id, "lease", "lease", TaskKind::Task);
        shape.resources = like.resources.clone();
        shape.strategy = like.strategy.clone();
        // Counted before it is sent: its answer may come at once.
        asked.insert(request_id, key.to_string());
        pending.fetch_add(1, Ordering::SeqCst);
        if core
            .send(&LocalRequest::Lease { request_id, shape })
            .is_err()
        {
            asked.remove(&request_id);
            pending.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        self.asking = true;
        self.asked_at = Some(now);
        self.asked_holding = !self.held.is_empty();
        true
    }
}

/// The shape of a task a lease may run, or `None` (through the raylet).
fn shape_of(spec: &TaskSpec) -> Option<String> {
    let plain = matches!(spec.kind, TaskKind::Task)
        && matches!(spec.strategy, WireStrategy::Hybrid)
        && !spec.spilled
        && spec.residency.is_none()
        && spec.resources.to_set().get(prism_scheduler::GPU).is_zero();
    plain.then(|| format!("{:?}", spec.resources))
}

impl Leases {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a task: to an idle leased worker, waiting here while a lease
    /// is asked for, or through the raylet (LO-2).
    pub(super) fn submit(&self, core: &Arc<Core>, mut spec: TaskSpec) -> super::error::Result<()> {
        let Some(key) = shape_of(&spec).filter(|_| core.direct.dir.is_some()) else {
            return core.send(&LocalRequest::Submit(spec));
        };
        spec.reply_to = core.direct.reply_to;
        let mut g = self.lock();
        let inner = &mut *g;
        let shape = inner.shapes.entry(key.clone()).or_default();
        if let Some(h) = shape
            .held
            .iter_mut()
            .find(|h| h.busy.is_none() && !h.revoked)
        {
            match h.push(spec) {
                None => return Ok(()),
                Some(back) => spec = back,
            }
        }
        // Behind the leases held while they move (LO-2): asking for one
        // more, the raylet willing.
        if shape.queue.len() < shape.room() && shape.progressing(Instant::now()) {
            shape.ask(core, &spec, &key, &mut inner.asked, &self.pending);
            shape.queue.push_back(spec);
            return Ok(());
        }
        let room = shape.held.is_empty() && shape.queue.len() < shape.room();
        if room && shape.ask(core, &spec, &key, &mut inner.asked, &self.pending) {
            shape.queue.push_back(spec);
            // Bounds the wait for the answer (LO-2).
            self.start_sweeper(core, inner);
            return Ok(());
        }
        drop(g);
        core.send(&LocalRequest::Submit(spec))
    }

    /// The raylet answered a lease request; `false` if `id` was not one.
    pub(super) fn answered(&self, core: &Arc<Core>, id: TaskId, outcome: &Outcome) -> bool {
        if self.pending.load(Ordering::SeqCst) == 0 {
            return false;
        }
        let Some(key) = self.lock().asked.remove(&id) else {
            return false;
        };
        self.pending.fetch_sub(1, Ordering::SeqCst);
        let worker = match outcome {
            Outcome::Inline(b) => {
                rkyv::from_bytes::<Option<u64>, rkyv::rancor::Error>(b).unwrap_or(None)
            }
            _ => None,
        };
        // LO-6: the worker's socket is opened off this thread (the open
        // waits for the worker's welcome), so the raylet's events go on.
        let Some(path) = worker.and_then(|w| core.direct.worker_socket(w)) else {
            if worker.is_some() {
                let _ = core.send(&LocalRequest::ReturnLease { lease: id });
            }
            self.opened(core, id, &key, None);
            return true;
        };
        self.lock().opening.insert(id, false);
        let (c, k) = (core.clone(), key.clone());
        let spawned = std::thread::Builder::new()
            .name("prism-lease".into())
            .spawn(move || {
                let opened = super::direct::open(&path).and_then(|(stream, _)| {
                    let reader = stream.try_clone().ok()?;
                    Some((stream, reader))
                });
                if opened.is_none() {
                    let _ = c.send(&LocalRequest::ReturnLease { lease: id });
                }
                if let Some(reader) = c.leases.opened(&c, id, &k, opened) {
                    read_outcomes(&c, &k, id, reader);
                }
            });
        if spawned.is_err() {
            let _ = core.send(&LocalRequest::ReturnLease { lease: id });
            self.opened(core, id, &key, None);
        }
        true
    }

    /// Granted lease `id`'s socket is open (its writer and reader), or
    /// could not be: held (its reader returned, to read its outcomes on),
    /// or its shape goes on as if it had been declined.
    fn opened(
        &self,
        core: &Arc<Core>,
        id: TaskId,
        key: &str,
        opened: Option<(UnixStream, UnixStream)>,
    ) -> Option<UnixStream> {
        let mut spill = Spill::new();
        let mut g = self.lock();
        let inner = &mut *g;
        let revoked = inner.opening.remove(&id).unwrap_or(false);
        let shape = inner.shapes.entry(key.to_string()).or_default();
        shape.asking = false;
        let now = Instant::now();
        let reader = match opened {
            Some((stream, reader)) => {
                let mut h = Held {
                    lease: id,
                    stream,
                    busy: None,
                    busy_since: now,
                    revoked: false,
                    // Revoked while it opened: kept for its tenure too
                    // while tasks wait (LO-3).
                    yield_at: revoked.then_some(now + TENURE),
                    granted: now,
                    idle_since: Some(now),
                };
                h.settle(now, !shape.queue.is_empty());
                let give = h.revoked;
                shape.held.push(h);
                if give {
                    give_back(core, shape, id);
                    shape.after_return(core, key, &mut inner.asked, &self.pending, &mut spill);
                    None
                } else {
                    shape.pump();
                    // More wait: ask for another lease for them.
                    if let Some(next) = shape.queue.front().cloned() {
                        if !shape.ask(core, &next, key, &mut inner.asked, &self.pending) {
                            shape.spill_if_unasked(&mut spill);
                        }
                    }
                    Some(reader)
                }
            }
            None => {
                let again = shape.asks_again_after_decline();
                let next = shape.queue.front().cloned().filter(|_| again);
                let asked = next.is_some_and(|next| {
                    shape.ask(core, &next, key, &mut inner.asked, &self.pending)
                });
                if !asked {
                    shape.declined_until = Some(now + DECLINED_FOR);
                }
                shape.spill_if_unasked(&mut spill);
                None
            }
        };
        self.start_sweeper(core, inner);
        // Sent before the lock goes: a cancel finds each task here or
        // after its submit on the raylet's connection (LO-5).
        send_all(core, spill);
        reader
    }

    /// How many tasks' outcomes came back on leases.
    pub(super) fn ran(&self) -> u64 {
        self.ran.load(Ordering::Relaxed)
    }

    /// How many leases this process holds.
    pub(super) fn held(&self) -> usize {
        self.lock().shapes.values().map(|s| s.held.len()).sum()
    }
}

/// A task of a shape whose moving average is `took_us` took `took` on a
/// lease.
fn observe(took_us: &mut Option<(f64, f64)>, took: Duration) {
    let us = took.as_secs_f64() * 1e6;
    let avg = took_us.map_or(us, |(avg, _)| 0.9 * avg + 0.1 * us);
    *took_us = Some((avg, us));
}

/// Returns `lease` to the raylet and forgets it (what waits for it is
/// the caller's: [`Shape::after_return`]).
fn give_back(core: &Core, shape: &mut Shape, lease: TaskId) {
    if let Some(i) = shape.held.iter().position(|h| h.lease == lease) {
        let h = shape.held.remove(i);
        let _ = h.stream.shutdown(std::net::Shutdown::Both);
        let _ = core.send(&LocalRequest::ReturnLease { lease });
    }
}

fn send_all(core: &Core, spill: Spill) {
    for spec in spill {
        if let Err(e) = core.send(&LocalRequest::Submit(spec)) {
            tracing::warn!("cannot send a task to the raylet: {e}");
        }
    }
}

#[path = "lease_outcomes.rs"]
mod outcomes;
use outcomes::read_outcomes;
#[path = "lease_ends.rs"]
mod ends;
#[path = "lease_listed.rs"]
mod listed;

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
