//! The job queue as a pure state machine: submitted jobs declare what they
//! need (CPUs, GPUs, memory, custom), namespaces have quotas and weights,
//! and [`JobQueue::admit`] decides which waiting jobs start now and which
//! low-priority spot-class jobs make room — given the cluster's capacity,
//! with no clock and no sockets (Kueue's admission, Slurm's fair share).
//!
//! Invariants:
//!
//! - **JQ-1** a namespace's running jobs never hold more than its quota of
//!   any resource, nor run more than its `max_jobs`;
//! - **JQ-2** admitted jobs never hold more than the cluster's capacity;
//! - **JQ-3** the next job is the waiting one of highest priority, then of
//!   the namespace with the lowest weighted share (running jobs' dominant
//!   resource share, then their count, over the weight), then the oldest;
//!   a job that cannot start lets smaller ones behind it start (backfill);
//! - **JQ-4** a job that does not fit the cluster may preempt running
//!   spot-class jobs of lower priority, fewest first, and only when that
//!   makes it fit; it then waits for them to go before it starts.

use crate::ids::JobId;
use prism_scheduler::{Quantity, ResourceSet};
use std::collections::{BTreeMap, HashMap};

/// A namespace's limits and share.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    /// At most this much of each named resource (others: unlimited).
    pub quota: ResourceSet,
    /// At most this many running jobs.
    pub max_jobs: Option<u32>,
    /// Its weight in fair sharing (0 reads as 1).
    pub weight: u32,
}

/// A job as the queue sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedJob {
    /// The job.
    pub job: JobId,
    /// Its namespace.
    pub namespace: String,
    /// What it declared.
    pub demand: ResourceSet,
    /// Higher first.
    pub priority: i32,
    /// May be preempted by a higher-priority job.
    pub spot: bool,
    /// Submission order.
    pub seq: u64,
}

/// What [`JobQueue::admit`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start this job now.
    Start(JobId),
    /// Stop this spot-class job to make room (it waits again afterwards).
    Preempt {
        /// The victim.
        job: JobId,
        /// For whom.
        by: JobId,
    },
}

/// The queue: waiting jobs, running jobs, namespaces' policies.
#[derive(Debug, Default)]
pub struct JobQueue {
    policies: BTreeMap<String, Policy>,
    waiting: Vec<QueuedJob>,
    running: HashMap<JobId, QueuedJob>,
    /// Victims asked to stop, and who waits for them.
    preempting: HashMap<JobId, JobId>,
    next_seq: u64,
}

fn weight(p: Option<&Policy>) -> f64 {
    f64::from(p.map_or(1, |p| p.weight.max(1)))
}

impl JobQueue {
    /// Sets a namespace's policy.
    pub fn set_policy(&mut self, namespace: &str, policy: Policy) {
        self.policies.insert(namespace.to_string(), policy);
    }

    /// Every namespace's policy.
    pub fn policies(&self) -> &BTreeMap<String, Policy> {
        &self.policies
    }

    /// A job waits (its `seq` is assigned here).
    pub fn enqueue(&mut self, mut job: QueuedJob) {
        job.seq = self.next_seq;
        self.next_seq += 1;
        self.waiting.push(job);
    }

    /// A job that ran before (recovered, or preempted) waits again, ahead
    /// of jobs submitted after it.
    pub fn requeue(&mut self, job: QueuedJob) {
        self.running.remove(&job.job);
        self.preempting.remove(&job.job);
        self.next_seq = self.next_seq.max(job.seq + 1);
        self.waiting.push(job);
    }

    /// A running job counts against its namespace (after a recovery).
    pub fn running_again(&mut self, job: QueuedJob) {
        self.next_seq = self.next_seq.max(job.seq + 1);
        self.running.insert(job.job, job);
    }

    /// A job ended (or was removed while waiting).
    pub fn forget(&mut self, job: JobId) -> Option<QueuedJob> {
        self.preempting.remove(&job);
        self.waiting.retain(|w| w.job != job);
        self.running.remove(&job)
    }

    /// Whether `job` waits.
    pub fn is_waiting(&self, job: JobId) -> bool {
        self.waiting.iter().any(|w| w.job == job)
    }

    /// A running job's entry.
    pub fn running(&self, job: JobId) -> Option<&QueuedJob> {
        self.running.get(&job)
    }

    /// What a namespace's running jobs hold, and how many there are.
    pub fn usage(&self, namespace: &str) -> (ResourceSet, u32) {
        let mut used = ResourceSet::new();
        let mut n = 0;
        for r in self.running.values().filter(|r| r.namespace == namespace) {
            used.add(&r.demand);
            n += 1;
        }
        (used, n)
    }

    /// What running jobs leave of `capacity` (nothing when they hold more,
    /// as after nodes left).
    fn free(&self, capacity: &ResourceSet) -> ResourceSet {
        let held = self.held();
        if !held.fits_in(capacity) {
            return ResourceSet::new();
        }
        let mut free = capacity.clone();
        free.subtract(&held);
        free
    }

    fn held(&self) -> ResourceSet {
        let mut used = ResourceSet::new();
        for r in self.running.values() {
            used.add(&r.demand);
        }
        used
    }

    /// JQ-3's share of a namespace: dominant resource share, then job count,
    /// each over the weight.
    fn share(&self, namespace: &str, capacity: &ResourceSet) -> (f64, f64) {
        let (used, n) = self.usage(namespace);
        let dominant = used
            .iter()
            .map(|(name, q)| {
                let cap = capacity.get(name);
                if cap.is_zero() {
                    0.0
                } else {
                    q.as_f64() / cap.as_f64()
                }
            })
            .fold(0.0, f64::max);
        let w = weight(self.policies.get(namespace));
        (dominant / w, f64::from(n) / w)
    }

    /// JQ-1: why `job` may not start in its namespace now.
    fn over_quota(&self, job: &QueuedJob) -> Option<String> {
        let policy = self.policies.get(&job.namespace)?;
        let (mut used, n) = self.usage(&job.namespace);
        if policy.max_jobs.is_some_and(|m| n >= m) {
            return Some(format!(
                "namespace {} runs its maximum of {n} jobs",
                job.namespace
            ));
        }
        used.add(&job.demand);
        for (name, q) in job.demand.iter() {
            let limit = policy.quota.get(name);
            let limited = policy.quota.iter().any(|(n, _)| n == name);
            if limited && used.get(name) > limit {
                let before = Quantity::from_raw(used.get(name).raw() - q.raw());
                return Some(format!(
                    "namespace {} is at its {name} quota ({before} of {limit} in use, the job needs {q})",
                    job.namespace
                ));
            }
        }
        None
    }

    /// The waiting jobs in the order JQ-3 considers them.
    fn ranked(&self, capacity: &ResourceSet) -> Vec<QueuedJob> {
        self.order(capacity)
            .into_iter()
            .map(|i| self.waiting[i].clone())
            .collect()
    }

    /// Indices into `waiting` in JQ-3's order: each namespace's share is
    /// worked out once, then one sort on precomputed keys.
    fn order(&self, capacity: &ResourceSet) -> Vec<usize> {
        let mut shares: HashMap<&str, (f64, f64)> = HashMap::new();
        for j in &self.waiting {
            if !shares.contains_key(j.namespace.as_str()) {
                shares.insert(&j.namespace, self.share(&j.namespace, capacity));
            }
        }
        let mut keys: Vec<(i32, (f64, f64), u64, usize)> = self
            .waiting
            .iter()
            .enumerate()
            .map(|(i, j)| (-j.priority, shares[j.namespace.as_str()], j.seq, i))
            .collect();
        keys.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal))
                .then(a.2.cmp(&b.2))
        });
        keys.into_iter().map(|k| k.3).collect()
    }

    /// Decides what starts now (JQ-1..4) on a cluster with `capacity`.
    /// Started jobs move to running; preempted ones stay running until
    /// [`JobQueue::forget`] or [`JobQueue::requeue`] says they went.
    pub fn admit(&mut self, capacity: &ResourceSet) -> Vec<Decision> {
        let mut out = Vec::new();
        loop {
            let free = self.free(capacity);
            let lowest_spot = self
                .running
                .values()
                .filter(|r| r.spot && !self.preempting.contains_key(&r.job))
                .map(|r| r.priority)
                .min();
            let mut started = None;
            let mut victims: Vec<(JobId, JobId)> = Vec::new();
            for i in self.order(capacity) {
                let job = &self.waiting[i];
                if self.preempting.values().any(|by| *by == job.job)
                    || self.over_quota(job).is_some()
                {
                    continue;
                }
                if job.demand.fits_in(&free) {
                    started = Some(job.clone());
                    break;
                }
                if lowest_spot.is_some_and(|p| p < job.priority) {
                    if let Some(v) = self.victims(job, &free, &victims) {
                        victims.extend(v.into_iter().map(|v| (v, job.job)));
                    }
                }
            }
            for (v, by) in victims {
                self.preempting.insert(v, by);
                out.push(Decision::Preempt { job: v, by });
            }
            let Some(job) = started else { return out };
            self.waiting.retain(|w| w.job != job.job);
            out.push(Decision::Start(job.job));
            self.running.insert(job.job, job);
        }
    }

    /// JQ-4: the fewest lower-priority spot jobs whose going makes `job`
    /// fit (largest first), if any.
    fn victims(
        &self,
        job: &QueuedJob,
        free: &ResourceSet,
        chosen_now: &[(JobId, JobId)],
    ) -> Option<Vec<JobId>> {
        if self.preempting.values().any(|by| *by == job.job) {
            return None;
        }
        let mut spot: Vec<&QueuedJob> = self
            .running
            .values()
            .filter(|r| {
                r.spot
                    && r.priority < job.priority
                    && !self.preempting.contains_key(&r.job)
                    && !chosen_now.iter().any(|(v, _)| *v == r.job)
            })
            .collect();
        spot.sort_by(|a, b| {
            let size = |j: &QueuedJob| j.demand.iter().map(|(_, q)| q.raw()).sum::<i64>();
            size(b).cmp(&size(a)).then(b.seq.cmp(&a.seq))
        });
        let mut room = free.clone();
        let mut chosen = Vec::new();
        for v in spot {
            if job.demand.fits_in(&room) {
                break;
            }
            room.add(&v.demand);
            chosen.push(v.job);
        }
        (job.demand.fits_in(&room) && !chosen.is_empty()).then_some(chosen)
    }

    /// Each waiting job with its position (from 1) and why it waits.
    pub fn explain(&self, capacity: &ResourceSet) -> Vec<(QueuedJob, usize, String)> {
        let free = self.free(capacity);
        self.ranked(capacity)
            .into_iter()
            .enumerate()
            .map(|(i, job)| {
                let why = if let Some(v) = self.preempting.iter().find(|(_, by)| **by == job.job) {
                    format!("waiting for preempted job {} to stop", v.0)
                } else if let Some(q) = self.over_quota(&job) {
                    q
                } else if let Some((name, asked, have)) = job.demand.first_shortfall(&free) {
                    format!("the cluster has {have} {name} free; the job needs {asked}")
                } else {
                    "next to start".to_string()
                };
                (job, i + 1, why)
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "job_queue_tests.rs"]
mod tests;
