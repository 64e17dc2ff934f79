//! The raylet's side of the head's two-phase bundle protocol: applies a
//! [`BundleOp`] to the dispatcher and answers with what is free afterwards.

use super::service::TaskService;
use crate::proto::head::HeadRequest;
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
            // The head's refusal is its answer (the caller reads why).
            let answer = match me.transfer.head_request(&request).await {
                Err(crate::client::ClientError::Refused { kind, message }) => {
                    Ok(crate::proto::head::HeadResponse::Error { kind, message })
                }
                other => other,
            };
            let outcome = match answer {
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

    /// Answers a local request with `answer` now, as the result of
    /// `request_id` (as [`TaskService::relay_head_request`] does with the
    /// head's).
    pub(super) fn reply_now(
        self: &Arc<Self>,
        owner: Owner,
        request_id: crate::ids::TaskId,
        answer: &crate::proto::head::HeadResponse,
    ) {
        self.apply(vec![Action::Reply {
            owner,
            task_id: request_id,
            outcome: answer_outcome(answer),
        }]);
    }
}

fn answer_outcome(answer: &crate::proto::head::HeadResponse) -> Outcome {
    match rkyv::to_bytes::<rkyv::rancor::Error>(answer) {
        Ok(b) => Outcome::Inline(b.to_vec()),
        Err(e) => Outcome::Failed(Failure::BadCall {
            detail: e.to_string(),
        }),
    }
}
