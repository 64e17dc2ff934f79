//! The job queue in the head core (JQ-1..4 of [`crate::head::job_queue`]):
//! a submitted job waits until its namespace's quota and the cluster's
//! capacity let it start; the core starts it ([`Effect::StartJob`]),
//! preempts spot-class jobs for higher-priority ones ([`Effect::SignalJob`],
//! after which the victim waits again), and answers `prism queue`.

use super::{bad, Caller, Clock, Effect, HeadCore};
use crate::head::job_queue::{Decision, Policy, QueuedJob};
use crate::ids::JobId;
use crate::proto::common::{NodeState, Resources};
use crate::proto::head::{HeadResponse, JobState, JobSubmission};
use crate::proto::queue::{NamespaceQuota, NamespaceUsage, QueueRequest, QueueView, QueuedRow};
use prism_scheduler::ResourceSet;
use std::time::Duration;
use tracing::info;

/// How long a preempted job's driver has to checkpoint and exit.
pub const PREEMPT_GRACE: Duration = Duration::from_secs(30);

/// What starts each queued or running submitted job (again), durable so
/// that a recovered head still runs the jobs that waited.
#[derive(Debug, Default)]
pub(crate) struct Submissions {
    map: std::collections::HashMap<JobId, JobSubmission>,
    dirty: std::collections::BTreeSet<JobId>,
}

impl Submissions {
    fn insert(&mut self, id: JobId, sub: JobSubmission) {
        self.map.insert(id, sub);
        self.dirty.insert(id);
    }

    fn get(&self, id: &JobId) -> Option<&JobSubmission> {
        self.map.get(id)
    }

    fn get_mut(&mut self, id: &JobId) -> Option<&mut JobSubmission> {
        self.dirty.insert(*id);
        self.map.get_mut(id)
    }

    fn remove(&mut self, id: &JobId) {
        if self.map.remove(id).is_some() {
            self.dirty.insert(*id);
        }
    }

    /// Rows changed since the last call: `(job, Some(submission))` to
    /// keep, `(job, None)` to delete.
    pub(crate) fn take_dirty(&mut self) -> Vec<(JobId, Option<JobSubmission>)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|id| (id, self.map.get(&id).cloned()))
            .collect()
    }
}

/// A policy as the pure queue reads it.
fn policy(q: &NamespaceQuota) -> Policy {
    Policy {
        quota: q.quota.to_set(),
        max_jobs: (q.max_jobs > 0).then_some(q.max_jobs),
        weight: q.weight.max(1),
    }
}

fn wire(namespace: &str, p: &Policy) -> NamespaceQuota {
    NamespaceQuota {
        namespace: namespace.into(),
        quota: Resources::from(&p.quota),
        max_jobs: p.max_jobs.unwrap_or(0),
        weight: p.weight.max(1),
    }
}

impl HeadCore {
    /// What every live node has in total (the queue's capacity).
    fn capacity(&self) -> ResourceSet {
        let mut total = ResourceSet::new();
        for n in self
            .nodes
            .nodes()
            .filter(|n| n.state != NodeState::Dead && n.drain.is_none())
        {
            total.add(&n.total);
        }
        total
    }

    /// A job whose declaration is over its namespace's quota could never
    /// start: refused at submission.
    pub(super) fn check_quota(&self, sub: &JobSubmission) -> Result<(), String> {
        let Some(p) = self.queue.policies().get(&sub.namespace) else {
            return Ok(());
        };
        match sub
            .demand
            .to_set()
            .iter()
            .find(|(name, q)| p.quota.iter().any(|(n, _)| n == *name) && *q > p.quota.get(name))
        {
            Some((name, q)) => Err(format!(
                "the job declares {q} {name} but namespace {}'s quota is {}; it could never start",
                sub.namespace,
                p.quota.get(name)
            )),
            None => Ok(()),
        }
    }

    /// A submitted job waits its turn.
    pub(super) fn enqueue_job(&mut self, now: Clock, id: JobId, sub: JobSubmission) {
        self.queue.enqueue(QueuedJob {
            job: id,
            namespace: sub.namespace.clone(),
            demand: sub.demand.to_set(),
            priority: sub.priority,
            spot: sub.spot,
            seq: 0,
        });
        self.submissions.insert(id, sub);
        self.admit_jobs(now);
    }

    /// Starts what may start now; preempts what must make room.
    pub(super) fn admit_jobs(&mut self, now: Clock) {
        let capacity = self.capacity();
        for d in self.queue.admit(&capacity) {
            match d {
                Decision::Start(job) => match self.submissions.get(&job) {
                    Some(sub) => {
                        let submission = sub.clone();
                        self.push(Effect::StartJob { job, submission });
                    }
                    None => drop(self.queue.forget(job)),
                },
                Decision::Preempt { job, by } => {
                    let pid = self.jobs.get(job).and_then(|j| j.pid);
                    info!(%job, %by, "preempting a spot-class job for a job of higher priority");
                    self.preempted.insert(job, by);
                    let (user, ns) = self
                        .jobs
                        .get(job)
                        .map(|j| (j.owner.clone(), j.namespace.clone()))
                        .unwrap_or_default();
                    let target = format!("job {job} (for job {by})");
                    self.audit_record(
                        now,
                        Caller::Client,
                        user,
                        "job.preempt",
                        target,
                        ns,
                        "ok".into(),
                    );
                    match pid {
                        Some(pid) => self.push(Effect::SignalJob {
                            job,
                            pid,
                            grace: PREEMPT_GRACE,
                        }),
                        None => drop(self.preempted_exit(now, job)),
                    }
                }
            }
        }
    }

    /// A preempted job's driver exited: it waits to run again. `false`:
    /// the job was not preempted (its exit ends it).
    pub(super) fn preempted_exit(&mut self, now: Clock, id: JobId) -> bool {
        let Some(by) = self.preempted.remove(&id) else {
            return false;
        };
        if let Some(q) = self.queue.running(id).cloned() {
            self.queue.requeue(q);
        }
        // Its next run knows it follows a preemption (trainers resume).
        if let Some(sub) = self.submissions.get_mut(&id) {
            let var = crate::raylet::workers::vars::PREEMPTED;
            sub.env.retain(|(k, _)| k != var);
            sub.env.push((var.into(), "1".into()));
        }
        self.jobs
            .requeued(id, format!("preempted for job {by}; waits to resume"));
        self.admit_jobs(now);
        true
    }

    /// A job ended: it no longer holds its namespace's quota.
    pub(super) fn queue_forget(&mut self, now: Clock, id: JobId) {
        self.preempted.remove(&id);
        self.submissions.remove(&id);
        self.queue.forget(id);
        self.admit_jobs(now);
    }

    /// After a recovery: running submitted jobs hold their quota again;
    /// jobs that waited wait again, in the order they were submitted (a
    /// waiting job whose submission was not kept is failed, saying so).
    pub(super) fn restore_queue(
        &mut self,
        now: Clock,
        quotas: Vec<NamespaceQuota>,
        submissions: Vec<(JobId, JobSubmission)>,
    ) {
        for q in quotas {
            self.queue.set_policy(&q.namespace, policy(&q));
        }
        for (id, sub) in submissions {
            self.submissions.map.insert(id, sub);
        }
        let mut live: Vec<_> = self
            .jobs
            .live()
            .into_iter()
            .filter(|j| j.submitted)
            .collect();
        live.sort_by_key(|j| j.start_ms);
        for j in live {
            let entry = QueuedJob {
                job: j.job_id,
                namespace: j.namespace.clone(),
                demand: j.demand.to_set(),
                priority: j.priority,
                spot: j.spot,
                seq: 0,
            };
            match (j.state, self.submissions.map.contains_key(&j.job_id)) {
                (JobState::Running, _) => self.queue.running_again(entry),
                (_, true) => self.queue.enqueue(entry),
                (_, false) => self.jobs.lost(
                    now.wall_ms,
                    j.job_id,
                    "it was waiting in the queue when the head restarted and its submission was not kept; submit it again".into(),
                ),
            }
        }
    }

    /// `prism queue`: what waits and why; setting a namespace's quota.
    pub fn queue_request(&mut self, now: Clock, caller: Caller, req: QueueRequest) -> HeadResponse {
        match req {
            QueueRequest::Show => HeadResponse::Queue(self.queue_view()),
            QueueRequest::SetAtRest { namespace, seal } => {
                if namespace.is_empty() || namespace.len() > 255 {
                    return bad(format!(
                        "sealing at rest needs a namespace of 1 to 255 bytes, not {namespace:?}"
                    ));
                }
                let target = format!(
                    "namespace {namespace} at rest: {}",
                    if seal { "sealed" } else { "plain" }
                );
                self.namespace_audit(now, caller, "namespace.at_rest", target, &namespace);
                self.set_at_rest(&namespace, seal);
                HeadResponse::Queue(self.queue_view())
            }
            QueueRequest::SetQuota(q) => {
                if q.namespace.is_empty() {
                    return bad("a quota needs a namespace".into());
                }
                let target = format!(
                    "namespace {} quota [{}] max_jobs {} weight {}",
                    q.namespace,
                    q.quota.to_set(),
                    q.max_jobs,
                    q.weight.max(1)
                );
                self.namespace_audit(now, caller, "quota.set", target, &q.namespace);
                self.queue.set_policy(&q.namespace, policy(&q));
                self.quota_changes.push(wire(&q.namespace, &policy(&q)));
                self.admit_jobs(now);
                HeadResponse::Queue(self.queue_view())
            }
        }
    }

    /// Records a change of a namespace's settings in the caller's name.
    fn namespace_audit(
        &mut self,
        now: Clock,
        caller: Caller,
        action: &str,
        target: String,
        namespace: &str,
    ) {
        let who = self
            .principal(caller)
            .ok()
            .flatten()
            .map_or("cluster".into(), |p| p.name);
        self.audit_record(
            now,
            caller,
            who,
            action,
            target,
            namespace.into(),
            "ok".into(),
        );
    }

    fn queue_view(&self) -> QueueView {
        let capacity = self.capacity();
        let waiting: Vec<QueuedRow> = self
            .queue
            .explain(&capacity)
            .into_iter()
            .map(|(q, position, reason)| QueuedRow {
                job_id: q.job,
                owner: self
                    .jobs
                    .get(q.job)
                    .map(|j| j.owner.clone())
                    .unwrap_or_default(),
                namespace: q.namespace,
                priority: q.priority,
                spot: q.spot,
                demand: Resources::from(&q.demand),
                position: position as u32,
                reason,
            })
            .collect();
        let mut names: std::collections::BTreeSet<String> =
            self.queue.policies().keys().cloned().collect();
        names.extend(
            self.jobs
                .live()
                .into_iter()
                .filter(|j| j.submitted)
                .map(|j| j.namespace),
        );
        let namespaces = names
            .into_iter()
            .map(|ns| {
                let (used, running) = self.queue.usage(&ns);
                let policy = self.queue.policies().get(&ns).cloned().unwrap_or_default();
                NamespaceUsage {
                    policy: wire(&ns, &policy),
                    used: Resources::from(&used),
                    running,
                    waiting: waiting.iter().filter(|w| w.namespace == ns).count() as u32,
                }
            })
            .collect();
        QueueView {
            waiting,
            namespaces,
            sealed: self.sealed_namespaces(),
        }
    }
}
