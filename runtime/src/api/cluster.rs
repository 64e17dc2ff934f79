//! The cluster's state from any driver or worker (through its raylet to
//! the head): every node with its state, every training run with its
//! status. What `prism status` and `prism runs list` show, for programs
//! (the serve controller's alerts on dead nodes and failed runs read it).
//! And the one report serving makes: a namespace's serve controller's
//! status, for the dashboard's Serve page.

use super::core::current;
use super::error::{Error, Result};
use crate::proto::common::NodeStatus;
use crate::proto::head::HeadResponse;
use crate::proto::runs::RunInfo;
use crate::proto::task::{ClusterQuery, LocalRequest};
use std::time::Duration;

fn ask(query: ClusterQuery) -> Result<HeadResponse> {
    let core = current()?;
    let resp: HeadResponse =
        core.ask_raylet_quick("cluster state", Duration::from_secs(30), |request_id| {
            LocalRequest::Cluster { request_id, query }
        })?;
    match resp {
        HeadResponse::Error { message, .. } => Err(Error::ClusterState(message)),
        other => Ok(other),
    }
}

/// Every node the head knows, live or dead.
pub fn nodes() -> Result<Vec<NodeStatus>> {
    match ask(ClusterQuery::Status)? {
        HeadResponse::Status(s) => Ok(s.nodes),
        other => Err(Error::ClusterState(format!("unexpected answer {other:?}"))),
    }
}

/// Every training run, with its status (`running`, `finished`, `failed: why`).
pub fn runs() -> Result<Vec<RunInfo>> {
    match ask(ClusterQuery::Runs)? {
        HeadResponse::Runs(r) => Ok(r),
        other => Err(Error::ClusterState(format!("unexpected answer {other:?}"))),
    }
}

/// Reports the serving of this job's namespace (`PRISM_NAMESPACE`, else
/// `default`) to the head: `status` is what `prism serve status --json`
/// prints; `ended`, that serving was shut down there (its row goes).
/// Returns at once; the head judges it as this job (its owner must be
/// allowed to create actors in that namespace).
/// `order`: when the reporting controller started (Unix ms) and this
/// report's number, so the head keeps the newest. Used by `prism-serve`'s
/// controller.
#[doc(hidden)]
pub fn report_serving(status: String, ended: bool, order: (u64, u64)) -> Result<()> {
    let max = crate::head::core::serving::MAX_SERVE_STATUS;
    if status.len() > max {
        return Err(Error::ClusterState(format!(
            "a serving status of {} bytes is over the {max}-byte limit",
            status.len()
        )));
    }
    let core = current()?;
    core.send(&LocalRequest::ReportServe(
        crate::proto::serving::ServeReport {
            job_id: core.job_id,
            actor_id: None,
            namespace: super::masking::namespace(),
            status,
            ended,
            order,
        },
    ))
}
