//! Training runs: per-step metrics, params and tags a trainer reports
//! (through its raylet, [`super::task::LocalRequest::ReportRun`]) to the
//! head, which keeps them durably (a durable head's `head.db`) for
//! `prism runs` and the dashboard's training page
//! ([`crate::head::run_table`]).

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
    /// Params to record (a later value of a key replaces the earlier).
    pub params: Vec<(String, String)>,
    /// Tags to set (likewise).
    pub tags: Vec<(String, String)>,
    /// The run ended: `finished` or `failed: why`.
    pub ended: Option<String>,
}

impl RunReport {
    /// A report of new points only.
    pub fn points(run_id: &str, name: &str, job_id: JobId, points: Vec<RunPoint>) -> RunReport {
        RunReport {
            run_id: run_id.to_string(),
            name: name.to_string(),
            job_id,
            points,
            params: Vec::new(),
            tags: Vec::new(),
            ended: None,
        }
    }
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
    /// Its params (config, scaling, data, code), sorted by key.
    pub params: Vec<(String, String)>,
    /// Its tags, sorted by key.
    pub tags: Vec<(String, String)>,
    /// `running`, `finished` or `failed: why`.
    pub status: String,
}
