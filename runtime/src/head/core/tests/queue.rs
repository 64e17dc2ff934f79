//! JQ-1..4 through the core: quotas set by the admin, submitted jobs
//! started by effects as the queue admits them, a spot-class job signalled
//! for an urgent one and queued again when its driver exits.

use super::*;
use crate::proto::head::JobState;
use crate::proto::queue::{NamespaceQuota, QueueRequest};
use prism_scheduler::GPU;

fn gpu_node(sim: &mut Sim, gpus: u32) {
    let mut r = reg("gpu-node", 8);
    r.resources = Resources::from(&cpus(8).with(GPU, Quantity::whole(gpus)));
    let id = NodeId::random();
    sim.core
        .register(sim.now, id, r, Caller::Node { cert: [7; 32] });
}

fn submit(sim: &mut Sim, ns: &str, gpus: u32, priority: i32, spot: bool) -> JobId {
    let sub = JobSubmission {
        hash: [1; 32],
        name: "train".into(),
        args: vec![],
        env: vec![],
        namespace: ns.into(),
        demand: Resources::from(&ResourceSet::new().with(GPU, Quantity::whole(gpus))),
        priority,
        spot,
    };
    let id = JobId::random();
    assert_eq!(
        sim.core.submit_job(sim.now, Caller::Client, id, sub),
        HeadResponse::JobSubmitted { job_id: id }
    );
    id
}

/// Jobs the core asked to start since the last call (and marks them started).
fn starts(sim: &mut Sim) -> Vec<JobId> {
    let mut out = Vec::new();
    while let Some(e) = sim.core.poll_effect() {
        if let Effect::StartJob { job, .. } = e {
            sim.core.job_started(job, 1000 + out.len() as u32);
            out.push(job);
        }
    }
    out
}

#[test]
fn jq_a_third_gpu_job_waits_for_its_namespace_quota_and_starts_when_one_ends() {
    let mut sim = Sim::new();
    gpu_node(&mut sim, 8);
    let quota = NamespaceQuota {
        namespace: "vision".into(),
        quota: Resources::from(&ResourceSet::new().with(GPU, Quantity::whole(2))),
        max_jobs: 0,
        weight: 1,
    };
    sim.core
        .queue_request(sim.now, Caller::Client, QueueRequest::SetQuota(quota));
    let jobs: Vec<JobId> = (0..3)
        .map(|_| submit(&mut sim, "vision", 1, 0, false))
        .collect();
    assert_eq!(starts(&mut sim), jobs[..2].to_vec());
    let HeadResponse::Queue(view) =
        sim.core
            .queue_request(sim.now, Caller::Client, QueueRequest::Show)
    else {
        panic!()
    };
    assert_eq!(view.waiting.len(), 1);
    assert_eq!(view.waiting[0].job_id, jobs[2]);
    assert!(
        view.waiting[0]
            .reason
            .contains("at its GPU quota (2 of 2 in use"),
        "{}",
        view.waiting[0].reason
    );
    assert_eq!(
        (view.namespaces[0].running, view.namespaces[0].waiting),
        (2, 1)
    );
    // A job declaring more than the quota could never start: refused.
    let sub = JobSubmission {
        hash: [1; 32],
        name: "huge".into(),
        args: vec![],
        env: vec![],
        namespace: "vision".into(),
        demand: Resources::from(&ResourceSet::new().with(GPU, Quantity::whole(3))),
        priority: 0,
        spot: false,
    };
    let r = sim
        .core
        .submit_job(sim.now, Caller::Client, JobId::random(), sub);
    assert!(
        matches!(r, HeadResponse::Error { ref message, .. } if message.contains("could never start")),
        "{r:?}"
    );
    sim.core
        .job_exited(sim.now, jobs[0], Some(0), "exit code 0".into());
    assert_eq!(starts(&mut sim), vec![jobs[2]]);
    // Stopping a waiting job ends it and frees its place.
    let waiting = submit(&mut sim, "vision", 1, 0, false);
    assert!(starts(&mut sim).is_empty());
    assert!(matches!(
        sim.core.handle(
            sim.now,
            Caller::Client,
            HeadRequest::StopJob { job_id: waiting }
        ),
        Reply::Now(HeadResponse::Ok)
    ));
    assert_eq!(sim.core.job(waiting).unwrap().state, JobState::Stopped);
    assert!(!sim.core.queue.is_waiting(waiting));
}

#[test]
fn jq_4_a_spot_job_is_signalled_for_an_urgent_one_and_waits_to_resume() {
    let mut sim = Sim::new();
    gpu_node(&mut sim, 2);
    let spot = submit(&mut sim, "research", 2, 0, true);
    assert_eq!(starts(&mut sim), vec![spot]);
    let urgent = submit(&mut sim, "prod", 2, 10, false);
    let signalled: Vec<JobId> = std::iter::from_fn(|| sim.core.poll_effect())
        .filter_map(|e| match e {
            Effect::SignalJob { job, .. } => Some(job),
            _ => None,
        })
        .collect();
    assert_eq!(signalled, vec![spot]);
    // Its driver exits (it had 30 s to checkpoint): it waits again, and the
    // urgent job starts.
    sim.core
        .job_exited(sim.now, spot, None, "killed by SIGTERM".into());
    assert_eq!(sim.core.job(spot).unwrap().state, JobState::Pending);
    assert!(sim
        .core
        .job(spot)
        .unwrap()
        .message
        .as_deref()
        .unwrap()
        .contains("preempted"));
    assert_eq!(starts(&mut sim), vec![urgent]);
    // When the urgent job ends, the spot job resumes.
    sim.core
        .job_exited(sim.now, urgent, Some(0), "exit code 0".into());
    assert_eq!(starts(&mut sim), vec![spot]);
    let trail = sim.core.audit.query(&Default::default());
    assert!(trail
        .iter()
        .any(|e| e.action == "job.preempt" && e.target.contains(&spot.to_string())));
}

#[test]
fn a_job_waiting_in_the_queue_survives_the_head_and_starts_when_room_frees() {
    use crate::head::durable::Change;
    let mut sim = Sim::new();
    gpu_node(&mut sim, 2);
    let running = submit(&mut sim, "vision", 2, 0, false);
    let waiting = submit(&mut sim, "vision", 2, 0, false);
    assert_eq!(starts(&mut sim), vec![running]);
    // What the store would hold: every change, last write wins.
    let mut rows = std::collections::BTreeMap::new();
    for c in sim.core.take_changes() {
        match c {
            Change::Put(r) => drop(rows.insert(r.key(), r)),
            Change::Delete(t, k) => drop(rows.remove(&(t, k))),
            Change::RunPoints(..) | Change::Audit(_) => {}
        }
    }
    let mut core = recovered(sim.now, rows.into_values().collect());
    assert!(
        core.queue.is_waiting(waiting),
        "the waiting job waits again"
    );
    assert_eq!(core.job(waiting).unwrap().state, JobState::Pending);
    core.job_exited(sim.now, running, Some(0), "exit code 0".into());
    let started: Vec<JobId> = std::iter::from_fn(|| core.poll_effect())
        .filter_map(|e| match e {
            Effect::StartJob { job, .. } => Some(job),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec![waiting]);
}
