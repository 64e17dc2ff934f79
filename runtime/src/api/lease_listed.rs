//! LO-7: the tasks waiting here for leases are listed to the raylet, so
//! that `prism list tasks` and the dashboard show them queued (TH-4 in
//! `raylet/task_history.rs`) rather than not at all: the sweeper, which
//! runs while any wait, sends a snapshot of the first
//! [`MAX_WAITING`] at most every [`LIST_EVERY`], and an empty one once
//! none waits after some were listed. A task is listed at most
//! [`LIST_EVERY`] (plus a sweep) after it began to wait, and stays listed
//! at most that long after it left (its worker's own report of it, or the
//! raylet's record once it went there, wins meanwhile).

use super::{Inner, Instant};
use crate::proto::direct::{OwnerWaiting, TaskEvent};
use crate::raylet::task_history::MAX_WAITING;
use std::time::Duration;

/// How often the snapshot is sent while tasks wait.
pub(super) const LIST_EVERY: Duration = Duration::from_millis(500);

impl Inner {
    /// The snapshot to send now, if one is due (LO-7); `now_or_never`:
    /// the sweeper stops after this one, so it is due whatever the time.
    pub(super) fn waiting_list(
        &mut self,
        now: Instant,
        now_or_never: bool,
    ) -> Option<OwnerWaiting> {
        let waiting = self.shapes.values().any(|s| !s.queue.is_empty());
        if !waiting && !self.listed_any {
            return None;
        }
        let recent = self.listed_at.is_some_and(|t| now - t < LIST_EVERY);
        if recent && !now_or_never {
            return None;
        }
        let tasks: Vec<TaskEvent> = self
            .shapes
            .values()
            .flat_map(|s| s.queue.iter())
            .take(MAX_WAITING)
            .map(|spec| TaskEvent::arrived(spec, 0))
            .collect();
        self.listed_at = Some(now);
        self.listed_any = !tasks.is_empty();
        Some(OwnerWaiting { tasks })
    }
}
