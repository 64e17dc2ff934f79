//! Reporting a training run's per-step metrics to the head, where the
//! dashboard's training page plots them. `DdpTrainer` reports every step
//! of its runs; any training loop may call [`report_run`] itself.

use super::core::current;
use super::error::Result;
use crate::proto::runs::{RunPoint, RunReport};
use crate::proto::task::LocalRequest;

/// Sends new points of run `run_id` (training `name`) to the head, through
/// this process's raylet; returns at once. Steps must increase: points at
/// or before the run's last step are ignored (a resumed run may repeat).
pub fn report_run(run_id: &str, name: &str, points: Vec<RunPoint>) -> Result<()> {
    if points.is_empty() {
        return Ok(());
    }
    let core = current()?;
    core.send(&LocalRequest::ReportRun(RunReport::points(
        run_id,
        name,
        core.job_id,
        points,
    )))
}

/// Records params and tags of run `run_id` (training `name`): a later value
/// of a key replaces the earlier. Returns at once.
pub fn log_run_params(
    run_id: &str,
    name: &str,
    params: Vec<(String, String)>,
    tags: Vec<(String, String)>,
) -> Result<()> {
    let core = current()?;
    let mut r = RunReport::points(run_id, name, core.job_id, Vec::new());
    r.params = params;
    r.tags = tags;
    core.send(&LocalRequest::ReportRun(r))
}

/// Marks run `run_id` ended: `Ok(())` as `finished`, `Err(why)` as
/// `failed: why`.
pub fn end_run(run_id: &str, name: &str, outcome: std::result::Result<(), String>) -> Result<()> {
    let core = current()?;
    let mut r = RunReport::points(run_id, name, core.job_id, Vec::new());
    r.ended = Some(match outcome {
        Ok(()) => "finished".to_string(),
        Err(why) => format!("failed: {why}"),
    });
    core.send(&LocalRequest::ReportRun(r))
}
