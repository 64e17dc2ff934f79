//! Serving's state on the head: each namespace's serve controller reports
//! its applications, deployments and replicas (through its raylet,
//! [`super::task::LocalRequest::ReportServe`]) so that the dashboard's
//! Serve page shows them without calling any actor. Kept in the head's
//! memory only: a controller reports again within seconds of a head's
//! restart.

use crate::ids::{ActorId, JobId};
use rkyv::{Archive, Deserialize, Serialize};

/// The serve controller's actor name, in each namespace that serves: only
/// that live actor reports its namespace's serving.
pub const CONTROLLER_NAME: &str = "prism-serve";

/// What a namespace's controller reports.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ServeReport {
    /// The controller's job (the raylet names the reporting connection's).
    pub job_id: JobId,
    /// The actor the reporting worker hosts (the raylet names it; `None`
    /// for a driver).
    pub actor_id: Option<ActorId>,
    /// The controller's namespace.
    pub namespace: String,
    /// What `prism serve status --json` prints (JSON text).
    pub status: String,
    /// Serving was shut down in that namespace: its row goes.
    pub ended: bool,
    /// When the reporting controller started (Unix ms) and its report's
    /// number: the head keeps the newest of each namespace's reports,
    /// whatever order they arrive in.
    pub order: (u64, u64),
}

/// One namespace's serving, as last reported.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServeRow {
    /// The namespace.
    pub namespace: String,
    /// The controller's job.
    pub job_id: JobId,
    /// The controller's status (JSON text).
    pub status: String,
    /// When it was reported (Unix ms, the head's clock).
    pub updated_ms: u64,
}
