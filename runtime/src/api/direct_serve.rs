//! The worker's side of direct calls ([`crate::proto::direct`]): an actor's
//! worker, once its constructor has run, listens on `<session>/a/<actor
//! id>`, and every task worker on `<session>/a/w-<worker number>` for the
//! owners it is leased to (`lease.rs`). What is read there joins the same
//! queue as the raylet's work, in the order each connection sent it, and
//! its outcomes go back on the connection it came on.

use super::core::Core;
use super::direct_events::{Events, Open};
use crate::ids::{ActorId, TaskId};
use crate::proto::codec;
use crate::proto::direct::DirectEvent;
use crate::proto::task::{Outcome, TaskKind, TaskSpec, MAX_TASK_FRAME};
use dashmap::DashMap;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

/// Where the actor's calls queue (shared with the raylet's reader).
pub(crate) type TaskTx = Sender<(TaskSpec, Vec<u32>)>;

/// A worker's direct-call routes.
#[derive(Debug, Default)]
pub(crate) struct Serve {
    /// `None` once the raylet is gone (the worker then ends).
    tasks: Mutex<Option<TaskTx>>,
    /// Calls that came on a direct connection, and that connection.
    replies: DashMap<TaskId, (Arc<Mutex<UnixStream>>, Open)>,
    /// What ended, for the raylet's task listing.
    pub(super) events: Events,
    /// This worker hosts an actor: it takes no leased tasks.
    hosts_actor: std::sync::atomic::AtomicBool,
}

impl Serve {
    /// This worker now hosts an actor: its lease socket takes nothing more.
    pub(super) fn hosting_actor(&self) {
        self.hosts_actor
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Direct calls join `tx`'s queue.
    pub(super) fn set_tasks(&self, tx: TaskTx) {
        *self.tasks.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    /// The raylet is gone: no more calls are queued.
    pub(super) fn close(&self) {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Sends `outcome` back on the connection `task_id` came on; gives it
    /// back if the call came from the raylet. A caller that has gone away
    /// misses its answer, as it would through the raylet.
    pub(super) fn reply(&self, task_id: TaskId, outcome: Outcome) -> Result<(), Outcome> {
        let Some((_, (conn, open))) = self.replies.remove(&task_id) else {
            return Err(outcome);
        };
        let ran_us = self.events.ended(open, &outcome);
        let event = DirectEvent::Finished {
            task_id,
            outcome,
            ran_us,
        };
        if let Ok(frame) = codec::encode(&event) {
            let mut s = conn.lock().unwrap_or_else(|p| p.into_inner());
            let _ = s.write_all(&frame);
        }
        Ok(())
    }

    /// `task_id` starts now (listed running if it came directly).
    pub(super) fn started(&self, task_id: TaskId) {
        if let Some(mut r) = self.replies.get_mut(&task_id) {
            r.1.start();
        }
    }

    /// Visits every call taken directly and not yet answered.
    pub(super) fn each_open(&self, mut f: impl FnMut(&mut Open)) {
        for mut r in self.replies.iter_mut() {
            f(&mut r.1);
        }
    }
}

impl Core {
    /// Starts taking direct calls for `actor` (incarnation `restarts`).
    /// If the socket cannot be made, every call keeps coming through the
    /// raylet, which is only slower.
    pub(crate) fn serve_direct(self: &Arc<Self>, actor: ActorId, restarts: u32) {
        if let Some(path) = self.direct.socket(actor) {
            self.listen(path, restarts, Accept::Actor(actor));
        }
    }

    /// Starts taking tasks pushed by the owners this worker is leased to
    /// (`lease.rs`) on `listener`, bound by [`bind_lease_socket`] before
    /// the worker said hello: the raylet may lease it from then on.
    pub(crate) fn serve_leases(self: &Arc<Self>, listener: UnixListener) {
        self.accept_on(listener, 0, Accept::Job(self.job_id));
    }

    fn listen(self: &Arc<Self>, path: PathBuf, restarts: u32, accept: Accept) {
        if let Some(listener) = bind(&path, &accept) {
            self.accept_on(listener, restarts, accept);
        }
    }

    fn accept_on(self: &Arc<Self>, listener: UnixListener, restarts: u32, accept: Accept) {
        self.direct.serve.events.start_flushing(self);
        let core = self.clone();
        let _ = std::thread::Builder::new()
            .name("prism-direct-accept".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let core = core.clone();
                    let _ = std::thread::Builder::new()
                        .name("prism-direct".into())
                        .spawn(move || serve_conn(&core, accept, restarts, stream));
                }
            });
    }
}

/// Binds the socket the owners that lease task worker `worker` push to
/// (`<session>/a/w-<n>`, beside the raylet's `raylet_socket`), before the
/// worker says hello to its raylet. `None` if direct calls are off or it
/// cannot be made: a lease of this worker then cannot connect and is
/// returned, and its owner's tasks go through the raylet.
pub(crate) fn bind_lease_socket(raylet_socket: &Path, worker: u64) -> Option<UnixListener> {
    let config = crate::config::Config::from_env().ok();
    if !config.is_none_or(|c| c.direct_calls) {
        return None;
    }
    let path = raylet_socket
        .parent()?
        .join("a")
        .join(crate::proto::direct::lease_socket_name(worker));
    bind(&path, &worker)
}

fn bind(path: &Path, what: &dyn std::fmt::Display) -> Option<UnixListener> {
    let bound = (|| {
        if let Some(dir) = path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        // An earlier incarnation's socket, if any.
        let _ = std::fs::remove_file(path);
        UnixListener::bind(path)
    })();
    bound
        .map_err(|e| tracing::debug!(%what, "no direct calls ({}): {e}", path.display()))
        .ok()
}

/// One caller's connection: welcome it, then queue its calls in order.
/// What a socket takes: calls to its actor, or its job's tasks.
#[derive(Debug, Clone, Copy)]
enum Accept {
    Actor(ActorId),
    Job(crate::ids::JobId),
}

impl std::fmt::Display for Accept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Accept::Actor(a) => write!(f, "actor {a}"),
            Accept::Job(j) => write!(f, "leased worker of job {j}"),
        }
    }
}

impl Accept {
    fn takes(&self, spec: &TaskSpec) -> bool {
        match (self, &spec.kind) {
            (Accept::Actor(a), TaskKind::ActorCall(c)) => c.actor_id == *a,
            (Accept::Job(j), TaskKind::Task) => spec.job_id == *j,
            _ => false,
        }
    }
}

fn serve_conn(core: &Arc<Core>, accept: Accept, restarts: u32, mut stream: UnixStream) {
    let welcome = DirectEvent::Welcome { restarts };
    let Ok(frame) = codec::encode(&welcome) else {
        return;
    };
    if stream.write_all(&frame).is_err() {
        return;
    }
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let writer = Arc::new(Mutex::new(writer));
    let mut r = std::io::BufReader::with_capacity(64 << 10, stream);
    loop {
        let spec = match codec::read_frame::<TaskSpec>(&mut r, MAX_TASK_FRAME) {
            Ok(Some(spec)) => spec,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(%accept, "dropping a direct caller: {e}");
                return;
            }
        };
        let hosting = core
            .direct
            .serve
            .hosts_actor
            .load(std::sync::atomic::Ordering::SeqCst);
        if !accept.takes(&spec) || (hosting && matches!(accept, Accept::Job(_))) {
            tracing::warn!(%accept, task = %spec.name, "dropping a direct caller: it sent work this socket does not take");
            return;
        }
        core.direct
            .serve
            .replies
            .insert(spec.task_id, (writer.clone(), Open::arrived(&spec)));
        let tasks = core
            .direct
            .serve
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let queued = match tasks.as_ref() {
            Some(tx) => tx.send((spec, Vec::new())).is_ok(),
            None => false,
        };
        if !queued {
            return;
        }
    }
}
