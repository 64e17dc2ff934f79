//! Worker processes' lives, as the raylet's shell sees them: spawned for
//! the dispatcher's `Start`, given a deadline to say hello, reported dead
//! with their cause when they exit, and killed — also while still being
//! spawned (a kill then waits for the pid).

use super::dispatch::WorkerId;
use super::service::TaskService;
use super::task_history::now_us;
use super::workers;
use crate::ids::{JobId, NodeId};
use crate::proto::task::Failure;
use std::sync::Arc;
use tracing::{debug, warn};

impl TaskService {
    /// Starts worker `worker` of `job` under node id `node` (the one the
    /// dispatcher started it for, which it reports as its own).
    pub(super) fn start_worker(
        self: &Arc<Self>,
        worker: WorkerId,
        job: JobId,
        gpus: Vec<u32>,
        node: NodeId,
    ) {
        self.spawning.insert(worker, false);
        let me = self.clone();
        tokio::spawn(async move {
            let spec = me.jobs.get(&job).map(|j| j.clone());
            let local = me.local_jobs.contains_key(&job);
            let started = match spec {
                None => Err(format!("job {job} is not known on this node")),
                Some(spec) => {
                    match workers::resolve_binary(&me.env, &me.store, &spec, local).await {
                        Ok(bin) => workers::spawn(&me.env, node, &bin, &spec, worker, &gpus)
                            .map(|child| (child, bin)),
                        Err(e) => Err(e),
                    }
                }
            };
            let (mut child, binary) = match started {
                Ok(c) => c,
                Err(detail) => {
                    warn!(worker, %job, "cannot start worker: {detail}");
                    me.spawning.remove(&worker);
                    // A pid a hello recorded meanwhile was not this
                    // worker's (it never ran): nothing is recorded after
                    // this, as a hello records only while the spawn is open.
                    me.pids.remove(&worker);
                    me.act(|d| d.worker_died(worker, Failure::WorkerStartFailed { detail }));
                    return;
                }
            };
            let pid = child.id().unwrap_or(0);
            me.pids.insert(worker, pid);
            // Killed while it was being spawned: now it can be.
            if let Some((_, true)) = me.spawning.remove(&worker) {
                workers::kill(pid);
            }
            me.capture_output(worker, job, &mut child);
            // A worker must say hello in time; one that never does (a hung
            // or wrong binary) is killed, and its task fails saying why.
            let limit = me.env.hello_timeout;
            let hello = async {
                tokio::time::sleep(limit).await;
                if me.worker_conns.contains_key(&worker) {
                    return std::future::pending().await;
                }
                workers::kill(pid);
                true
            };
            let (status, silent) = tokio::select! {
                status = child.wait() => (status, false),
                silent = hello => (child.wait().await, silent),
            };
            me.pids.remove(&worker);
            me.last_task.remove(&worker);
            // Worker numbers are never reused: its lease socket goes.
            me.remove_direct_socket(&crate::proto::direct::lease_socket_name(worker));

            let failure = if silent {
                let detail = format!(
                    "the worker process {} (pid {pid}) did not connect to its raylet within {} ms and was killed (PRISM_WORKER_START_TIMEOUT_MS)",
                    binary.display(),
                    limit.as_millis()
                );
                warn!(worker, %job, "{detail}");
                Failure::WorkerStartFailed { detail }
            } else {
                let detail = workers::describe_exit(status);
                debug!(worker, %detail, "worker exited");
                let cause = format!("its worker (pid {pid}) exited: {detail}");
                me.lock_history().worker_exited(pid, &cause, now_us());
                Failure::WorkerDied {
                    node: me.node(),
                    detail,
                }
            };
            me.act(|d| d.worker_died(worker, failure));
        });
    }

    /// Kills a worker's process; one being spawned is killed as soon as
    /// it has a pid (its spawner records the pid before it takes its
    /// entry out of `spawning`, so one of the two sees the kill).
    pub(super) fn kill_worker(&self, worker: WorkerId) {
        if let Some(mut killed) = self.spawning.get_mut(&worker) {
            *killed = true;
            return;
        }
        if let Some(pid) = self.pids.get(&worker).map(|p| *p) {
            workers::kill(pid);
        }
    }

    /// Kills every worker (raylet shutdown).
    pub fn kill_all(&self) {
        // Those being spawned go as soon as they have a pid.
        for mut killed in self.spawning.iter_mut() {
            *killed = true;
        }
        for p in self.pids.iter() {
            workers::kill(*p.value());
        }
    }
}
