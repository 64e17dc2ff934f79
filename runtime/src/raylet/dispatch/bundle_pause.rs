//! A placement group's bundle refused here for what leases and running
//! tasks hold (L-3 in `lease.rs`): the leases are revoked and, for a while,
//! what the bundle wants is kept from new leases, tasks and actors, so that
//! the head's next try (every 500 ms) finds the room instead of a new lease
//! or the next task of a stream. Invariants:
//!
//! - **BP-1** a pause lasts [`LEASE_PAUSE`] at most, or until that group's
//!   bundles are prepared here; one group's pause at a time;
//! - **BP-2** after a pause that ended without its group, none starts for
//!   another [`LEASE_PAUSE`]: a head whose view keeps disagreeing with the
//!   raylet's (fractional GPUs) holds the node at most half the time;
//! - **BP-3** leases are revoked only for bundles that want something they
//!   hold, and only when the bundles would fit, GPU by GPU, once the leases
//!   and the running tasks give back what they hold;
//! - **BP-4** the local placement policy sees the held resources as taken
//!   (work that fits elsewhere goes there meanwhile).

use super::bundles::bundle_of;
use super::{Action, Dispatcher};
use crate::ids::PlacementGroupId;
use crate::proto::task::TaskKind;
use prism_scheduler::ResourceSet;
use std::time::{Duration, Instant};

/// How long a pause for a refused bundle lasts at most (BP-1), and how
/// long after one none starts (BP-2): several of the head's tries.
pub const LEASE_PAUSE: Duration = Duration::from_secs(2);

/// The pause of leases for a refused bundle.
#[derive(Debug, Default)]
pub(crate) struct Pause {
    /// The group and until when (the first tick past it ends it).
    active: Option<(PlacementGroupId, Instant)>,
    /// What its bundles want.
    held_back: ResourceSet,
    /// No pause starts before this (BP-2).
    cooldown: Option<Instant>,
}

impl Pause {
    /// Whether leases are paused.
    pub(super) fn active(&self) -> bool {
        self.active.is_some()
    }
}

impl Dispatcher {
    /// L-3: `bundles` of `pg` did not fit here at `now`: revokes the leases
    /// and pauses them if that would help (BP-1..BP-3).
    pub fn bundle_refused(
        &mut self,
        pg: PlacementGroupId,
        bundles: &[(u32, ResourceSet)],
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if bundles.is_empty() {
            return out;
        }
        let mut could = self.local.clone();
        let mut ending = false;
        for r in self.running.values() {
            let plain = matches!(r.task.spec.kind, TaskKind::Task);
            if plain && bundle_of(&r.task.spec.strategy).is_none() {
                let _ = could.release(&r.held, &r.gpus);
                ending = true;
            }
        }
        if !ending || !bundles.iter().all(|(_, b)| could.allocate(b).is_ok()) {
            return out;
        }
        let mut wanted = ResourceSet::new();
        for (_, b) in bundles {
            wanted.add(b);
        }
        let leased = self.leased();
        if wanted.iter().any(|(name, _)| !leased.get(name).is_zero()) {
            self.revoke_all_leases(&mut out);
        }
        let p = &mut self.leases.pause;
        let cooling = p.cooldown.is_some_and(|c| now < c);
        if p.active.is_none() && !cooling {
            p.active = Some((pg, now + LEASE_PAUSE));
            p.held_back = wanted;
            // Lease requests at the front of their class are declined
            // now, the others when they reach it.
            self.pump(&mut out);
        }
        out
    }

    /// Whether the pause on now wants some of what `held` holds (a lease
    /// holding it is revoked, L-3).
    pub(super) fn pause_wants(&self, held: &ResourceSet) -> bool {
        let p = &self.leases.pause;
        p.active()
            && p.held_back
                .iter()
                .any(|(name, _)| !held.get(name).is_zero())
    }

    /// Of what is free here, what the pause keeps; `None` without a pause.
    pub(super) fn held_back_free(&self) -> Option<ResourceSet> {
        let held = &self.leases.pause.held_back;
        if held.is_empty() {
            return None;
        }
        let free = self.local.available();
        let mut kept = ResourceSet::new();
        for (name, q) in held.iter() {
            kept.set(name, q.min(free.get(name)));
        }
        Some(kept)
    }

    /// A tick at `now`: a pause past its time ends, and none starts for a
    /// while (BP-2); what it kept goes to the queue.
    pub(super) fn pause_tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        let p = &mut self.leases.pause;
        if p.active.is_some_and(|(_, until)| now >= until) {
            *p = Pause {
                cooldown: Some(now + LEASE_PAUSE),
                ..Pause::default()
            };
            self.pump(out);
        }
    }

    /// Bundles of `pg` were prepared here: its pause ends (BP-1).
    pub(super) fn bundles_placed(&mut self, pg: PlacementGroupId) {
        let p = &mut self.leases.pause;
        if p.active.is_some_and(|(g, _)| g == pg) {
            p.active = None;
            p.held_back = ResourceSet::new();
        }
    }
}
