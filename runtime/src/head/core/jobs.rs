//! Jobs in the head core: the job table's transitions and what a job's end
//! means for the cluster (its placement groups go, JT-1/JT-2 in
//! [`crate::head::job_table`]). Starting and signalling driver processes is
//! the shell's, asked for through [`Effect::StartJob`] and
//! [`Effect::SignalJob`].

use super::{bad, Clock, Effect, HeadCore};
use crate::head::job_table::JobMeta;
use crate::ids::JobId;
use crate::proto::head::{HeadResponse, JobInfo, JobSubmission};
use std::time::Duration;
use tracing::info;

impl HeadCore {
    /// A job submitted through the head under the fresh id `id`: recorded
    /// pending, and its driver started by the shell.
    /// It belongs to `caller` (the gate let it through) in the namespace
    /// it names, or the caller's first; the submission is audited.
    pub fn submit_job(
        &mut self,
        now: Clock,
        caller: super::Caller,
        id: JobId,
        mut submission: JobSubmission,
    ) -> HeadResponse {
        let who = match self.principal(caller) {
            Ok(Some(p)) => p,
            Ok(None) => crate::head::access::Principal::cluster_admin(),
            Err(message) => return super::bad(message),
        };
        if submission.namespace.is_empty() {
            submission.namespace = who.home_namespace();
        }
        if let Err(message) = self.check_quota(&submission) {
            return super::bad(message);
        }
        let meta = JobMeta {
            owner: who.name.clone(),
            namespace: submission.namespace.clone(),
            demand: submission.demand.clone(),
            priority: submission.priority,
            spot: submission.spot,
        };
        let entrypoint = std::iter::once(submission.name.clone())
            .chain(submission.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        let target = format!("job {id} ({entrypoint})");
        self.jobs.add(now.wall_ms, id, entrypoint, true, None, meta);
        let ns = submission.namespace.clone();
        self.audit_record(now, caller, who.name, "job.submit", target, ns, "ok".into());
        self.enqueue_job(now, id, submission);
        HeadResponse::JobSubmitted { job_id: id }
    }

    /// The job's driver process runs as `pid`.
    pub fn job_started(&mut self, id: JobId, pid: u32) {
        info!(job = %id, pid, "job started");
        self.jobs.started(id, pid);
    }

    /// The job's driver could not be started.
    pub fn job_start_failed(&mut self, now: Clock, id: JobId, why: String) {
        self.jobs.start_failed(now.wall_ms, id, why);
        self.job_ended(now, id);
    }

    /// The job's driver exited (`code` is `None` when a signal killed it).
    pub fn job_exited(&mut self, now: Clock, id: JobId, code: Option<i32>, detail: String) {
        if self.preempted_exit(now, id) {
            return;
        }
        info!(job = %id, %detail, "job ended");
        self.jobs.exited(now.wall_ms, id, code, detail);
        self.job_ended(now, id);
    }

    /// A driver's connection to the head closed: its job has ended.
    pub fn driver_gone(&mut self, now: Clock, id: JobId) {
        info!(job = %id, "driver disconnected; job ended");
        self.jobs.disconnected(now.wall_ms, id);
        self.job_ended(now, id);
    }

    /// A driver announces its job (or, after the head restarted, announces
    /// it again: the row stays as it was).
    pub(super) fn register_driver(
        &mut self,
        now: Clock,
        caller: super::Caller,
        id: JobId,
        entrypoint: String,
        pid: u32,
    ) -> HeadResponse {
        let who = self.principal(caller).ok().flatten();
        // A driver announces its own job, not someone else's (its link
        // closing would end that job).
        if let (Some(p), Some(job)) = (&who, self.jobs.get(id)) {
            if job.owner != p.name && !matches!(caller, super::Caller::Client) {
                return HeadResponse::Error {
                    kind: crate::proto::head::ErrorKind::Forbidden,
                    message: format!(
                        "{} may not announce job {id}: it is {}'s",
                        p.name, job.owner
                    ),
                };
            }
        }
        self.awaiting_drivers.remove(&id);
        let running = self
            .jobs
            .get(id)
            .is_some_and(|j| j.state == crate::proto::head::JobState::Running);
        if !running {
            let meta = who.map_or_else(
                || JobMeta::of("admin", "default"),
                |p| JobMeta::of(&p.name, &p.home_namespace()),
            );
            self.jobs
                .add(now.wall_ms, id, entrypoint, false, Some(pid), meta);
        }
        HeadResponse::Ok
    }

    /// After a recovery, the drivers of running jobs have `within` to
    /// reconnect; a job whose driver does not is ended.
    pub(super) fn await_drivers(&mut self, now: Clock, within: Duration) {
        for j in self.jobs.live().into_iter().filter(|j| !j.submitted) {
            self.awaiting_drivers.insert(j.job_id, now.at + within);
        }
    }

    pub(super) fn drivers_tick(&mut self, now: Clock) {
        let gone: Vec<JobId> = self
            .awaiting_drivers
            .iter()
            .filter(|(_, by)| now.at >= **by)
            .map(|(j, _)| *j)
            .collect();
        for id in gone {
            self.awaiting_drivers.remove(&id);
            info!(job = %id, "its driver did not reconnect after the head restarted; job ended");
            self.jobs.lost(
                now.wall_ms,
                id,
                "its driver did not reconnect after the head restarted (it may have ended while the head was away)".into(),
            );
            self.job_ended(now, id);
        }
    }

    /// A job's row.
    pub fn job(&self, id: JobId) -> Option<&JobInfo> {
        self.jobs.get(id)
    }

    pub(super) fn stop_job(&mut self, now: Clock, id: JobId, grace: Duration) -> HeadResponse {
        match self.jobs.stop(now.wall_ms, id) {
            Ok(pid) => {
                match pid {
                    Some(pid) => self.push(Effect::SignalJob {
                        job: id,
                        pid,
                        grace,
                    }),
                    // A job stopped while it waited has ended.
                    None => self.job_ended(now, id),
                }
                HeadResponse::Ok
            }
            Err(message) => bad(message),
        }
    }

    /// What outlives no job: its placement groups (not detached).
    pub(super) fn job_ended(&mut self, now: Clock, id: JobId) {
        self.queue_forget(now, id);
        self.forget_pins(id);
        for pg in self.groups.owned_by(id) {
            let _ = self.remove_group(now, pg, &format!("its job {id} ended"));
        }
    }
}
