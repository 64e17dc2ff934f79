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
            let mut free = capacity.clone();
            let held = self.held();
            if !held.fits_in(&free) {
                free = ResourceSet::new();
            } else {
                free.subtract(&held);
            }
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
        let mut free = capacity.clone();
        let held = self.held();
        if held.fits_in(&free) {
            free.subtract(&held);
        } else {
            free = ResourceSet::new();
        }
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
mod tests {
    use super::*;
    use prism_scheduler::{CPU, GPU};

    fn gpus(n: u32) -> ResourceSet {
        ResourceSet::new().with(GPU, Quantity::whole(n))
    }

    fn job(ns: &str, demand: ResourceSet, priority: i32, spot: bool) -> QueuedJob {
        QueuedJob {
            job: JobId::random(),
            namespace: ns.into(),
            demand,
            priority,
            spot,
            seq: 0,
        }
    }

    fn started(d: &[Decision]) -> Vec<JobId> {
        d.iter()
            .filter_map(|d| match d {
                Decision::Start(j) => Some(*j),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn jq_1_a_third_gpu_job_waits_for_the_namespace_quota_and_starts_when_one_ends() {
        let mut q = JobQueue::default();
        q.set_policy(
            "vision",
            Policy {
                quota: gpus(2),
                max_jobs: None,
                weight: 1,
            },
        );
        let jobs: Vec<QueuedJob> = (0..3).map(|_| job("vision", gpus(1), 0, false)).collect();
        for j in &jobs {
            q.enqueue(j.clone());
        }
        let cap = gpus(8);
        assert_eq!(started(&q.admit(&cap)), vec![jobs[0].job, jobs[1].job]);
        let why = q.explain(&cap);
        assert_eq!(why.len(), 1);
        assert_eq!((why[0].0.job, why[0].1), (jobs[2].job, 1));
        assert_eq!(
            why[0].2,
            "namespace vision is at its GPU quota (2 of 2 in use, the job needs 1)"
        );
        q.forget(jobs[0].job);
        assert_eq!(started(&q.admit(&cap)), vec![jobs[2].job]);
        // max_jobs counts running jobs whatever they hold.
        q.set_policy(
            "ads",
            Policy {
                quota: ResourceSet::new(),
                max_jobs: Some(1),
                weight: 1,
            },
        );
        let (a, b) = (
            job("ads", ResourceSet::new(), 0, false),
            job("ads", ResourceSet::new(), 0, false),
        );
        q.enqueue(a.clone());
        q.enqueue(b.clone());
        assert_eq!(started(&q.admit(&cap)), vec![a.job]);
        assert_eq!(
            q.explain(&cap)[0].2,
            "namespace ads runs its maximum of 1 jobs"
        );
    }

    #[test]
    fn jq_2_jobs_wait_for_cluster_capacity_and_small_ones_backfill() {
        let mut q = JobQueue::default();
        let cap = ResourceSet::new().with(CPU, Quantity::whole(4));
        let big = job(
            "a",
            ResourceSet::new().with(CPU, Quantity::whole(3)),
            0,
            false,
        );
        let bigger = job(
            "a",
            ResourceSet::new().with(CPU, Quantity::whole(4)),
            0,
            false,
        );
        let small = job(
            "a",
            ResourceSet::new().with(CPU, Quantity::whole(1)),
            0,
            false,
        );
        for j in [&big, &bigger, &small] {
            q.enqueue(j.clone());
        }
        assert_eq!(started(&q.admit(&cap)), vec![big.job, small.job]);
        let why = q.explain(&cap);
        assert_eq!(why[0].2, "the cluster has 0 CPU free; the job needs 4");
    }

    #[test]
    fn jq_3_fair_share_over_40_jobs_follows_the_weights() {
        // Two namespaces, weights 3:1, 20 one-CPU jobs each, 4 CPUs: while
        // both wait, starts split 3:1 within 10%.
        let mut q = JobQueue::default();
        q.set_policy(
            "a",
            Policy {
                quota: ResourceSet::new(),
                max_jobs: None,
                weight: 3,
            },
        );
        q.set_policy(
            "b",
            Policy {
                quota: ResourceSet::new(),
                max_jobs: None,
                weight: 1,
            },
        );
        let one = ResourceSet::new().with(CPU, Quantity::whole(1));
        let mut ns_of = HashMap::new();
        for i in 0..40 {
            let ns = if i % 2 == 0 { "a" } else { "b" };
            let j = job(ns, one.clone(), 0, false);
            ns_of.insert(j.job, ns);
            q.enqueue(j);
        }
        let cap = ResourceSet::new().with(CPU, Quantity::whole(4));
        let mut running: std::collections::VecDeque<JobId> = Default::default();
        let (mut a, mut b) = (0u32, 0u32);
        loop {
            let both_wait = q.waiting.iter().any(|w| w.namespace == "a")
                && q.waiting.iter().any(|w| w.namespace == "b");
            let now = started(&q.admit(&cap));
            if both_wait {
                for j in &now {
                    if ns_of[j] == "a" {
                        a += 1
                    } else {
                        b += 1
                    }
                }
            }
            running.extend(now);
            // Jobs are equally long: the oldest running ends next.
            match running.pop_front() {
                Some(j) => drop(q.forget(j)),
                None => break,
            }
        }
        assert!(q.waiting.is_empty());
        let ratio = f64::from(a) / f64::from(a + b);
        assert!(
            (ratio - 0.75).abs() <= 0.075,
            "a {a}, b {b}: share {ratio:.3} not within 10% of 0.75"
        );
    }

    #[test]
    fn jq_3_priority_comes_first() {
        let mut q = JobQueue::default();
        let one = ResourceSet::new().with(CPU, Quantity::whole(1));
        let low = job("a", one.clone(), 0, false);
        let high = job("b", one.clone(), 5, false);
        q.enqueue(low.clone());
        q.enqueue(high.clone());
        assert_eq!(started(&q.admit(&one)), vec![high.job]);
    }

    #[test]
    fn jq_4_a_high_priority_job_preempts_the_fewest_spot_jobs_and_waits_for_them() {
        let mut q = JobQueue::default();
        let cap = gpus(4);
        let spot_big = job("a", gpus(2), 0, true);
        let spot_small = job("a", gpus(1), 0, true);
        let steady = job("a", gpus(1), 0, false);
        for j in [&spot_big, &spot_small, &steady] {
            q.enqueue(j.clone());
        }
        assert_eq!(started(&q.admit(&cap)).len(), 3);
        let urgent = job("b", gpus(2), 10, false);
        q.enqueue(urgent.clone());
        let d = q.admit(&cap);
        assert_eq!(
            d,
            vec![Decision::Preempt {
                job: spot_big.job,
                by: urgent.job
            }]
        );
        // Nothing more until the victim is gone; then the urgent job starts.
        assert!(q.admit(&cap).is_empty());
        assert!(q.explain(&cap)[0]
            .2
            .starts_with("waiting for preempted job"));
        q.requeue(spot_big.clone());
        assert_eq!(started(&q.admit(&cap)), vec![urgent.job]);
        // The preempted job waits to resume; non-spot jobs are never victims.
        assert!(q.is_waiting(spot_big.job));
        let urgent2 = job("b", gpus(2), 10, false);
        q.enqueue(urgent2);
        assert!(started(&q.admit(&cap)).is_empty());
    }
}
