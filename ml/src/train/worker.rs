//! The trainer's worker actor: one per DDP rank, holding the model replica
//! on a compute thread of its own, so its async methods (chunk delivery,
//! progress polls) stay responsive while the training loop runs.

use super::context::{run_job, Job, Progress, RunState};
use super::ring::{Mailbox, Parcel, Ring};
use prism::channel::{ChannelSpec, Receiver, Sender};
use prism::ActorHandle;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a member waits for a chunk before declaring its peer dead.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(120);

/// Same-node ring links: slots of this many bytes...
const SLOT_BYTES: usize = 1 << 20;
/// ...this many per link.
const SLOTS: u32 = 4;

/// One rank of a training group.
#[prism::actor]
pub struct TrainWorker {
    rank: u32,
    world: u32,
    mailbox: Arc<Mailbox>,
    next: Arc<Mutex<Option<ActorHandle<TrainWorker>>>>,
    state: Arc<Mutex<RunState>>,
    /// Same-node links: chunks from the previous member, and to the next.
    inbox: Arc<Mutex<Option<Receiver>>>,
    outbox: Arc<Mutex<Option<Sender>>>,
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
            mailbox: Arc::default(),
            next: Arc::default(),
            state: Arc::default(),
            inbox: Arc::default(),
            outbox: Arc::default(),
        }
    }

    /// The worker process id (for fault-injection tests and operators).
    async fn pid(&self) -> u32 {
        std::process::id()
    }

    /// Makes this member's same-node inbox (a shared-memory channel) and
    /// returns where it is; `None` when none can be made here.
    async fn open_inbox(&self) -> Option<ChannelSpec> {
        match prism::channel::channel(SLOTS, SLOT_BYTES) {
            Ok((spec, rx)) => {
                *lock(&self.inbox) = Some(rx);
                Some(spec)
            }
            Err(e) => {
                tracing::warn!("no shared-memory inbox, chunks go through the store: {e}");
                None
            }
        }
    }

    /// The ring: every member's handle, in rank order, and every member's
    /// inbox when all of them are on one node (then chunks go through the
    /// channels; otherwise through the object store). `None` when set up.
    async fn set_peers(
        &self,
        peers: Vec<ActorHandle<TrainWorker>>,
        inboxes: Vec<ChannelSpec>,
    ) -> Option<String> {
        if peers.len() != self.world as usize {
            return Some(format!(
                "{} peers for a world of {}",
                peers.len(),
                self.world
            ));
        }
        let next = (self.rank as usize + 1) % peers.len();
        *lock(&self.next) = Some(peers[next].clone());
        if inboxes.is_empty() {
            *lock(&self.inbox) = None;
            *lock(&self.outbox) = None;
            return None;
        }
        match inboxes.get(next).map(ChannelSpec::connect) {
            Some(Ok(tx)) => {
                *lock(&self.outbox) = Some(tx);
                None
            }
            Some(Err(e)) => Some(format!("cannot connect to the next member's inbox: {e}")),
            None => Some(format!(
                "{} inboxes for {} peers",
                inboxes.len(),
                peers.len()
            )),
        }
    }

    /// A chunk from the previous member.
    async fn deliver(&self, parcel: Parcel) {
        self.mailbox.put(parcel);
    }

    /// Starts `job` on the compute thread; returns at once.
    async fn start(&self, job: Job) -> bool {
        let next = lock(&self.next).clone();
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
        let mut ring = Ring::new(
            self.rank as usize,
            self.world as usize,
            send,
            self.mailbox.clone(),
            bucket as usize,
            CHUNK_TIMEOUT,
        );
        let links = (lock(&self.outbox).take(), lock(&self.inbox).take());
        if let (Some(tx), Some(rx)) = links {
            ring = match ring.with_channels(tx, rx) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("cannot use the ring's channels: {e}");
                    return false;
                }
            };
        }
        let state = self.state.clone();
        std::thread::Builder::new()
            .name(format!("prism-train-{}", self.rank))
            .spawn(move || run_job(job, ring, state))
            .is_ok()
    }

    /// Metrics from index `since` on, and the outcome once finished.
    async fn poll(&self, since: u64) -> Progress {
        lock(&self.state).progress(since)
    }
}

/// Links `workers` into a ring, in rank order: through shared-memory
/// channels when `shared_memory` is asked for, every member can make an
/// inbox and all are on one node; through the object store (and QUIC
/// between nodes) otherwise.
pub fn connect_ring(
    workers: &[ActorHandle<TrainWorker>],
    shared_memory: bool,
) -> prism::Result<()> {
    let specs: Vec<Option<ChannelSpec>> = if shared_memory {
        let refs: Vec<_> = workers
            .iter()
            .map(|w| w.open_inbox())
            .collect::<prism::Result<_>>()?;
        prism::get_all(&refs)?
    } else {
        vec![None; workers.len()]
    };
    let same_node = specs
        .iter()
        .all(|s| matches!((s, &specs[0]), (Some(a), Some(b)) if a.node == b.node));
    let inboxes: Vec<ChannelSpec> = if same_node {
        specs.into_iter().flatten().collect()
    } else {
        Vec::new()
    };
    let link = |inboxes: &[ChannelSpec]| -> prism::Result<Option<String>> {
        let refs: Vec<_> = workers
            .iter()
            .map(|w| w.set_peers(workers.to_vec(), inboxes.to_vec()))
            .collect::<prism::Result<_>>()?;
        let failed = prism::get_all(&refs)?.into_iter().enumerate();
        Ok(failed
            .filter_map(|(rank, why)| why.map(|w| format!("ring member {rank}: {w}")))
            .next())
    };
    let Some(why) = link(&inboxes)? else {
        return Ok(());
    };
    if inboxes.is_empty() {
        return Err(prism::Error::Channel(why));
    }
    // Some member could not map its neighbour's channel (e.g. a separate
    // /dev/shm in a container on the same node): every member falls back
    // to the store, so the ring stays consistent.
    tracing::warn!("ring channels unusable, chunks go through the store: {why}");
    match link(&[])? {
        None => Ok(()),
        Some(why) => Err(prism::Error::Channel(why)),
    }
}
