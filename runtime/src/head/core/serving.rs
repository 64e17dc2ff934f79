//! Serving's rows: what each namespace's serve controller last reported
//! (its applications, deployments and replicas), for the dashboard's Serve
//! page. In memory only: controllers report every second or so, and again
//! after a head's restart. A report is judged as the controller's job
//! (`access.rs`, `gate_job`): its owner must be allowed to create actors in
//! the namespace it reports for. Listings are scoped by namespace (AC-4).

use super::{Clock, HeadCore};
use crate::proto::head::{ErrorKind, HeadRequest, HeadResponse};
use crate::proto::serving::ServeRow;

/// The largest status a controller may report (its JSON text).
pub const MAX_SERVE_STATUS: usize = 1 << 20;

impl HeadCore {
    /// `ReportServe` and `ListServe`.
    pub(super) fn serving_request(&mut self, now: Clock, req: HeadRequest) -> HeadResponse {
        match req {
            HeadRequest::ReportServe(r) if r.status.len() > MAX_SERVE_STATUS => {
                HeadResponse::Error {
                    kind: ErrorKind::BadRequest,
                    message: format!(
                        "a serving status of {} bytes is over the {MAX_SERVE_STATUS}-byte limit",
                        r.status.len()
                    ),
                }
            }
            HeadRequest::ReportServe(r) if r.ended => {
                self.serving.remove(&r.namespace);
                HeadResponse::Ok
            }
            HeadRequest::ReportServe(r) => {
                let row = ServeRow {
                    namespace: r.namespace.clone(),
                    job_id: r.job_id,
                    status: r.status,
                    updated_ms: now.wall_ms,
                };
                self.serving.insert(r.namespace, row);
                HeadResponse::Ok
            }
            HeadRequest::ListServe => HeadResponse::Serve(self.serving.values().cloned().collect()),
            other => HeadResponse::Error {
                kind: ErrorKind::BadRequest,
                message: format!(
                    "not a serving request: {}",
                    super::names::request_name(&other)
                ),
            },
        }
    }
}
