//! What a worker remembers of the work that reached it directly (direct
//! actor calls, leased tasks) and reports to its raylet in batches, a few
//! times a second ([`crate::proto::direct::TaskEvents`]), so that `prism
//! list tasks`, the dashboard and `prism timeline` list that work as they
//! list the raylet's own (like Ray's task events, which workers buffer and
//! flush to the GCS). The call path pays one small record per call; the
//! reporting runs on its own thread.
//!
//! Invariants:
//!
//! - **TE-1** every direct call or leased task that ends is reported once,
//!   listed or (when a batch is full) only counted;
//! - **TE-2** one still running at a flush is reported running once,
//!   before it is reported ended, and then always listed ended;
//! - **TE-3** (the raylet's side, `raylet/dispatch/pool.rs`) a worker whose
//!   lease ended is not trimmed for a second, so that the flush of what it
//!   ran last comes before it is killed.

use super::core::Core;
use crate::proto::direct::{TaskEvent, TaskEvents};
use crate::proto::task::{LocalRequest, Outcome, TaskSpec};
use crate::raylet::task_history::now_us;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How often a worker reports.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Ended work listed per batch (25,000 a second per worker); more is only
/// counted (TE-1). The raylet keeps 20,000 finished tasks by default, so
/// listing more would only churn its history.
const MAX_LISTED: usize = 5_000;

/// One call or task taken directly, until it ends.
#[derive(Debug)]
pub(super) struct Open {
    pub(super) event: TaskEvent,
    /// Reported running already (TE-2).
    reported: bool,
}

impl Open {
    /// `spec` has just arrived.
    pub(super) fn arrived(spec: &TaskSpec) -> Open {
        Open {
            event: TaskEvent::arrived(spec, now_us()),
            reported: false,
        }
    }

    /// It starts now.
    pub(super) fn start(&mut self) {
        self.event.started_us = Some(now_us());
    }
}

/// The ended work not yet reported.
#[derive(Debug, Default)]
pub(super) struct Events {
    pub(super) batch: Mutex<TaskEvents>,
    flusher: OnceLock<()>,
}

impl Events {
    /// `open` ended with `outcome` (TE-1); returns how long it ran, in
    /// microseconds (0 if it never started).
    pub(super) fn ended(&self, open: Open, outcome: &Outcome) -> u64 {
        // One reported running is always listed ended (TE-2), or the
        // raylet would list it running until its worker exits.
        let listed = open.reported;
        let mut event = open.event;
        let now = now_us();
        event.ended_us = Some(now);
        let ran_us = event.started_us.map_or(0, |s| now.saturating_sub(s));
        if let Outcome::Failed(f) = outcome {
            event.error = Some(f.summary());
        }
        let mut batch = self.batch.lock().unwrap_or_else(|p| p.into_inner());
        if listed || batch.events.len() < MAX_LISTED {
            batch.events.push(event);
        } else if event.error.is_some() {
            batch.unlisted_failed += 1;
        } else {
            batch.unlisted_finished += 1;
        }
        ran_us
    }

    /// Starts reporting (once per process).
    pub(super) fn start_flushing(&self, core: &Arc<Core>) {
        self.flusher.get_or_init(|| {
            let core = core.clone();
            let _ = std::thread::Builder::new()
                .name("prism-task-events".into())
                .spawn(move || loop {
                    std::thread::sleep(FLUSH_EVERY);
                    if !flush(&core) {
                        return;
                    }
                });
        });
    }
}

/// Reports what ended and what started since the last flush; `false` once
/// the raylet is gone.
fn flush(core: &Core) -> bool {
    let serve = &core.direct.serve;
    let mut batch =
        std::mem::take(&mut *serve.events.batch.lock().unwrap_or_else(|p| p.into_inner()));
    // Running ones, once (TE-2): after the ended ones taken above, so an
    // event ended meanwhile is not reported running after it ended.
    serve.each_open(|open| {
        if open.event.started_us.is_some() && !open.reported {
            open.reported = true;
            batch.events.push(open.event.clone());
        }
    });
    if batch.events.is_empty() && batch.unlisted_finished + batch.unlisted_failed == 0 {
        return true;
    }
    core.send(&LocalRequest::TaskEvents(batch)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{JobId, TaskId};
    use crate::proto::task::{Failure, TaskKind};

    fn open(i: u8) -> Open {
        let spec = TaskSpec::new(
            TaskId([i; 16]),
            JobId::random(),
            "m::f",
            "f",
            TaskKind::Task,
        );
        let mut o = Open::arrived(&spec);
        o.start();
        o
    }

    #[test]
    fn ended_work_is_listed_then_only_counted_when_the_batch_is_full_te1() {
        let events = Events::default();
        for i in 0..MAX_LISTED + 3 {
            let outcome = if i % 2 == 0 {
                Outcome::Inline(Vec::new())
            } else {
                Outcome::Failed(Failure::BadCall {
                    detail: "boom".into(),
                })
            };
            events.ended(open(i as u8), &outcome);
        }
        let batch = events.batch.lock().unwrap();
        assert_eq!(batch.events.len(), MAX_LISTED);
        assert_eq!(batch.unlisted_finished + batch.unlisted_failed, 3);
        let e = &batch.events[1];
        assert!(e.started_us.is_some() && e.ended_us >= e.started_us);
        assert!(e.error.as_deref().is_some_and(|m| m.contains("boom")));
        assert!(!e.actor_call && e.name == "f" && e.function == "m::f");
        drop(batch);
        // One reported running is listed ended even in a full batch (TE-2).
        let mut running = open(9);
        running.reported = true;
        events.ended(running, &Outcome::Inline(Vec::new()));
        assert_eq!(events.batch.lock().unwrap().events.len(), MAX_LISTED + 1);
    }
}
