//! The raylet's door for local clients: drivers and workers on this
//! machine connect to its Unix socket (`tasks.sock`), say hello as one or
//! the other, then submit tasks, report outcomes and ask for actors and
//! placement groups. Each connection is an [`Owner::Local`]; when it
//! closes, its work is dropped (a driver's job ends, a worker is killed).

use super::dispatch::{Owner, WorkerId};
use super::service::TaskService;
use super::workers;
use crate::ids::JobId;
use crate::proto::head::{HeadRequest, RelayedRequest};
use crate::proto::task::{LocalEvent, LocalRequest, MAX_TASK_FRAME};
use crate::proto::PROTOCOL_VERSION;
use crate::transport::rpc::read_msg;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tracing::{info, warn};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Unknown,
    Driver(JobId),
    Worker(WorkerId),
}

/// A relayed request of a process of `job` (the head judges it as that
/// job's owner).
fn relayed(job: Option<JobId>, request: RelayedRequest) -> HeadRequest {
    HeadRequest::Relayed { job, request }
}

impl TaskService {
    /// Answers specs a process handed back that are not its to hand back.
    fn refuse_specs(
        self: &Arc<Self>,
        owner: Owner,
        specs: Vec<crate::proto::task::TaskSpec>,
        why: &str,
    ) {
        let refused = specs.into_iter().map(|t| super::dispatch::Action::Reply {
            owner,
            task_id: t.task_id,
            outcome: crate::proto::task::Outcome::Failed(crate::proto::task::Failure::BadCall {
                detail: why.to_string(),
            }),
        });
        self.apply(refused.collect());
    }

    /// The job of a connection: the raylet's record of it (a worker's, or
    /// what a driver announced in its hello), never a request's word.
    fn conn_job(&self, role: Role) -> Option<JobId> {
        match role {
            Role::Driver(job) => Some(job),
            Role::Worker(w) => self.disp().job_of(w),
            Role::Unknown => None,
        }
    }

    async fn serve_conn(self: Arc<Self>, stream: UnixStream) {
        let conn = self.next_id();
        let owner = Owner::Local(conn);
        let peer = stream
            .peer_cred()
            .ok()
            .and_then(|c| c.pid())
            .and_then(|p| u32::try_from(p).ok());
        let (r, w) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        self.conns.insert(conn, tx);
        let writer = tokio::spawn(async move {
            let mut w = BufWriter::new(w);
            while let Some(frame) = rx.recv().await {
                if w.write_all(&frame).await.is_err() {
                    return;
                }
                while let Ok(more) = rx.try_recv() {
                    if w.write_all(&more).await.is_err() {
                        return;
                    }
                }
                if w.flush().await.is_err() {
                    return;
                }
            }
        });
        let mut r = BufReader::with_capacity(256 << 10, r);
        let mut role = Role::Unknown;
        loop {
            let msg = match read_msg::<LocalRequest, _>(&mut r, MAX_TASK_FRAME).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    warn!(conn, "dropping local task connection: {e}");
                    break;
                }
            };
            // A driver's process is known before its welcome goes: its
            // first object may be created right after.
            let hello = match (&role, &msg, peer) {
                (Role::Unknown, LocalRequest::HelloDriver { job, .. }, Some(pid)) => {
                    self.driver_pids.insert(pid, job.job_id);
                    Some((pid, job.job_id))
                }
                // A worker can say hello before its spawner recorded its
                // pid: its first task would be listed without one. Held
                // while its spawn is open, so its exit cannot come first.
                (Role::Unknown, LocalRequest::HelloWorker { worker_id, .. }, Some(pid)) => {
                    if let Some(_open) = self.spawning.get(worker_id) {
                        self.pids.entry(*worker_id).or_insert(pid);
                    }
                    None
                }
                _ => None,
            };
            let msg = match (role, msg) {
                (Role::Worker(w), LocalRequest::TaskEvents(batch)) => {
                    self.task_events(w, peer, batch);
                    continue;
                }
                (_, msg) => msg,
            };
            if let Some(next) = self.handle(owner, role, msg) {
                role = next;
            }
            if let (Some((pid, job)), Role::Unknown) = (hello, role) {
                self.driver_pids.remove_if(&pid, |_, j| *j == job);
            }
        }
        if let (Role::Driver(job), Some(pid)) = (role, peer) {
            self.driver_pids.remove_if(&pid, |_, j| *j == job);
        }
        self.conns.remove(&conn);
        self.release_borrows_of(conn);
        self.release_held_of(conn);
        self.lock_history().owner_gone(conn);
        writer.abort();
        let gone = match role {
            Role::Driver(job) => {
                info!(%job, "driver disconnected; stopping its workers");
                Some(Some(job))
            }
            Role::Worker(w) => {
                self.worker_conns.remove(&w);
                if let Some(pid) = self.pids.get(&w).map(|p| *p) {
                    workers::kill(pid);
                }
                Some(None)
            }
            Role::Unknown => None,
        };
        if let Some(job) = gone {
            self.act(|d| d.owner_gone(Some(owner), job));
        }
    }

    /// Handles one request; returns the connection's new role after a hello.
    fn handle(self: &Arc<Self>, owner: Owner, role: Role, msg: LocalRequest) -> Option<Role> {
        let welcome = || LocalEvent::Welcome {
            node_id: self.node(),
            store_socket: self.env.store_socket.display().to_string(),
            at_rest_key: self.store.at_rest_key(),
            conn: match owner {
                Owner::Local(conn) => conn,
                _ => 0,
            },
        };
        let refuse = |message: String| {
            self.send(owner, &LocalEvent::Refused { message });
        };
        match (role, msg) {
            (Role::Unknown, LocalRequest::HelloDriver { version, mut job }) => {
                if version != PROTOCOL_VERSION {
                    refuse(format!(
                        "protocol version {version}, this raylet speaks {PROTOCOL_VERSION}"
                    ));
                    return None;
                }
                let id = job.job_id;
                job.driver_node = Some(self.node());
                if let Owner::Local(conn) = owner {
                    self.local_jobs.insert(id, conn);
                }
                self.jobs.insert(id, job.clone());
                if job.binary_hash == [0; 32] {
                    self.send(owner, &welcome());
                } else {
                    // A cluster job: put its binary in the store first, so
                    // peers (and this node, if the file goes away) can run it.
                    let me = self.clone();
                    let ready = welcome();
                    tokio::spawn(async move {
                        if let Err(e) = workers::publish_binary(&me.store, &job).await {
                            warn!(job = %job.job_id, "cannot publish the job binary: {e}");
                        }
                        me.send(owner, &ready);
                    });
                }
                Some(Role::Driver(id))
            }
            (Role::Unknown, LocalRequest::HelloWorker { version, worker_id }) => {
                if version != PROTOCOL_VERSION {
                    refuse(format!(
                        "protocol version {version}, this raylet speaks {PROTOCOL_VERSION}"
                    ));
                    return None;
                }
                if let Owner::Local(conn) = owner {
                    self.worker_conns.insert(worker_id, conn);
                }
                self.send(owner, &welcome());
                self.act(|d| d.worker_ready(worker_id));
                Some(Role::Worker(worker_id))
            }
            (Role::Unknown, other) => {
                refuse(format!("expected a hello first, got {other:?}"));
                None
            }
            (_, LocalRequest::Submit(spec)) if spec.function == super::dispatch::KILL_METHOD => {
                // A kill is asked for with `KillActor`, which the head judges.
                let why = format!(
                    "{} is reserved: an actor is killed with prism::kill",
                    super::dispatch::KILL_METHOD
                );
                self.refuse_specs(owner, vec![spec], &why);
                None
            }
            (_, LocalRequest::Submit(spec)) if spec.function == super::dispatch::LEASE_METHOD => {
                // A queued lease request is known by this name (L-7).
                let why = format!(
                    "{} is reserved: a worker is leased with a lease request",
                    super::dispatch::LEASE_METHOD
                );
                self.refuse_specs(owner, vec![spec], &why);
                None
            }
            (_, LocalRequest::Submit(mut spec)) => {
                if let Owner::Local(conn) = owner {
                    spec.reply_to = Some(crate::proto::task::ReplyTo {
                        node: self.node(),
                        conn,
                    });
                }
                if matches!(spec.kind, crate::proto::task::TaskKind::CreateActor(_)) {
                    self.create_actor(spec, owner);
                } else {
                    self.submit(spec, owner);
                }
                None
            }
            (
                Role::Worker(_) | Role::Driver(_),
                LocalRequest::KillActor {
                    request_id,
                    actor_id,
                    no_restart,
                },
            ) => {
                let job = self.conn_job(role);
                self.kill_if_allowed(owner, request_id, job, (actor_id, no_restart));
                None
            }
            (
                _,
                LocalRequest::LookupActor {
                    request_id,
                    name,
                    namespace,
                },
            ) => {
                let job = self.conn_job(role);
                self.lookup_actor(owner, request_id, job, (namespace, name));
                None
            }
            (
                _,
                LocalRequest::PlacementGroup {
                    request_id,
                    request,
                },
            ) => {
                let job = self.conn_job(role);
                self.relay_head_request(
                    owner,
                    request_id,
                    relayed(job, RelayedRequest::PlacementGroup(request)),
                    "placement-group",
                );
                None
            }
            (
                Role::Worker(_) | Role::Driver(_),
                LocalRequest::Models {
                    request_id,
                    request,
                },
            ) => {
                let job = self.conn_job(role);
                self.relay_head_request(
                    owner,
                    request_id,
                    relayed(job, RelayedRequest::Models(request)),
                    "model registry",
                );
                None
            }
            (
                Role::Worker(_) | Role::Driver(_),
                LocalRequest::Residency {
                    request_id,
                    object,
                    rule,
                },
            ) => {
                // Granted or refused here; the head hears of it in the
                // next batch of copies (RC-1).
                let answer = match self.transfer.claim(object, rule) {
                    Ok(()) => crate::proto::head::HeadResponse::Ok,
                    Err(message) => crate::proto::head::HeadResponse::Error {
                        kind: crate::proto::head::ErrorKind::Forbidden,
                        message,
                    },
                };
                self.reply_now(owner, request_id, &answer);
                None
            }
            (Role::Worker(_) | Role::Driver(_), LocalRequest::Cluster { request_id, query }) => {
                let request = match query {
                    crate::proto::task::ClusterQuery::Status => RelayedRequest::Status,
                    crate::proto::task::ClusterQuery::Runs => RelayedRequest::Runs,
                };
                let job = self.conn_job(role);
                self.relay_head_request(owner, request_id, relayed(job, request), "cluster state");
                None
            }
            (
                Role::Worker(_) | Role::Driver(_),
                LocalRequest::NamespaceKey {
                    request_id,
                    usage,
                    namespace,
                },
            ) => {
                // The job is the raylet's record of the connection (a
                // worker's, or what a driver announced in its hello), not
                // a field of the request; see the security guide's trust
                // model.
                let job = self.conn_job(role);
                let request = crate::proto::head::HeadRequest::NamespaceKey {
                    job,
                    usage,
                    namespace,
                };
                self.relay_head_request(owner, request_id, request, "namespace key");
                None
            }
            (Role::Worker(_) | Role::Driver(_), LocalRequest::Free(objects)) => {
                self.free_objects(objects);
                None
            }
            (
                Role::Worker(_) | Role::Driver(_),
                LocalRequest::Borrows {
                    request_id,
                    to,
                    objects,
                    release,
                },
            ) => {
                self.route_borrows(owner, request_id, to, objects, release);
                None
            }
            (Role::Worker(_) | Role::Driver(_), LocalRequest::ReleaseHeld { to, results }) => {
                if let Owner::Local(conn) = owner {
                    self.owner_released_held(conn, to, results);
                }
                None
            }
            (Role::Worker(_) | Role::Driver(_), LocalRequest::HeldFor { owner: to, results }) => {
                if let Owner::Local(conn) = owner {
                    self.note_held(conn, to, results);
                }
                None
            }
            (_, LocalRequest::Cancel { task_id, force }) => {
                self.act(|d| d.cancel(task_id, force));
                None
            }
            (Role::Worker(w), LocalRequest::Done { task_id, outcome }) => {
                self.act(|d| d.task_done(w, task_id, outcome));
                None
            }
            (Role::Worker(_) | Role::Driver(_), LocalRequest::DirectLost(mut lost)) => {
                // Only this job's own calls to that actor count as lost
                // (DD-1 ends the worker for them); the rest are refused.
                let job = self.conn_job(role);
                let actor = lost.actor_id;
                let (calls, odd): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut lost.calls).into_iter().partition(|t| {
                        matches!(&t.kind, crate::proto::task::TaskKind::ActorCall(c) if c.actor_id == actor)
                            && t.function != super::dispatch::KILL_METHOD
                            && Some(t.job_id) == job
                    });
                lost.calls = calls;
                self.refuse_specs(
                    owner,
                    odd,
                    "only this job's calls to that actor are lost calls",
                );
                self.act(|d| d.direct_calls_lost(lost, owner));
                None
            }
            (Role::Worker(_) | Role::Driver(_), LocalRequest::Lease { request_id, shape }) => {
                let mut shape = shape;
                // Only its own job's workers: the job is the raylet's
                // record of the connection, not the request's word.
                let job = self.conn_job(role);
                shape.job_id = job.unwrap_or_else(JobId::random);
                shape.task_id = request_id;
                shape.function = super::dispatch::LEASE_METHOD.into();
                shape.name = "lease".into();
                self.act(|d| d.lease(shape, owner));
                None
            }
            (Role::Worker(_) | Role::Driver(_), LocalRequest::ReturnLease { lease }) => {
                self.act(|d| d.return_lease(lease, owner));
                None
            }
            (Role::Worker(_) | Role::Driver(_), LocalRequest::LeaseLost { lease, tasks }) => {
                // Only plain tasks ride a lease: anything else (an actor's
                // creation, a call, the reserved kill) is refused, not run
                // on the process's word.
                let (tasks, odd): (Vec<_>, Vec<_>) = tasks.into_iter().partition(|t| {
                    matches!(t.kind, crate::proto::task::TaskKind::Task)
                        && t.function != super::dispatch::KILL_METHOD
                        && t.function != super::dispatch::LEASE_METHOD
                });
                self.refuse_specs(owner, odd, "only plain tasks ride a lease");
                self.act(|d| d.lease_lost(lease, tasks, owner));
                None
            }
            (Role::Worker(_) | Role::Driver(_), LocalRequest::OwnerWaiting(list)) => {
                if let Owner::Local(conn) = owner {
                    // The job first: the dispatcher's lock is not taken
                    // under the history's.
                    let job = self.conn_job(role);
                    let mut history = self.lock_history();
                    match job {
                        Some(job) => {
                            let now = super::task_history::now_us();
                            history.owner_waiting(conn, job, list.tasks, now);
                        }
                        // No job to list them under (its worker gone):
                        // nothing it listed before stays.
                        None => history.owner_gone(conn),
                    }
                }
                None
            }
            (Role::Worker(w), LocalRequest::Blocked) => {
                self.act(|d| d.worker_blocked(w, true));
                None
            }
            (Role::Worker(w), LocalRequest::Unblocked) => {
                self.act(|d| d.worker_blocked(w, false));
                None
            }
            (Role::Worker(_) | Role::Driver(_), LocalRequest::ReportRun(mut report)) => {
                // A run is reported as the connection's job, whatever the
                // report says (the head judges that job's owner).
                let job = self.conn_job(role);
                if let Some(job) = job {
                    report.job_id = job;
                }
                let me = self.clone();
                tokio::spawn(async move {
                    let req = crate::proto::head::HeadRequest::ReportRun(report);
                    if let Err(e) = me.transfer.head_request(&req).await {
                        tracing::debug!("cannot report a training run to the head: {e}");
                    }
                });
                None
            }
            (Role::Worker(_) | Role::Driver(_), LocalRequest::ReportServe(mut report)) => {
                // As the connection's job, which the head judges; a process
                // whose job this raylet no longer knows reports nothing.
                report.job_id = self.conn_job(role)?;
                report.actor_id = match role {
                    Role::Worker(w) => self.disp().actor_of(w),
                    _ => None,
                };
                let me = self.clone();
                tokio::spawn(async move {
                    let req = crate::proto::head::HeadRequest::ReportServe(report);
                    match me.transfer.head_request(&req).await {
                        Ok(crate::proto::head::HeadResponse::Error { message, .. }) => {
                            tracing::debug!("the head refused a serving report: {message}")
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!("cannot report serving to the head: {e}"),
                    }
                });
                None
            }
            (Role::Worker(_) | Role::Driver(_), LocalRequest::Metrics(updates)) => {
                // Kept as the connection's job: AC-4 shows a user their
                // jobs' metrics only.
                let job = self.conn_job(role);
                let mut table = self.user_metrics.lock().unwrap_or_else(|p| p.into_inner());
                table.apply(job, &updates);
                None
            }
            (_, other) => {
                warn!(?owner, "ignoring {other:?} from {role:?}");
                None
            }
        }
    }
}

/// Binds the task socket.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

/// Accepts local task connections until the listener is dropped.
pub async fn serve(listener: UnixListener, service: Arc<TaskService>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(service.clone().serve_conn(stream));
            }
            Err(e) => {
                warn!("task socket accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Where the task socket lives in a session directory.
pub fn socket_path(session_dir: &Path) -> PathBuf {
    session_dir.join("tasks.sock")
}
