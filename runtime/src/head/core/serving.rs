//! Serving's rows: what each namespace's serve controller last reported
//! (its applications, deployments and replicas), for the dashboard's Serve
//! page. In memory only: controllers report when their status changes
//! (at least every 5 s), and again after a head's restart. A report is
//! judged as the controller's job (`access.rs`, `gate_job`): its owner must
//! be allowed to create actors in the namespace it reports for. Listings
//! are scoped by namespace (AC-4). Invariants:
//!
//! - **SV-1** of a namespace's reports, the newest by `order` (controller
//!   start, then number) wins, whatever order they arrive in: a status
//!   sent before serving ended never brings its row back;
//! - **SV-3** only the namespace's live serve controller reports for it:
//!   the worker of the actor named [`CONTROLLER_NAME`] in that namespace
//!   (its raylet names the actor), so no other job of the namespace can
//!   forge or end its row;
//! - **SV-2** rows are bounded: at most [`MAX_SERVE_ROWS`] namespaces of at
//!   most [`MAX_SERVE_STATUS`] bytes each, and a row not reported for
//!   [`SERVE_ROW_TTL_MS`] (its controller killed, or its node gone) goes.

use super::{Clock, HeadCore};
use crate::head::access::users::valid_namespace;
use crate::proto::head::ActorState;
use crate::proto::head::{ErrorKind, HeadRequest, HeadResponse};
use crate::proto::serving::{ServeRow, CONTROLLER_NAME};

/// The largest status a controller may report (its JSON text).
pub const MAX_SERVE_STATUS: usize = 256 << 10;
/// The most namespaces with serving rows.
pub const MAX_SERVE_ROWS: usize = 200;
/// How long a row lasts without a report.
pub const SERVE_ROW_TTL_MS: u64 = 10 * 60 * 1000;

/// Serving's rows, and the order of the last report of each namespace
/// (an ended one included).
#[derive(Debug, Default)]
pub struct Serving {
    rows: std::collections::BTreeMap<String, ServeRow>,
    last: std::collections::BTreeMap<String, (u64, u64)>,
}

impl HeadCore {
    /// `ReportServe` and `ListServe`.
    pub(super) fn serving_request(&mut self, now: Clock, req: HeadRequest) -> HeadResponse {
        let bad = |message: String| HeadResponse::Error {
            kind: ErrorKind::BadRequest,
            message,
        };
        // SV-3: from the namespace's live controller only.
        if let HeadRequest::ReportServe(r) = &req {
            let controller = r
                .actor_id
                .and_then(|a| self.actors.get(a))
                .is_some_and(|a| {
                    a.name.as_deref() == Some(CONTROLLER_NAME)
                        && a.namespace == r.namespace
                        && a.state != ActorState::Dead
                });
            if !controller {
                return bad(format!(
                    "only the serve controller (actor {CONTROLLER_NAME} in namespace {}) reports \
                     its serving",
                    r.namespace
                ));
            }
        }
        let s = &mut self.serving;
        // SV-2: rows nobody reports for go.
        s.rows
            .retain(|_, r| now.wall_ms.saturating_sub(r.updated_ms) < SERVE_ROW_TTL_MS);
        match req {
            HeadRequest::ReportServe(r) if r.status.len() > MAX_SERVE_STATUS => bad(format!(
                "a serving status of {} bytes is over the {MAX_SERVE_STATUS}-byte limit",
                r.status.len()
            )),
            HeadRequest::ReportServe(r) if !valid_namespace(&r.namespace) || r.namespace == "*" => {
                bad(format!(
                    "invalid namespace {:?} for a serving report",
                    r.namespace
                ))
            }
            // SV-1: an older report than one already taken changes nothing.
            HeadRequest::ReportServe(r)
                if s.last.get(&r.namespace).is_some_and(|l| *l >= r.order) =>
            {
                HeadResponse::Ok
            }
            HeadRequest::ReportServe(r)
                if !s.rows.contains_key(&r.namespace)
                    && s.rows.len() >= MAX_SERVE_ROWS
                    && !r.ended =>
            {
                bad(format!(
                    "serving is reported for {MAX_SERVE_ROWS} namespaces already"
                ))
            }
            HeadRequest::ReportServe(r) => {
                if s.last.len() >= 4 * MAX_SERVE_ROWS && !s.last.contains_key(&r.namespace) {
                    let rows = &s.rows;
                    s.last.retain(|ns, _| rows.contains_key(ns));
                }
                s.last.insert(r.namespace.clone(), r.order);
                if r.ended {
                    s.rows.remove(&r.namespace);
                } else {
                    let row = ServeRow {
                        namespace: r.namespace.clone(),
                        job_id: r.job_id,
                        status: r.status,
                        updated_ms: now.wall_ms,
                    };
                    s.rows.insert(r.namespace, row);
                }
                HeadResponse::Ok
            }
            HeadRequest::ListServe => HeadResponse::Serve(s.rows.values().cloned().collect()),
            other => bad(format!(
                "not a serving request: {}",
                super::names::request_name(&other)
            )),
        }
    }
}
