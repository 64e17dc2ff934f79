//! Where work goes: a submitted task is placed by the policy (here, on a
//! peer, or parked when no node can run it, D-5), queued work is dispatched
//! when it fits and spilled back when a peer has room first.

use super::{reply_failed, Action, Dispatcher, Owner, Queued};
use crate::ids::NodeId;
use crate::proto::task::{Failure, Outcome, TaskKind, TaskSpec, WireStrategy};
use prism_scheduler::{Decision, Strategy};

impl Dispatcher {
    /// A task arrives from `owner`.
    pub fn submit(&mut self, spec: TaskSpec, owner: Owner) -> Vec<Action> {
        if let TaskKind::ActorCall(call) = &spec.kind {
            let actor = call.actor_id;
            return self.submit_call(actor, spec, owner);
        }
        let request = spec.resources.to_set();
        let mut out = Vec::new();
        if let WireStrategy::Bundle { pg, node, .. } = spec.strategy {
            let q = Queued {
                spec,
                owner,
                request,
            };
            if node != self.me {
                self.forward_to(node, q, &mut out);
                return out;
            }
            if let Err(detail) = self.bundle_check(&q) {
                if let TaskKind::CreateActor(c) = &q.spec.kind {
                    let why = format!("placement group {pg}: {detail}");
                    out.extend(self.actor_registration_failed(c.actor_id, why));
                }
                let outcome = Outcome::Failed(Failure::PlacementGroupGone { pg, detail });
                out.push(Action::Reply {
                    owner: q.owner,
                    task_id: q.spec.task_id,
                    outcome,
                });
                return out;
            }
            if let TaskKind::CreateActor(c) = &q.spec.kind {
                self.pre_waiting.entry(c.actor_id).or_default();
            }
            self.queue.push_back(q.class(), q);
            self.pump(&mut out);
            return out;
        }
        let strategy = match spec.strategy.to_strategy() {
            Ok(s) => s,
            Err(why) => {
                out.push(reply_failed(
                    owner,
                    &spec,
                    Failure::Infeasible { reason: why },
                ));
                return out;
            }
        };
        let q = Queued {
            spec,
            owner,
            request,
        };
        self.place(q, &strategy, None, &mut out);
        out
    }

    /// Sends `q` where the policy says: to a peer, into the local queue, or
    /// (no node can run it now) parked or failed (D-5). `parked_since` is
    /// set when `q` comes back from the parked list.
    pub(super) fn place(
        &mut self,
        q: Queued,
        strategy: &Strategy<NodeId>,
        parked_since: Option<Option<std::time::Instant>>,
        out: &mut Vec<Action>,
    ) {
        let request = &q.request;
        // DR-1: a peer that has not yet heard of the drain spilled a task
        // here: it places it again elsewhere.
        if let (true, Some(reason), TaskKind::Task) = (q.spec.spilled, &self.draining, &q.spec.kind)
        {
            let why = Failure::Draining {
                node: self.me,
                reason: reason.clone(),
            };
            out.push(reply_failed(q.owner, &q.spec, why));
            return;
        }
        // A spilled task stays here unless this node can never run it.
        let decision = if q.spec.spilled {
            if self.local.feasible(request) {
                Decision::Queue(self.me)
            } else {
                let why = request
                    .first_shortfall(self.local.total())
                    .map(|(r, asked, has)| format!("no node has {asked} {r} (this one has {has})"))
                    .unwrap_or_else(|| format!("this node cannot hold {request}"));
                Decision::Infeasible(prism_scheduler::Infeasible::InvalidRequest(why))
            }
        } else {
            self.view_with_me();
            self.policy
                .decide(&self.view, request, strategy, Some(self.me))
        };
        match decision {
            Decision::Place(n) | Decision::Queue(n) if n != self.me => self.forward_to(n, q, out),
            Decision::Place(_) | Decision::Queue(_) => {
                if let TaskKind::CreateActor(c) = &q.spec.kind {
                    self.pre_waiting.entry(c.actor_id).or_default();
                }
                self.queue.push_back(q.class(), q);
                self.pump(out);
            }
            Decision::Infeasible(why) => {
                let reason = match why {
                    prism_scheduler::Infeasible::InvalidRequest(w) => w,
                    other => other.to_string(),
                };
                match parked_since {
                    Some(since) => self.keep_parked(q, reason, since),
                    None if q.spec.spilled
                        || q.spec.fail_if_infeasible
                        || self.infeasible_timeout.is_zero() =>
                    {
                        self.fail_infeasible(q, reason, out)
                    }
                    None => self.park(q, reason, out),
                }
            }
        }
    }

    /// Fails work no node can run, and the actor it would have created.
    pub(super) fn fail_infeasible(&mut self, q: Queued, reason: String, out: &mut Vec<Action>) {
        if let TaskKind::CreateActor(c) = &q.spec.kind {
            out.extend(
                self.actor_registration_failed(c.actor_id, format!("it is infeasible: {reason}")),
            );
        }
        out.push(reply_failed(
            q.owner,
            &q.spec,
            Failure::Infeasible { reason },
        ));
    }

    pub(super) fn forward_to(&mut self, node: NodeId, mut q: Queued, out: &mut Vec<Action>) {
        q.spec.spilled = true;
        // Assume the peer takes it, until its next report says otherwise.
        let _ = self.view.allocate(node, &q.request);
        let created = match &q.spec.kind {
            TaskKind::CreateActor(c) => Some(c.actor_id),
            _ => None,
        };
        out.push(Action::Forward {
            node,
            owner: q.owner,
            task: q.spec,
        });
        if let Some(actor) = created {
            self.calls_follow_actor(actor, out);
        }
    }

    /// Dispatches what fits now; spills back what waits here but fits
    /// elsewhere. One check per class: behind a head that cannot run, the
    /// rest of its class cannot either.
    pub(super) fn pump(&mut self, out: &mut Vec<Action>) {
        self.pump_with(false, out);
    }

    /// [`Dispatcher::pump`]; with `respill` (a fresh view), work spilled
    /// here may move on too (D-6).
    pub(super) fn pump_with(&mut self, respill: bool, out: &mut Vec<Action>) {
        for i in 0..self.queue.class_count() {
            while let Some(q) = self.queue.front(i) {
                if super::lease::is_lease(q) {
                    if self.lease_at_front(i, out) {
                        continue;
                    }
                    break;
                }
                if self.fits(&q.spec.strategy, &q.request) && self.open_to(q) {
                    let q = self.queue.pop_front(i).expect("front exists");
                    self.dispatch(q, out);
                    continue;
                }
                let target = if q.spec.spilled && !(respill && may_go_back(&q.spec)) {
                    None
                } else {
                    let q = q.clone();
                    self.spill_target(&q)
                };
                match target {
                    Some(node) => {
                        let q = self.queue.pop_front(i).expect("front exists");
                        if q.spec.spilled {
                            self.hand_back(q, out);
                        } else {
                            self.forward_to(node, q, out);
                        }
                    }
                    None => break,
                }
            }
        }
        self.queue.compact();
        self.revoke_leases(out);
    }

    /// D-6: work spilled here on a stale view goes back to its sender.
    fn hand_back(&mut self, q: Queued, out: &mut Vec<Action>) {
        if let TaskKind::CreateActor(c) = &q.spec.kind {
            self.calls_follow_actor(c.actor_id, out);
        }
        out.push(reply_failed(
            q.owner,
            &q.spec,
            Failure::Moved { node: self.me },
        ));
    }

    /// D-6: a peer handed back a task this node spilled to it; it is placed
    /// again with this node's view, as new (no attempt is spent).
    pub fn handed_back(&mut self, owner: Owner, mut task: TaskSpec) -> Vec<Action> {
        task.spilled = false;
        self.submit(task, owner)
    }

    pub(super) fn spill_target(&mut self, q: &Queued) -> Option<NodeId> {
        let strategy = q.spec.strategy.to_strategy().ok()?;
        if matches!(strategy, Strategy::NodeAffinity { soft: false, .. }) {
            return None;
        }
        self.view_with_me();
        match self
            .policy
            .decide(&self.view, &q.request, &strategy, Some(self.me))
        {
            Decision::Place(n) if n != self.me => Some(n),
            _ => None,
        }
    }

    /// A forwarded task came back from a node being drained (DR-1): that
    /// node takes no new work; place the task again, as new (no attempt is
    /// spent).
    pub fn redirect(&mut self, node: NodeId, owner: Owner, task: TaskSpec) -> Vec<Action> {
        self.view.set_alive(node, false);
        self.handed_back(owner, task)
    }

    /// A forwarded task's peer failed: retry (anywhere) or fail with the cause.
    pub fn forward_failed(
        &mut self,
        node: NodeId,
        owner: Owner,
        mut task: TaskSpec,
        detail: String,
    ) -> Vec<Action> {
        self.view.set_alive(node, false);
        if task.attempt < task.max_retries {
            task.attempt += 1;
            task.spilled = false;
            return self.submit(task, owner);
        }
        vec![Action::Reply {
            owner,
            task_id: task.task_id,
            outcome: Outcome::Failed(Failure::NodeDied { node, detail }),
        }]
    }
}

/// D-6: whether spilled work may go back to its sender: not an actor's
/// restart, which the head placed and waits for.
pub(super) fn may_go_back(spec: &TaskSpec) -> bool {
    !matches!(&spec.kind, TaskKind::CreateActor(c) if c.restarts > 0)
}
