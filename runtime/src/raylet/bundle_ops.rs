//! The raylet's side of the head's two-phase bundle protocol: applies a
//! [`BundleOp`] to the dispatcher and answers with what is free afterwards
//! (refusing those meant for another incarnation of this node, DF-6); and
//! the requests it relays to the head for its drivers and workers.

use super::dispatch::fence::{self, BundleRefusal};
use super::service::TaskService;
use crate::client::ClientError;
use crate::ids::NodeId;
use crate::proto::common::Resources;
use crate::proto::head::{HeadRequest, HeadResponse};
use crate::proto::placement::{BundleOp, BundleReply};
use crate::proto::task::{Failure, Outcome};
use crate::raylet::dispatch::{Action, Owner};
use std::sync::Arc;
use tracing::{info, warn};

/// DF-6: how long bundle operations for an id this raylet does not know
/// yet wait for it to become its own: well inside the head's call
/// deadline (`raylet_rpc_timeout_ms`, 5 s by default), so that what it
/// prepares is answered. (A prepare the head got no answer for is given
/// back all the same.)
const BUNDLE_NEXT_ID_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl TaskService {
    /// Prepares, commits or returns bundles meant for node `to` (see
    /// [`BundleOp`]), in order. Work for an id this raylet does not know
    /// yet may be for its next one (the head placed them before the
    /// registration's answer arrived): it waits for it, at most
    /// `BUNDLE_NEXT_ID_WAIT`.
    pub async fn bundle_ops(self: &Arc<Self>, to: NodeId, ops: Vec<BundleOp>) -> Vec<BundleReply> {
        if !self.is_me(to) && self.peers.lost_reason(to).is_none() {
            self.became(to, BUNDLE_NEXT_ID_WAIT).await;
        }
        ops.into_iter().map(|op| self.bundle_op(to, op)).collect()
    }

    /// Applies one operation meant for node `to`. DF-6: judged in the
    /// dispatcher's turn, so a fence comes wholly before it (refused: the
    /// head places that node's bundles elsewhere) or wholly after (which
    /// gives back what it reserved).
    fn bundle_op(self: &Arc<Self>, to: NodeId, op: BundleOp) -> BundleReply {
        let mut d = self.disp();
        let me = self.node();
        let earlier = to != me && self.is_me(to);
        let is_return = matches!(op, BundleOp::Return { .. });
        match fence::bundle_refusal(is_return, to, me, earlier, self.peers.lost_reason(to)) {
            None => {}
            Some(BundleRefusal::Done) => {
                return BundleReply::Done {
                    available: Resources::from(d.available()),
                }
            }
            Some(BundleRefusal::Refused(reason)) => {
                warn!(%to, %me, "refused bundles meant for another incarnation: {reason}");
                d.count_refused();
                return BundleReply::Refused { reason };
            }
        }
        let mut asked = (None, Vec::new());
        let result = match op {
            BundleOp::Prepare {
                pg,
                bundles,
                commit,
            } => {
                let bundles: Vec<_> = bundles
                    .into_iter()
                    .map(|b| (b.index, b.resources.to_set()))
                    .collect();
                asked = (Some(pg), bundles.clone());
                d.prepare_bundles(pg, bundles, commit)
            }
            BundleOp::Commit { pg } => d.commit_bundles(pg),
            BundleOp::Return { pg, reason, only } => {
                info!(%pg, %reason, "returning placement-group bundles");
                Ok(d.return_bundles(pg, &only, &reason))
            }
        };
        let available = Resources::from(d.available());
        match result {
            Ok(actions) => {
                self.apply(actions);
                drop(d);
                BundleReply::Done { available }
            }
            Err(reason) => {
                // L-3: leases held here give their resources back.
                let revoke = match asked {
                    (Some(pg), bundles) => {
                        d.bundle_refused(pg, &bundles, std::time::Instant::now())
                    }
                    (None, _) => Vec::new(),
                };
                self.apply(revoke);
                drop(d);
                BundleReply::Refused { reason }
            }
        }
    }

    /// Relays a request from a local driver or worker to the head; the
    /// head's answer comes back as the result of `request_id`.
    pub(super) fn relay_head_request(
        self: &Arc<Self>,
        owner: Owner,
        request_id: crate::ids::TaskId,
        request: HeadRequest,
        what: &'static str,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let outcome = match me.ask_head(&request).await {
                Ok(resp) => answer_outcome(&resp),
                Err(e) => Outcome::Failed(Failure::HeadUnreachable {
                    detail: format!("{what} request: {e}"),
                }),
            };
            me.apply(vec![Action::Reply {
                owner,
                task_id: request_id,
                outcome,
            }]);
        });
    }

    /// A kill through an actor's handle (`prism::kill`) by a process of
    /// `job`: relayed to the head, which judges it as the job's owner;
    /// once allowed, the kill goes to the actor (here or on its node)
    /// before the answer goes back, so what the caller does next comes
    /// after it.
    pub(super) fn kill_if_allowed(
        self: &Arc<Self>,
        owner: Owner,
        request_id: crate::ids::TaskId,
        job: Option<crate::ids::JobId>,
        (actor_id, no_restart): (crate::ids::ActorId, bool),
    ) {
        let request = HeadRequest::Relayed {
            job,
            request: crate::proto::head::RelayedRequest::KillActor {
                actor_id,
                no_restart,
            },
        };
        let me = self.clone();
        tokio::spawn(async move {
            let outcome = match me.ask_head(&request).await {
                Ok(resp) => {
                    if matches!(resp, HeadResponse::Ok) {
                        let kill = super::dispatch::kill_call(actor_id, no_restart);
                        me.act(|d| d.submit(kill, owner));
                    }
                    answer_outcome(&resp)
                }
                Err(e) => Outcome::Failed(Failure::HeadUnreachable {
                    detail: format!("kill request: {e}"),
                }),
            };
            me.apply(vec![Action::Reply {
                owner,
                task_id: request_id,
                outcome,
            }]);
        });
    }

    /// The head's answer to `request`; its refusal is an answer too (the
    /// caller reads why).
    async fn ask_head(&self, request: &HeadRequest) -> Result<HeadResponse, ClientError> {
        match self.transfer.head_request(request).await {
            Err(ClientError::Refused { kind, message }) => {
                Ok(HeadResponse::Error { kind, message })
            }
            other => other,
        }
    }

    /// Answers a local request with `answer` now, as the result of
    /// `request_id` (as [`TaskService::relay_head_request`] does with the
    /// head's).
    pub(super) fn reply_now(
        self: &Arc<Self>,
        owner: Owner,
        request_id: crate::ids::TaskId,
        answer: &HeadResponse,
    ) {
        self.apply(vec![Action::Reply {
            owner,
            task_id: request_id,
            outcome: answer_outcome(answer),
        }]);
    }
}

fn answer_outcome(answer: &HeadResponse) -> Outcome {
    match rkyv::to_bytes::<rkyv::rancor::Error>(answer) {
        Ok(b) => Outcome::Inline(b.to_vec()),
        Err(e) => Outcome::Failed(Failure::BadCall {
            detail: e.to_string(),
        }),
    }
}
