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
    core.send(&LocalRequest::ReportRun(RunReport {
        run_id: run_id.to_string(),
        name: name.to_string(),
        job_id: core.job_id,
        points,
    }))
}
