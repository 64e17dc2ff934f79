//! What an actor keeps to be a member of a ring all-reduce between calls,
//! and the driver-side wiring of a ring of such actors.
//!
//! Any actor can be a member: it holds a [`RingMember`], exposes three
//! `async fn(&self)` methods (open its inbox, link to the next member,
//! take a delivered piece) that forward here, and runs [`Ring::all_reduce`]
//! on a thread of its own while its actor loop keeps taking deliveries. The
//! DDP worker ([`super::TrainWorker`]) and the pipeline's stages (for the
//! replicas' gradient average) are both built this way.

use super::ring::{Inbox, Mailbox, Outbox, Parcel, Ring, SendFn};
use prism::channel::{ChannelSpec, Receiver, Sender};
use prism::ObjectRef;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Same-node links: slots of this many bytes...
const SLOT_BYTES: usize = 1 << 20;
/// ...this many per link.
const SLOTS: u32 = 4;

/// A [`SendFn`] through `send` (an actor call to the next member's
/// `deliver`).
pub fn deliver_with<E: std::fmt::Display>(
    send: impl Fn(Parcel) -> Result<(), E> + Send + Sync + 'static,
) -> SendFn {
    Arc::new(move |p| send(p).map_err(|e| format!("cannot send to the next ring member: {e}")))
}

/// One member's links, between the set-up calls and the all-reduce.
#[derive(Default)]
pub struct RingMember {
    mailbox: Arc<Mailbox>,
    next: Mutex<Option<SendFn>>,
    /// Same-node links: pieces from the previous member, and to the next.
    inbox: Mutex<Option<Receiver>>,
    outbox: Mutex<Option<Sender>>,
    /// The ring made from these links, kept between all-reduces by a
    /// member that runs many ([`RingMember::keep`]).
    kept: Mutex<Option<Ring>>,
}

impl std::fmt::Debug for RingMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingMember")
            .field("linked", &lock(&self.next).is_some())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RingMember {
    /// Makes this member's same-node inbox (a shared-memory channel) and
    /// returns where it is; `None` when none can be made here.
    pub fn open_inbox(&self) -> Option<ChannelSpec> {
        match prism::channel::channel(SLOTS, SLOT_BYTES) {
            Ok((spec, rx)) => {
                *lock(&self.inbox) = Some(rx);
                Some(spec)
            }
            Err(e) => {
                tracing::warn!("no shared-memory inbox, pieces go through the store: {e}");
                None
            }
        }
    }

    /// Links to the next member: `deliver` sends it a piece through the
    /// store; `outbox`, its inbox when the link is a same-node channel;
    /// `inbox_used`, whether the previous member writes into this member's
    /// inbox. `None` when linked, else why not.
    pub fn link(
        &self,
        deliver: SendFn,
        outbox: Option<ChannelSpec>,
        inbox_used: bool,
    ) -> Option<String> {
        *lock(&self.next) = Some(deliver);
        // New links: a ring kept from the old ones is stale.
        *lock(&self.kept) = None;
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

    /// A piece from the previous member.
    pub fn deliver(&self, parcel: Parcel) {
        self.mailbox.put(parcel);
    }

    /// The ring, as member `rank` of `world`: the one kept by
    /// [`RingMember::keep`] since the last [`RingMember::link`] (a member
    /// that all-reduces many times over the same links, such as a pipeline
    /// stage once per step), else a new one (the links' channels move into
    /// it: without `keep`, call once per link).
    pub fn ring(
        &self,
        rank: usize,
        world: usize,
        bucket_bytes: usize,
        timeout: Duration,
    ) -> Result<Ring, String> {
        if let Some(ring) = lock(&self.kept).take() {
            return Ok(ring);
        }
        let next = lock(&self.next)
            .clone()
            .ok_or("this ring member is not linked to the next one yet")?;
        let out = match lock(&self.outbox).take() {
            Some(tx) => Outbox::Channel(tx),
            None => Outbox::Store(next),
        };
        let inbox = match lock(&self.inbox).take() {
            Some(rx) => Inbox::Channel(rx),
            None => Inbox::Store(self.mailbox.clone()),
        };
        Ring::new(rank, world, out, inbox, bucket_bytes, timeout)
    }

    /// Keeps `ring` for the next [`RingMember::ring`], which returns it as
    /// it is (same rank, world and bucket size).
    pub fn keep(&self, ring: Ring) {
        *lock(&self.kept) = Some(ring);
    }
}

/// Links `n` members into a ring, in rank order: `open(r)` asks member `r`
/// for its inbox ([`RingMember::open_inbox`]), `link(r, outbox,
/// inbox_used)` links it to member `r + 1` ([`RingMember::link`]). With
/// `shared_memory`, every link between two members on one node goes
/// through the receiver's inbox channel; the others (and every link
/// without `shared_memory`) through the object store, and QUIC between
/// nodes. Returns how many links go through shared memory.
pub fn connect_ring(
    n: usize,
    shared_memory: bool,
    open: impl Fn(usize) -> prism::Result<ObjectRef<Option<ChannelSpec>>>,
    link: impl Fn(usize, Option<ChannelSpec>, bool) -> prism::Result<ObjectRef<Option<String>>>,
) -> prism::Result<usize> {
    let specs: Vec<Option<ChannelSpec>> = if shared_memory {
        let refs: Vec<_> = (0..n).map(&open).collect::<prism::Result<_>>()?;
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
    let try_link = |channel: &[bool]| -> prism::Result<Option<String>> {
        let refs: Vec<_> = (0..n)
            .map(|r| {
                let outbox = channel[r].then(|| specs[(r + 1) % n].clone()).flatten();
                link(r, outbox, channel[(r + n - 1) % n])
            })
            .collect::<prism::Result<_>>()?;
        let failed = prism::get_all(&refs)?.into_iter().enumerate();
        Ok(failed
            .filter_map(|(rank, why)| why.map(|w| format!("ring member {rank}: {w}")))
            .next())
    };
    let Some(why) = try_link(&channel)? else {
        return Ok(channel.iter().filter(|c| **c).count());
    };
    if !channel.contains(&true) {
        return Err(prism::Error::Channel(why));
    }
    // Some member could not map its neighbour's channel (e.g. a separate
    // /dev/shm in a container on the same node): every link falls back to
    // the store, so both ends of each link agree.
    tracing::warn!("ring channels unusable, pieces go through the store: {why}");
    match try_link(&vec![false; n])? {
        None => Ok(0),
        Some(why) => Err(prism::Error::Channel(why)),
    }
}
