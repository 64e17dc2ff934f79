//! The head's job table as a pure state machine (time passed in as
//! milliseconds). Invariants:
//!
//! - **JT-1** a job ends once: the first of exit, stop or disconnect wins,
//!   and an ended job never runs again;
//! - **JT-2** a stop request on a running job ends it as `Stopped`, whatever
//!   exit status the killed driver reports afterwards.

use crate::ids::JobId;
use crate::proto::head::{JobInfo, JobState};
use std::collections::BTreeMap;

/// Who a job belongs to and what it asked of the queue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobMeta {
    /// Who started it.
    pub owner: String,
    /// Its namespace.
    pub namespace: String,
    /// What it declared.
    pub demand: crate::proto::common::Resources,
    /// Its priority.
    pub priority: i32,
    /// Whether it may be preempted.
    pub spot: bool,
}

impl JobMeta {
    /// A job of `owner` in `namespace` that declared nothing.
    pub fn of(owner: &str, namespace: &str) -> JobMeta {
        JobMeta {
            owner: owner.into(),
            namespace: namespace.into(),
            ..JobMeta::default()
        }
    }
}

/// Every job the head has seen.
#[derive(Debug, Default)]
pub struct JobTable {
    jobs: BTreeMap<JobId, JobInfo>,
    stopping: Vec<JobId>,
    /// Jobs whose durable row changed.
    dirty: std::collections::BTreeSet<JobId>,
    /// Ended jobs by end time, so that a status delta finds the recent
    /// ones without a look at every job the head has seen.
    ended: std::collections::BTreeSet<(u64, JobId)>,
}

impl JobTable {
    /// A new job: `submitted` ones start `Pending`, registered drivers `Running`.
    pub fn add(
        &mut self,
        now_ms: u64,
        id: JobId,
        entrypoint: String,
        submitted: bool,
        pid: Option<u32>,
        meta: JobMeta,
    ) {
        self.dirty.insert(id);
        if let Some(end) = self.jobs.get(&id).and_then(|j| j.end_ms) {
            self.ended.remove(&(end, id));
        }
        self.jobs.insert(
            id,
            JobInfo {
                job_id: id,
                entrypoint,
                state: if submitted {
                    JobState::Pending
                } else {
                    JobState::Running
                },
                submitted,
                pid,
                exit_code: None,
                message: None,
                start_ms: now_ms,
                end_ms: None,
                owner: meta.owner,
                namespace: meta.namespace,
                demand: meta.demand,
                priority: meta.priority,
                spot: meta.spot,
            },
        );
    }

    /// The driver process started.
    pub fn started(&mut self, id: JobId, pid: u32) {
        if let Some(j) = self.jobs.get_mut(&id) {
            if j.state == JobState::Pending {
                j.state = JobState::Running;
                j.pid = Some(pid);
                self.dirty.insert(id);
            }
        }
    }

    fn end(
        &mut self,
        now_ms: u64,
        id: JobId,
        state: JobState,
        code: Option<i32>,
        msg: Option<String>,
    ) {
        let stopping = self.stopping.contains(&id);
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        if !matches!(j.state, JobState::Pending | JobState::Running) {
            return; // JT-1
        }
        j.state = if stopping { JobState::Stopped } else { state }; // JT-2
        j.exit_code = code;
        j.message = if stopping {
            Some("stopped by request".into())
        } else {
            msg
        };
        j.end_ms = Some(now_ms);
        self.ended.insert((now_ms, id));
        self.dirty.insert(id);
        self.stopping.retain(|s| *s != id);
    }

    /// The driver exited with `code` (`None`: killed by `signal`).
    pub fn exited(&mut self, now_ms: u64, id: JobId, code: Option<i32>, detail: String) {
        let state = if code == Some(0) {
            JobState::Succeeded
        } else {
            JobState::Failed
        };
        let msg = (code != Some(0)).then_some(detail);
        self.end(now_ms, id, state, code, msg);
    }

    /// The driver could not be started.
    pub fn start_failed(&mut self, now_ms: u64, id: JobId, why: String) {
        self.end(now_ms, id, JobState::Failed, None, Some(why));
    }

    /// A registered driver's connection closed.
    pub fn disconnected(&mut self, now_ms: u64, id: JobId) {
        self.end(now_ms, id, JobState::Succeeded, None, None);
    }

    /// A driver that never came back (its outcome is unknown).
    pub fn lost(&mut self, now_ms: u64, id: JobId, why: String) {
        self.end(now_ms, id, JobState::Failed, None, Some(why));
    }

    /// A preempted job's driver went: it waits again (it has not ended).
    pub fn requeued(&mut self, id: JobId, why: String) {
        if let Some(j) = self.jobs.get_mut(&id) {
            if j.state == JobState::Running {
                j.state = JobState::Pending;
                j.pid = None;
                j.message = Some(why);
                self.dirty.insert(id);
            }
        }
    }

    /// A stop was asked; returns the pid to signal if it runs.
    pub fn stop(&mut self, now_ms: u64, id: JobId) -> Result<Option<u32>, String> {
        let j = self.jobs.get(&id).ok_or_else(|| format!("no job {id}"))?;
        match j.state {
            JobState::Running => {
                let pid = j.pid;
                if !j.submitted {
                    return Err(format!(
                        "job {id} was not submitted through the head; stop its driver where it runs (pid {})",
                        pid.unwrap_or(0)
                    ));
                }
                if !self.stopping.contains(&id) {
                    self.stopping.push(id);
                }
                Ok(pid)
            }
            JobState::Pending => {
                self.stopping.push(id);
                self.end(now_ms, id, JobState::Stopped, None, None);
                Ok(None)
            }
            other => Err(format!("job {id} already ended ({other:?})")),
        }
    }

    /// A table recovered from durable rows.
    pub fn restore(rows: Vec<JobInfo>) -> JobTable {
        let ended = rows
            .iter()
            .filter_map(|j| j.end_ms.map(|e| (e, j.job_id)))
            .collect();
        JobTable {
            jobs: rows.into_iter().map(|j| (j.job_id, j)).collect(),
            ended,
            ..JobTable::default()
        }
    }

    /// Jobs still running (or pending), for the shell to watch after a
    /// recovery.
    pub fn live(&self) -> Vec<JobInfo> {
        self.jobs
            .values()
            .filter(|j| matches!(j.state, JobState::Pending | JobState::Running))
            .cloned()
            .collect()
    }

    /// Jobs whose durable row changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<JobId> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// One job.
    pub fn get(&self, id: JobId) -> Option<&JobInfo> {
        self.jobs.get(&id)
    }

    /// Jobs that ended at or after `since_ms`, oldest end first (a range
    /// of the end-time index: the rest are not looked at).
    pub fn ended_since(&self, since_ms: u64) -> Vec<JobId> {
        self.ended
            .range((since_ms, JobId([0; 16]))..)
            .map(|(_, id)| *id)
            .collect()
    }

    /// Each job's namespace.
    pub fn namespaces(&self) -> impl Iterator<Item = (JobId, String)> + '_ {
        self.jobs.values().map(|j| (j.job_id, j.namespace.clone()))
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Vec<JobInfo> {
        let mut v: Vec<JobInfo> = self.jobs.values().cloned().collect();
        v.sort_by_key(|j| j.start_ms);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jt1_a_job_ends_once() {
        let mut t = JobTable::default();
        let id = JobId::random();
        t.add(
            0,
            id,
            "job".into(),
            true,
            None,
            JobMeta::of("admin", "default"),
        );
        t.started(id, 42);
        t.exited(10, id, Some(0), "exit code 0".into());
        t.exited(20, id, Some(1), "exit code 1".into());
        t.started(id, 43);
        let j = t.get(id).unwrap();
        assert_eq!(
            (j.state, j.exit_code, j.end_ms, j.pid),
            (JobState::Succeeded, Some(0), Some(10), Some(42))
        );
        assert!(t.stop(30, id).is_err());
    }

    #[test]
    fn jt2_stop_wins_over_the_killed_exit_status() {
        let mut t = JobTable::default();
        let id = JobId::random();
        t.add(
            0,
            id,
            "job".into(),
            true,
            None,
            JobMeta::of("admin", "default"),
        );
        t.started(id, 7);
        assert_eq!(t.stop(5, id), Ok(Some(7)));
        t.exited(6, id, None, "signal 15".into());
        assert_eq!(t.get(id).unwrap().state, JobState::Stopped);
    }

    #[test]
    fn failures_and_registered_drivers() {
        let mut t = JobTable::default();
        let (a, b) = (JobId::random(), JobId::random());
        t.add(
            0,
            a,
            "a".into(),
            true,
            None,
            JobMeta::of("admin", "default"),
        );
        t.start_failed(1, a, "no such binary".into());
        assert_eq!(t.get(a).unwrap().state, JobState::Failed);
        t.add(
            2,
            b,
            "b".into(),
            false,
            Some(9),
            JobMeta::of("admin", "default"),
        );
        assert_eq!(t.get(b).unwrap().state, JobState::Running);
        t.disconnected(3, b);
        assert_eq!(t.get(b).unwrap().state, JobState::Succeeded);
        assert_eq!(t.list().len(), 2);
    }

    #[test]
    fn ended_since_is_the_jobs_ended_in_the_window_by_end_time() {
        let mut t = JobTable::default();
        let ids: Vec<JobId> = (0..6).map(|_| JobId::random()).collect();
        for (i, id) in ids.iter().enumerate() {
            let meta = JobMeta::of("admin", "default");
            t.add(i as u64, *id, "j".into(), false, Some(1), meta);
        }
        // Ended at 50, 40, 30 and 20; two still run.
        for (i, id) in ids[..4].iter().enumerate() {
            t.disconnected(50 - 10 * i as u64, *id);
        }
        assert_eq!(t.ended_since(30), vec![ids[2], ids[1], ids[0]]);
        assert_eq!(t.ended_since(51), Vec::<JobId>::new());
        // A recovered table has the same index.
        let again = JobTable::restore(t.list());
        assert_eq!(again.ended_since(0), t.ended_since(0));
        assert_eq!(again.ended_since(0).len(), 4);
    }
}
