//! Placement-group requests in the head core: create, get, list, remove,
//! and waits that answer when the group settles or at their deadline. The
//! reservation itself is [`super::placement`]'s.

use super::placement::{settled, Waiter, MAX_WAIT};
use super::{bad, Clock, Effect, HeadCore, Reply};
use crate::ids::PlacementGroupId;
use crate::proto::head::HeadResponse;
use crate::proto::placement::{BundleOp, PgRequest};
use std::time::Duration;

impl HeadCore {
    pub(super) fn pg_request(&mut self, now: Clock, req: PgRequest) -> Reply {
        let reply = match req {
            PgRequest::Create(c) => {
                let pg = c.pg;
                match self.groups.create(c) {
                    Ok(()) => {
                        self.placing.nudge();
                        self.placement_step(now);
                        HeadResponse::PlacementGroup(self.groups.get(pg).cloned())
                    }
                    Err(e) => bad(e),
                }
            }
            PgRequest::Get { pg } => HeadResponse::PlacementGroup(self.groups.get(pg).cloned()),
            PgRequest::List => HeadResponse::PlacementGroups(self.groups.list()),
            PgRequest::Remove { pg } => match self.remove_group(now, pg, "removed by its owner") {
                Ok(()) => HeadResponse::Ok,
                Err(e) => bad(e),
            },
            PgRequest::Wait { pg, timeout_ms } => {
                let settled_now = self.groups.get(pg).is_some_and(|g| settled(g.state));
                if settled_now || timeout_ms == 0 {
                    self.waited(pg)
                } else {
                    let id = self.placing.next_waiter;
                    self.placing.next_waiter += 1;
                    let limit = Duration::from_millis(timeout_ms).min(MAX_WAIT);
                    self.placing.waiters.push(Waiter {
                        id,
                        pg,
                        deadline: now.at + limit,
                    });
                    return Reply::Later(id);
                }
            }
        };
        Reply::Now(reply)
    }

    /// The answer to a wait on `pg`: the group, and its job's other groups
    /// created recently.
    fn waited(&self, pg: PlacementGroupId) -> HeadResponse {
        HeadResponse::PlacementGroupWaited {
            group: self.groups.get(pg).cloned(),
            also_created: self.groups.recent_created(pg),
        }
    }

    /// Removes a group (PG-2); its bundles are given back by the next pass.
    pub(super) fn remove_group(
        &mut self,
        now: Clock,
        pg: PlacementGroupId,
        reason: &str,
    ) -> Result<(), String> {
        let nodes = self.groups.remove(pg, reason)?;
        for (node, addr) in nodes {
            let op = BundleOp::Return {
                pg,
                reason: reason.to_string(),
                only: Vec::new(),
            };
            self.placing.returns.push((node, addr, op));
        }
        self.placing.nudge();
        self.placement_step(now);
        Ok(())
    }

    pub(super) fn answer_waiters(&mut self, now: Clock) {
        let waiters = std::mem::take(&mut self.placing.waiters);
        for w in waiters {
            let done = self.groups.get(w.pg).is_some_and(|g| settled(g.state));
            if done || now.at >= w.deadline {
                let response = self.waited(w.pg);
                self.push(Effect::Answer {
                    waiter: w.id,
                    response,
                });
            } else {
                self.placing.waiters.push(w);
            }
        }
    }
}
