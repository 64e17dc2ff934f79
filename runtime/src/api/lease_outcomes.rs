//! A leased worker's outcomes, read on the lease's own thread (see
//! `lease.rs`): each is matched to the task the lease runs, retried there
//! if it panicked and may be, or delivered; a lease that breaks sends what
//! it ran to the raylet (LO-4).

use super::*;

/// Reads a lease's outcomes until it breaks or is given back.
pub(super) fn read_outcomes(core: &Arc<Core>, key: &str, lease: TaskId, stream: UnixStream) {
    let mut r = std::io::BufReader::with_capacity(64 << 10, stream);
    while let Ok(Some(DirectEvent::Finished {
        task_id,
        outcome,
        ran_us,
    })) = codec::read_frame::<DirectEvent>(&mut r, MAX_TASK_FRAME)
    {
        let mut spill = Spill::new();
        let deliver = {
            let mut g = core.leases.lock();
            let inner = &mut *g;
            let Some(shape) = inner.shapes.get_mut(key) else {
                return;
            };
            let waiting = !shape.queue.is_empty();
            let Some(h) = shape.held.iter_mut().find(|h| h.lease == lease) else {
                return;
            };
            let (mut spec, cancelled) = match h.busy.take() {
                Some(b) if b.0.task_id == task_id => b,
                other => {
                    h.busy = other;
                    continue;
                }
            };
            // The worker's measure of its run time where it gave one: the
            // queueing a busy machine adds is no part of the work (LO-2).
            let took = match ran_us {
                0 => h.busy_since.elapsed(),
                us => Duration::from_micros(us),
            };
            let panicked = matches!(outcome, Outcome::Failed(Failure::Panic { .. }));
            observe(&mut shape.took_us, took);
            let deliver = if !cancelled
                && panicked
                && spec.retry_exceptions
                && spec.attempt < spec.max_retries
            {
                // The raylet's retry of a panicking task, here.
                spec.attempt += 1;
                if let Some(back) = h.push(spec) {
                    spill.push(back);
                }
                None
            } else {
                h.settle(Instant::now(), waiting);
                if h.revoked {
                    give_back(core, shape, lease);
                    let pending = &core.leases.pending;
                    shape.after_return(core, key, &mut inner.asked, pending, &mut spill);
                } else {
                    h.idle_since = Some(Instant::now());
                    shape.pump();
                }
                (!cancelled).then_some(outcome)
            };
            send_all(core, spill);
            deliver
        };
        if let Some(outcome) = deliver {
            core.leases.ran.fetch_add(1, Ordering::Relaxed);
            core.finish(task_id.result(), outcome);
        }
    }
    // LO-4: broken (or given back, when it is no longer held).
    let mut spill = Spill::new();
    {
        let mut g = core.leases.lock();
        let inner = &mut *g;
        let Some(shape) = inner.shapes.get_mut(key) else {
            return;
        };
        let Some(i) = shape.held.iter().position(|h| h.lease == lease) else {
            return;
        };
        let h = shape.held.remove(i);
        let tasks: Vec<TaskSpec> = h
            .busy
            .into_iter()
            .filter(|(_, cancelled)| !cancelled)
            .map(|(t, _)| t)
            .collect();
        let _ = core.send(&LocalRequest::LeaseLost { lease, tasks });
        shape.pump();
        let pending = &core.leases.pending;
        shape.after_return(core, key, &mut inner.asked, pending, &mut spill);
        send_all(core, spill);
    }
}
