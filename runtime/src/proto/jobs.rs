//! Jobs as the head's protocol carries them: a submission, and a row of
//! the job table with its state (re-exported by [`super::head`]).

use super::common::Resources;
use rkyv::{Archive, Deserialize, Serialize};

/// A job to run from an uploaded binary.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct JobSubmission {
    /// SHA-256 of an uploaded binary.
    pub hash: [u8; 32],
    /// The binary's file name, for display.
    pub name: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// The namespace it runs in (empty: the submitter's first).
    pub namespace: String,
    /// What it will use (CPU, GPU, memory, custom), held against its
    /// namespace's quota and the cluster's capacity while it runs.
    pub demand: Resources,
    /// Higher starts first.
    pub priority: i32,
    /// May be preempted (stopped and queued again) for a job of higher
    /// priority.
    pub spot: bool,
}

/// A job's state.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted, driver not started yet.
    Pending,
    /// The driver runs.
    Running,
    /// The driver exited with status 0.
    Succeeded,
    /// The driver exited otherwise, or could not start.
    Failed,
    /// Stopped by `prism job stop`.
    Stopped,
}

/// One row of the job table.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobInfo {
    /// The job.
    pub job_id: crate::ids::JobId,
    /// Its command line.
    pub entrypoint: String,
    /// Its state.
    pub state: JobState,
    /// Submitted with `prism submit` (its logs are kept by the head).
    pub submitted: bool,
    /// Driver pid, when known.
    pub pid: Option<u32>,
    /// Exit code, when exited.
    pub exit_code: Option<i32>,
    /// Why it failed or was stopped.
    pub message: Option<String>,
    /// Milliseconds since the epoch.
    pub start_ms: u64,
    /// Milliseconds since the epoch, when ended.
    pub end_ms: Option<u64>,
    /// Who started it (`admin` for the join token's holder).
    pub owner: String,
    /// Its namespace.
    pub namespace: String,
    /// What it declared it uses (held against its namespace's quota).
    pub demand: Resources,
    /// Its priority in the queue.
    pub priority: i32,
    /// Whether it may be preempted.
    pub spot: bool,
}
