//! Training runs: per-step metrics a trainer reports (through its raylet,
//! [`super::task::LocalRequest::ReportRun`]) to the head, which keeps them
//! for the dashboard's training page ([`crate::head::run_table`]).

use crate::ids::JobId;
use rkyv::{Archive, Deserialize, Serialize};

/// One step of a run.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunPoint {
    /// The global step.
    pub step: u64,
    /// Named values (loss, accuracy, ...).
    pub values: Vec<(String, f64)>,
    /// Seconds since the run's loop started.
    pub seconds: f64,
}

/// New points of a run.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RunReport {
    /// The run (unique per training run).
    pub run_id: String,
    /// What it trains (the loop's name).
    pub name: String,
    /// The job running it.
    pub job_id: JobId,
    /// Its new points, in step order.
    pub points: Vec<RunPoint>,
}

/// A run as the head lists it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunInfo {
    /// The run.
    pub run_id: String,
    /// What it trains.
    pub name: String,
    /// Its job.
    pub job_id: JobId,
    /// Points reported.
    pub points: u64,
    /// Its last step.
    pub last_step: u64,
    /// That step's values.
    pub last_values: Vec<(String, f64)>,
    /// When the head first heard of it (Unix ms).
    pub started_ms: u64,
    /// When it last reported (Unix ms).
    pub updated_ms: u64,
}
