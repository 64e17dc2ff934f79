//! The raylet's side of the head's two-phase bundle protocol: applies a
//! [`BundleOp`] to the dispatcher and answers with what is free afterwards.

use super::service::TaskService;
use crate::client::ClientError;
use crate::proto::head::{HeadRequest, HeadResponse};
use crate::proto::task::{Failure, Outcome};
use crate::raylet::dispatch::{Action, Owner};
use std::sync::Arc;

impl TaskService {
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
