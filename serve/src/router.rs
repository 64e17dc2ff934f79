//! The router in every caller (the HTTP proxy, every handle): power of two
//! choices over a deployment's replicas by requests in flight, at most
//! `max_ongoing_requests` per replica from this caller, a bounded queue
//! past that (then [`ServeError::Overloaded`]), and a retry on another
//! replica when the chosen one died before answering.

use crate::replica::Replica;
use crate::ServeError;
use prism::{ActorHandle, TaskError};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Picks a slot by power of two choices: two distinct random candidates
/// among the usable ones (alive, under `max_ongoing`), the less loaded of
/// the two; `None` when no slot is usable. `r1`, `r2` are random numbers.
pub fn choose(slots: &[(u32, bool)], max_ongoing: u32, r1: usize, r2: usize) -> Option<usize> {
    let usable: Vec<usize> = (0..slots.len())
        .filter(|&i| slots[i].1 && slots[i].0 < max_ongoing)
        .collect();
    match usable.len() {
        0 => None,
        1 => Some(usable[0]),
        n => {
            let a = usable[r1 % n];
            let b = usable[(r1 % n + 1 + r2 % (n - 1)) % n];
            Some(if slots[b].0 < slots[a].0 { b } else { a })
        }
    }
}

/// One replica as this caller sees it.
pub(crate) struct Slot {
    pub(crate) handle: ActorHandle<Replica>,
    ongoing: AtomicU32,
    dead: AtomicBool,
}

impl Slot {
    fn key(&self) -> prism::ActorId {
        self.handle.id()
    }
}

/// How a deployment is called (from its route entry).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Requests in flight per replica from one caller.
    pub max_ongoing: u32,
    /// Requests waiting for a replica in one caller before it answers
    /// `Overloaded`.
    pub max_queued: u32,
    /// A request's time limit, queueing included.
    pub timeout: Duration,
    /// Retries on another replica after the chosen one died.
    pub retries: u32,
}

/// Routes one deployment's requests in this process.
pub struct Router {
    deployment: String,
    slots: RwLock<Arc<Vec<Arc<Slot>>>>,
    limits: RwLock<Limits>,
    queued: AtomicU32,
    changed: Notify,
    /// Called when a request finds no live replica (scale from zero).
    on_starved: Option<Box<dyn Fn() + Send + Sync>>,
}

impl Router {
    /// A router with no replicas yet; `on_starved` is called when a
    /// request finds no live replica.
    pub fn new(
        deployment: &str,
        limits: Limits,
        on_starved: Option<Box<dyn Fn() + Send + Sync>>,
    ) -> Router {
        Router {
            deployment: deployment.to_string(),
            slots: RwLock::new(Arc::new(Vec::new())),
            limits: RwLock::new(limits),
            queued: AtomicU32::new(0),
            changed: Notify::new(),
            on_starved,
        }
    }

    /// The replica set and limits changed: keep the counts of replicas
    /// still there, drop the rest.
    pub(crate) fn update(&self, replicas: Vec<ActorHandle<Replica>>, limits: Limits) {
        let old = self.slots.read().unwrap().clone();
        let next: Vec<Arc<Slot>> = replicas
            .into_iter()
            .map(|h| {
                old.iter()
                    .find(|s| s.key() == h.id())
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(Slot {
                            handle: h,
                            ongoing: AtomicU32::new(0),
                            dead: AtomicBool::new(false),
                        })
                    })
            })
            .collect();
        *self.slots.write().unwrap() = Arc::new(next);
        *self.limits.write().unwrap() = limits;
        self.changed.notify_waiters();
    }

    /// Replicas this router sends to.
    pub fn replicas(&self) -> usize {
        self.slots.read().unwrap().len()
    }

    /// Requests waiting for a replica in this process.
    pub fn queued(&self) -> u32 {
        self.queued.load(Ordering::Relaxed)
    }

    fn try_pick(&self, max_ongoing: u32) -> Option<Arc<Slot>> {
        let slots = self.slots.read().unwrap().clone();
        for _ in 0..4 {
            let view: Vec<(u32, bool)> = slots
                .iter()
                .map(|s| {
                    (
                        s.ongoing.load(Ordering::Acquire),
                        !s.dead.load(Ordering::Acquire),
                    )
                })
                .collect();
            let i = choose(
                &view,
                max_ongoing,
                rand::random::<u64>() as usize,
                rand::random::<u64>() as usize,
            )?;
            let s = &slots[i];
            // Claim a place only if it is still under the limit.
            if s.ongoing
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max_ongoing).then_some(n + 1)
                })
                .is_ok()
            {
                return Some(s.clone());
            }
        }
        None
    }

    async fn acquire(&self, deadline: Instant) -> Result<Arc<Slot>, ServeError> {
        let mut queued = false;
        let result = loop {
            let limits = self.limits.read().unwrap().clone();
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(s) = self.try_pick(limits.max_ongoing) {
                break Ok(s);
            }
            let alive = self
                .slots
                .read()
                .unwrap()
                .iter()
                .filter(|s| !s.dead.load(Ordering::Acquire))
                .count();
            if alive == 0 {
                if let Some(f) = &self.on_starved {
                    f();
                }
            }
            if !queued {
                if alive > 0 && self.queued.load(Ordering::Acquire) >= limits.max_queued {
                    break Err(ServeError::Overloaded {
                        deployment: self.deployment.clone(),
                        queued: limits.max_queued,
                    });
                }
                self.queued.fetch_add(1, Ordering::AcqRel);
                queued = true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, changed).await.is_err() {
                break Err(match alive {
                    0 => ServeError::NoReplicas {
                        deployment: self.deployment.clone(),
                        waited: limits.timeout,
                    },
                    _ => ServeError::Timeout {
                        deployment: self.deployment.clone(),
                        after: limits.timeout,
                    },
                });
            }
        };
        if queued {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        result
    }

    fn release(&self, s: &Slot) {
        s.ongoing.fetch_sub(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    /// Sends one encoded request and waits for its answer.
    pub async fn call(&self, body: Vec<u8>) -> Result<Vec<u8>, ServeError> {
        let limits = self.limits.read().unwrap().clone();
        let deadline = Instant::now() + limits.timeout;
        let mut tries = 0;
        loop {
            let slot = self.acquire(deadline).await?;
            let sent = slot.handle.handle(body.clone());
            let answer = match sent {
                Ok(r) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, r).await {
                        Ok(a) => a,
                        Err(_) => {
                            self.release(&slot);
                            return Err(ServeError::Timeout {
                                deployment: self.deployment.clone(),
                                after: limits.timeout,
                            });
                        }
                    }
                }
                Err(e) => Err(e),
            };
            self.release(&slot);
            match answer {
                Ok(Ok(bytes)) => return Ok(bytes),
                Ok(Err(msg)) => return Err(ServeError::Model(msg)),
                Err(prism::Error::Task(e)) if replica_gone(&e) => {
                    slot.dead.store(true, Ordering::Release);
                    tries += 1;
                    if tries > limits.retries {
                        return Err(ServeError::ReplicaDied {
                            deployment: self.deployment.clone(),
                            detail: e.to_string(),
                        });
                    }
                    tracing::info!(deployment = %self.deployment, "replica died; retrying elsewhere: {e}");
                }
                Err(e) => return Err(ServeError::Prism(e)),
            }
        }
    }
}

/// The replica (its worker, its node) is gone: another may answer.
fn replica_gone(e: &TaskError) -> bool {
    matches!(
        e,
        TaskError::ActorDied { .. }
            | TaskError::WorkerDied { .. }
            | TaskError::NodeDied { .. }
            | TaskError::NoSuchActor { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::choose;
    use proptest::prelude::*;

    #[test]
    fn picks_the_less_loaded_of_two() {
        // Two slots: whichever pair is drawn, the idle one wins.
        for r in 0..10 {
            assert_eq!(choose(&[(5, true), (1, true)], 8, r, r * 7), Some(1));
        }
    }

    #[test]
    fn skips_dead_and_full_slots() {
        assert_eq!(
            choose(&[(0, false), (8, true), (3, true)], 8, 0, 0),
            Some(2)
        );
        assert_eq!(choose(&[(0, false), (8, true)], 8, 1, 2), None);
        assert_eq!(choose(&[], 8, 1, 2), None);
    }

    proptest! {
        #[test]
        fn never_a_dead_or_full_slot_and_none_only_when_none_is_usable(
            slots in prop::collection::vec((0u32..10, any::<bool>()), 0..12),
            max in 1u32..10, r1 in any::<usize>(), r2 in any::<usize>(),
        ) {
            let usable = slots.iter().any(|&(n, alive)| alive && n < max);
            match choose(&slots, max, r1, r2) {
                Some(i) => prop_assert!(slots[i].1 && slots[i].0 < max),
                None => prop_assert!(!usable),
            }
        }

        #[test]
        fn the_pick_is_never_the_most_loaded_of_three_or_more_distinct(
            r1 in any::<usize>(), r2 in any::<usize>(),
        ) {
            let slots = [(0, true), (1, true), (2, true)];
            prop_assert_ne!(choose(&slots, 8, r1, r2), Some(2));
        }
    }
}
