//! JQ-1..4 of the job queue, without a head.

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
