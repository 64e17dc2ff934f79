//! The trainer's worker actor: one per DDP rank, holding the model replica
//! on a compute thread of its own, so its async methods (chunk delivery,
//! progress polls) stay responsive while the training loop runs.

use super::context::{run_job, Job, Progress, RunState};
use super::ring::{Mailbox, Parcel, Ring};
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
    mailbox: Arc<Mailbox>,
    next: Arc<Mutex<Option<ActorHandle<TrainWorker>>>>,
    state: Arc<Mutex<RunState>>,
}

#[prism::actor]
impl TrainWorker {
    fn new(rank: u32, world: u32) -> Self {
        TrainWorker {
            rank,
            world,
            mailbox: Arc::default(),
            next: Arc::default(),
            state: Arc::default(),
        }
    }

    /// The worker process id (for fault-injection tests and operators).
    async fn pid(&self) -> u32 {
        std::process::id()
    }

    /// The ring: every member's handle, in rank order.
    async fn set_peers(&self, peers: Vec<ActorHandle<TrainWorker>>) -> bool {
        let next = peers
            .get((self.rank as usize + 1) % peers.len().max(1))
            .cloned();
        *self.next.lock().unwrap_or_else(|p| p.into_inner()) = next;
        peers.len() == self.world as usize
    }

    /// A chunk from the previous member.
    async fn deliver(&self, parcel: Parcel) {
        self.mailbox.put(parcel);
    }

    /// Starts `job` on the compute thread; returns at once.
    async fn start(&self, job: Job) -> bool {
        let next = self.next.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(next) = next else {
            return false;
        };
        let send = Box::new(move |p: Parcel| {
            next.deliver(p)
                .map(drop)
                .map_err(|e| format!("cannot send a chunk to the next member: {e}"))
        });
        let bucket = match &job {
            Job::Train(t) => t.bucket_bytes,
            Job::AllReduceF32 { bucket_bytes, .. } | Job::AllReduceF64 { bucket_bytes, .. } => {
                *bucket_bytes
            }
        };
        let ring = Ring::new(
            self.rank as usize,
            self.world as usize,
            send,
            self.mailbox.clone(),
            bucket as usize,
            CHUNK_TIMEOUT,
        );
        let state = self.state.clone();
        std::thread::Builder::new()
            .name(format!("prism-train-{}", self.rank))
            .spawn(move || run_job(job, ring, state))
            .is_ok()
    }

    /// Metrics from index `since` on, and the outcome once finished.
    async fn poll(&self, since: u64) -> Progress {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .progress(since)
    }
}
