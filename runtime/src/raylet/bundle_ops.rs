//! The raylet's side of the head's two-phase bundle protocol: applies a
//! [`BundleOp`] to the dispatcher and answers with what is free afterwards.

use super::task_server::TaskService;
use crate::proto::common::Resources;
use crate::proto::head::HeadRequest;
use crate::proto::placement::{BundleOp, BundleReply, PgRequest};
use crate::proto::task::{Failure, Outcome};
use crate::raylet::dispatch::{Action, Owner};
use std::sync::Arc;
use tracing::info;

impl TaskService {
    /// Prepares, commits or returns bundles (see [`BundleOp`]).
    pub fn bundle_op(self: &Arc<Self>, op: BundleOp) -> BundleReply {
        let mut d = self.disp();
        let result = match op {
            BundleOp::Prepare {
                pg,
                bundles,
                commit,
            } => {
                let bundles = bundles
                    .into_iter()
                    .map(|b| (b.index, b.resources.to_set()))
                    .collect();
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
            Err(reason) => BundleReply::Refused { reason },
        }
    }
}

impl TaskService {
    /// Relays a placement-group request from a local driver or worker to
    /// the head.
    pub(super) fn relay_pg_request(
        self: &Arc<Self>,
        owner: Owner,
        request_id: [u8; 16],
        request: PgRequest,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let outcome = match me
                .transfer
                .head_request(&HeadRequest::PlacementGroup(request))
                .await
            {
                Ok(resp) => match rkyv::to_bytes::<rkyv::rancor::Error>(&resp) {
                    Ok(b) => Outcome::Inline(b.to_vec()),
                    Err(e) => Outcome::Failed(Failure::BadCall {
                        detail: e.to_string(),
                    }),
                },
                Err(e) => Outcome::Failed(Failure::BadCall {
                    detail: format!("cannot reach the head: {e}"),
                }),
            };
            me.apply(vec![Action::Reply {
                owner,
                task_id: request_id,
                outcome,
            }]);
        });
    }
}
