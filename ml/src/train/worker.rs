//! The trainer's worker actor: one per DDP rank, holding the model replica
//! on a compute thread of its own, so its async methods (chunk delivery,
//! progress polls) stay responsive while the training loop runs.

use super::context::{run_job, Job, Progress, RunState};
use super::ring::{Inbox, Mailbox, Outbox, Parcel, Ring};
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
    next: Mutex<Option<ActorHandle<TrainWorker>>>,
    state: Arc<Mutex<RunState>>,
    /// Same-node links: chunks from the previous member, and to the next.
    inbox: Mutex<Option<Receiver>>,
    outbox: Mutex<Option<Sender>>,
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
            next: Mutex::default(),
            state: Arc::default(),
            inbox: Mutex::default(),
            outbox: Mutex::default(),
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

    /// The ring: every member's handle, in rank order; `outbox`, the next
    /// member's inbox when the link to it is a same-node channel (else the
    /// store); `inbox_used`, whether the previous member writes into this
    /// member's inbox. `None` when set up, else why not.
    async fn set_peers(
        &self,
        peers: Vec<ActorHandle<TrainWorker>>,
        outbox: Option<ChannelSpec>,
        inbox_used: bool,
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
        if !inbox_used {
            *lock(&self.inbox) = None;
        }
        *lock(&self.outbox) = None;
        match outbox.as_ref().map(ChannelSpec::connect) {
            None => None,
            Some(Ok(tx)) => {
                *lock(&self.outbox) = Some(tx);
                None
            }
            Some(Err(e)) => Some(format!("cannot connect to the next member's inbox: {e}")),
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
        let out = match lock(&self.outbox).take() {
            Some(tx) => Outbox::Channel(tx),
            None => Outbox::Store(send),
        };
        let inbox = match lock(&self.inbox).take() {
            Some(rx) => Inbox::Channel(rx),
            None => Inbox::Store(self.mailbox.clone()),
        };
        let ring = Ring::new(
            self.rank as usize,
            self.world as usize,
            out,
            inbox,
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

/// Links `workers` into a ring, in rank order. With `shared_memory`, each
/// member makes an inbox channel and every link between two members on one
/// node goes through it; the others (and every link without
/// `shared_memory`) go through the object store, and QUIC between nodes.
pub fn connect_ring(
    workers: &[ActorHandle<TrainWorker>],
    shared_memory: bool,
) -> prism::Result<()> {
    let n = workers.len();
    let specs: Vec<Option<ChannelSpec>> = if shared_memory {
        let refs: Vec<_> = workers
            .iter()
            .map(|w| w.open_inbox())
            .collect::<prism::Result<_>>()?;
        prism::get_all(&refs)?
    } else {
        vec![None; n]
    };
    // Link r -> r+1 is a channel when both made an inbox on the same node.
    let channel: Vec<bool> = (0..n)
        .map(|r| match (&specs[r], &specs[(r + 1) % n]) {
            (Some(a), Some(b)) => n > 1 && a.node == b.node,
            _ => false,
        })
        .collect();
    let link = |channel: &[bool]| -> prism::Result<Option<String>> {
        let refs: Vec<_> = workers
            .iter()
            .enumerate()
            .map(|(r, w)| {
                let next = (r + 1) % n;
                let outbox = channel[r].then(|| specs[next].clone()).flatten();
                w.set_peers(workers.to_vec(), outbox, channel[(r + n - 1) % n])
            })
            .collect::<prism::Result<_>>()?;
        let failed = prism::get_all(&refs)?.into_iter().enumerate();
        Ok(failed
            .filter_map(|(rank, why)| why.map(|w| format!("ring member {rank}: {w}")))
            .next())
    };
    let Some(why) = link(&channel)? else {
        return Ok(());
    };
    if !channel.contains(&true) {
        return Err(prism::Error::Channel(why));
    }
    // Some member could not map its neighbour's channel (e.g. a separate
    // /dev/shm in a container on the same node): every link falls back to
    // the store, so both ends of each link agree.
    tracing::warn!("ring channels unusable, chunks go through the store: {why}");
    match link(&vec![false; n])? {
        None => Ok(()),
        Some(why) => Err(prism::Error::Channel(why)),
    }
}
