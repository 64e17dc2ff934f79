//! How a process's leases end (LO-2, LO-3): the raylet revokes one, the
//! owner cancels a task on one, and the sweeper, a thread that, while
//! leases are held or tasks wait for one asked for, gives back leases idle
//! for `PRISM_LEASE_IDLE_MS` or revoked and past their tenure, sends
//! through the raylet what may no longer wait here, and lists what waits
//! (LO-7).

use super::*;

impl Leases {
    /// The raylet wants `lease` back (LO-3): it is given back after its
    /// task, or, while tasks wait here, once held for its [`TENURE`].
    pub(in crate::api) fn revoke(&self, core: &Arc<Core>, lease: TaskId) {
        let mut spill = Spill::new();
        let mut g = self.lock();
        let inner = &mut *g;
        let now = Instant::now();
        for (key, shape) in inner.shapes.iter_mut() {
            let waiting = !shape.queue.is_empty();
            if let Some(h) = shape.held.iter_mut().find(|h| h.lease == lease) {
                if h.revoked {
                    break;
                }
                h.yield_at = Some(h.granted + TENURE);
                h.settle(now, waiting);
                if h.revoked && h.busy.is_none() {
                    give_back(core, shape, lease);
                    shape.after_return(core, key, &mut inner.asked, &self.pending, &mut spill);
                }
                break;
            }
        }
        // Still opening: given back once open (LO-6).
        if let Some(revoked) = inner.opening.get_mut(&lease) {
            *revoked = true;
        }
        send_all(core, spill);
    }

    /// Cancels a task waiting here or running on a lease; `false` if it
    /// is neither (the raylet's).
    pub(in crate::api) fn cancel(&self, core: &Arc<Core>, task: TaskId, force: bool) -> bool {
        let kill = {
            let mut g = self.lock();
            let found = g.shapes.values_mut().find_map(|shape| {
                if let Some(i) = shape.queue.iter().position(|t| t.task_id == task) {
                    shape.queue.remove(i);
                    return Some(None);
                }
                let h = shape
                    .held
                    .iter_mut()
                    .find(|h| h.busy.as_ref().is_some_and(|(t, _)| t.task_id == task))?;
                if let Some((_, cancelled)) = h.busy.as_mut() {
                    *cancelled = true;
                }
                // Its worker is about to be killed: push nothing more to it.
                h.revoked |= force;
                Some(Some(h.lease))
            });
            match found {
                None => return false,
                Some(lease) => lease.filter(|_| force),
            }
        };
        core.finish(task.result(), Outcome::Failed(Failure::Cancelled));
        if let Some(lease) = kill {
            // The raylet kills the leased worker; the lease ends with it.
            let _ = core.send(&LocalRequest::Cancel {
                task_id: lease,
                force: true,
            });
        }
        true
    }

    /// Returns leases idle for `PRISM_LEASE_IDLE_MS` while any are held (LO-3).
    pub(super) fn start_sweeper(&self, core: &Arc<Core>, g: &mut Inner) {
        if g.sweeping || g.shapes.values().all(Shape::at_rest) {
            return;
        }
        g.sweeping = true;
        let core = core.clone();
        let idle = core.direct.lease_idle;
        // A thread of its own, not a task on the runtime: it may start (from
        // a lease's thread) while the runtime shuts down, whose timers
        // would then panic.
        let spawned = std::thread::Builder::new()
            .name("prism-lease-sweep".into())
            .spawn(move || loop {
                std::thread::sleep(idle.min(Duration::from_millis(100)));
                let mut spill = Spill::new();
                let mut g = core.leases.lock();
                let inner = &mut *g;
                let now = Instant::now();
                for (key, shape) in inner.shapes.iter_mut() {
                    let waiting = !shape.queue.is_empty();
                    let mut yielded = false;
                    for h in shape.held.iter_mut() {
                        h.settle(now, waiting);
                        yielded |= h.revoked && h.busy.is_none();
                    }
                    let stale: Vec<TaskId> = shape
                        .held
                        .iter()
                        .filter(|h| {
                            h.busy.is_none()
                                && (h.revoked || h.idle_since.is_some_and(|t| now - t >= idle))
                        })
                        .map(|h| h.lease)
                        .collect();
                    for lease in stale {
                        give_back(&core, shape, lease);
                    }
                    if yielded {
                        let pending = &core.leases.pending;
                        shape.after_return(&core, key, &mut inner.asked, pending, &mut spill);
                    }
                    // Leases stuck on long tasks, or slower than when
                    // their tasks queued, hold nothing up (LO-2).
                    if !shape.queue.is_empty() {
                        shape.spill_if_unasked(&mut spill);
                        shape.spill_beyond_room(&mut spill);
                    }
                }
                let done = inner.shapes.values().all(Shape::at_rest);
                if done {
                    inner.sweeping = false;
                }
                let listed = inner.waiting_list(now, done);
                send_all(&core, spill);
                if let Some(list) = listed {
                    // Sent before the lock goes, as the spilled tasks: a
                    // later snapshot cannot overtake it.
                    let _ = core.send(&LocalRequest::OwnerWaiting(list));
                }
                if done {
                    return;
                }
            });
        if spawned.is_err() {
            g.sweeping = false;
        }
    }
}
