//! The trainer's worker actor: one per DDP rank, holding the model replica
//! on a compute thread of its own, so its async methods (chunk delivery,
//! progress polls) stay responsive while the training loop runs.

use super::context::{run_job, Job, Progress, RunState};
use super::ring::Parcel;
use super::ring_member::{deliver_with, RingMember};
use prism::channel::ChannelSpec;
use prism::ActorHandle;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a member waits for a chunk before declaring its peer dead.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(120);

/// One rank of a training group.
#[prism::actor]
pub struct TrainWorker {
    rank: u32,
    world: u32,
    member: RingMember,
    state: Arc<Mutex<RunState>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[prism::actor]
impl TrainWorker {
    fn new(rank: u32, world: u32) -> Self {
        TrainWorker {
            rank,
            world,
            member: RingMember::default(),
            state: Arc::default(),
        }
    }

    /// The worker process id (for fault-injection tests and operators).
    async fn pid(&self) -> u32 {
        std::process::id()
    }

    /// Makes this member's same-node inbox; see [`RingMember::open_inbox`].
    async fn open_inbox(&self) -> Option<ChannelSpec> {
        self.member.open_inbox()
    }

    /// Links to the next member; see [`RingMember::link`].
    async fn set_next(
        &self,
        next: ActorHandle<TrainWorker>,
        outbox: Option<ChannelSpec>,
        inbox_used: bool,
    ) -> Option<String> {
        let deliver = deliver_with(move |p| next.deliver(p).map(drop));
        self.member.link(deliver, outbox, inbox_used)
    }

    /// A chunk from the previous member.
    async fn deliver(&self, parcel: Parcel) {
        self.member.deliver(parcel);
    }

    /// Starts `job` on the compute thread; returns at once.
    async fn start(&self, job: Job) -> bool {
        let bucket = match &job {
            Job::Train(t) => t.bucket_bytes,
            Job::AllReduceF32 { bucket_bytes, .. } | Job::AllReduceF64 { bucket_bytes, .. } => {
                *bucket_bytes
            }
        };
        let ring = self.member.ring(
            self.rank as usize,
            self.world as usize,
            bucket as usize,
            CHUNK_TIMEOUT,
        );
        let ring = match ring {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot set up the ring: {e}");
                return false;
            }
        };
        let state = self.state.clone();
        std::thread::Builder::new()
            .name(format!("prism-train-{}", self.rank))
            .spawn(move || run_job(job, ring, state))
            .is_ok()
    }

    /// The last step this rank finished.
    async fn current_step(&self) -> u64 {
        lock(&self.state).step
    }

    /// Stop (preempted) once step `step` is done, after a checkpoint.
    async fn stop_after(&self, step: u64) {
        lock(&self.state).stop_after = Some(step);
    }

    /// Metrics from index `since` on, and the outcome once finished.
    async fn poll(&self, since: u64) -> Progress {
        lock(&self.state).progress(since)
    }
}

/// Links `workers` into a ring, in rank order; returns how many links go
/// through shared memory. See [`super::ring_member::connect_ring`].
pub fn connect_ring(
    workers: &[ActorHandle<TrainWorker>],
    shared_memory: bool,
) -> prism::Result<usize> {
    let n = workers.len();
    super::ring_member::connect_ring(
        n,
        shared_memory,
        |r| workers[r].open_inbox(),
        |r, outbox, inbox_used| {
            workers[r].set_next(workers[(r + 1) % n].clone(), outbox, inbox_used)
        },
    )
}
