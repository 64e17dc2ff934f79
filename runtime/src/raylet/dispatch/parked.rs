//! Work no node can run now (D-5). A cluster changes — nodes join, the
//! autoscaler adds them, a raylet's view of its peers is a heartbeat old —
//! so, like Ray, infeasible work waits instead of failing: it is reported as
//! infeasible demand, its owner is warned once per shape, the head is asked
//! for a fresh view at once, and every new view places what fits. It fails
//! with `Infeasible` only after the infeasible timeout, measured from the
//! first [`Dispatcher::tick`] that saw it.

use super::{reply_failed, Action, Dispatcher, Queued};
use crate::proto::task::{Failure, TaskKind};
use std::time::{Duration, Instant};

/// One parked piece of work.
#[derive(Debug, Clone)]
pub(super) struct Parked {
    pub(super) q: Queued,
    /// Why no node can run it (names the missing resource).
    pub(super) reason: String,
    /// When it was first parked, by the dispatcher's clock (`None` until
    /// the next tick).
    since: Option<Instant>,
}

impl Dispatcher {
    /// Parks new infeasible work: warns its owner (once per job and shape)
    /// and asks for a fresh view of the cluster.
    pub(super) fn park(&mut self, q: Queued, reason: String, out: &mut Vec<Action>) {
        if let TaskKind::CreateActor(c) = &q.spec.kind {
            self.pre_waiting.entry(c.actor_id).or_default();
        }
        if self.warned.insert((q.spec.job_id, q.request.to_string())) {
            let what = match &q.spec.kind {
                TaskKind::CreateActor(_) => "actor",
                _ => "task",
            };
            let message = format!(
                "{what} {:?} cannot be scheduled on any node now: {reason} (it asks for {}). \
                 It waits up to {} for a node that can run it to join, then fails with \
                 Infeasible (PRISM_INFEASIBLE_TIMEOUT_MS; or ask to fail at once with \
                 .fail_if_infeasible()).",
                q.spec.name,
                q.request,
                describe(self.infeasible_timeout),
            );
            tracing::warn!("{message}");
            out.push(Action::Warn {
                owner: q.owner,
                message,
            });
        }
        out.push(Action::RefreshView);
        let since = self.now;
        self.keep_parked(q, reason, since);
    }

    /// Keeps (or puts back) work on the parked list.
    pub(super) fn keep_parked(&mut self, q: Queued, reason: String, since: Option<Instant>) {
        self.parked.push(Parked { q, reason, since });
    }

    /// Tries every parked piece of work against the current view: what a
    /// node can run now is placed, the rest stays parked.
    pub(super) fn retry_parked(&mut self, out: &mut Vec<Action>) {
        for p in std::mem::take(&mut self.parked) {
            match p.q.spec.strategy.to_strategy() {
                Ok(strategy) => self.place(p.q, &strategy, Some(p.since), out),
                Err(reason) => out.push(reply_failed(
                    p.q.owner,
                    &p.q.spec,
                    Failure::Infeasible { reason },
                )),
            }
        }
    }

    /// Time passes: parked work that has waited the infeasible timeout fails.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        self.now = Some(now);
        let mut out = Vec::new();
        self.lease_tick(now, &mut out);
        let timeout = self.infeasible_timeout;
        let (expired, waiting): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.parked)
            .into_iter()
            .map(|mut p| {
                p.since.get_or_insert(now);
                p
            })
            .partition(|p| p.since.is_some_and(|s| now.duration_since(s) >= timeout));
        self.parked = waiting;
        for p in expired {
            let reason = format!(
                "{} (waited {} for a node that can run it)",
                p.reason,
                describe(timeout)
            );
            self.fail_infeasible(p.q, reason, &mut out);
        }
        out
    }
}

/// `1.5 s`, `60 s`.
fn describe(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}
