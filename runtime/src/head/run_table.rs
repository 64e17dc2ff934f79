//! Training runs the head has heard of: each run's per-step metrics, as
//! its trainer reports them (`DdpTrainer` reports every step), for the
//! dashboard's training page. Pure and bounded.
//!
//! Invariants:
//!
//! - **RT-1** at most [`MAX_RUNS`] runs are kept; a new run beyond that
//!   replaces the one updated longest ago;
//! - **RT-2** a run keeps at most [`MAX_POINTS`] points: when full, every
//!   other point is dropped (the curve keeps its shape at half the
//!   resolution) and steps stay in increasing order.

use crate::proto::runs::{RunInfo, RunPoint, RunReport};
use std::collections::HashMap;

/// Most runs kept.
pub const MAX_RUNS: usize = 200;
/// Most points kept per run.
pub const MAX_POINTS: usize = 10_000;

#[derive(Debug, Clone)]
struct Run {
    info: RunInfo,
    points: Vec<RunPoint>,
}

/// The runs.
#[derive(Debug, Clone, Default)]
pub struct RunTable {
    runs: HashMap<String, Run>,
}

impl RunTable {
    /// Adds a report's points (steps not after the run's last are ignored:
    /// a resumed run reports from its checkpoint's step on).
    pub fn report(&mut self, r: RunReport, now_ms: u64) {
        if !self.runs.contains_key(&r.run_id) && self.runs.len() >= MAX_RUNS {
            if let Some(oldest) = self
                .runs
                .iter()
                .min_by_key(|(_, run)| run.info.updated_ms)
                .map(|(id, _)| id.clone())
            {
                self.runs.remove(&oldest);
            }
        }
        let run = self.runs.entry(r.run_id.clone()).or_insert_with(|| Run {
            info: RunInfo {
                run_id: r.run_id.clone(),
                name: r.name.clone(),
                job_id: r.job_id,
                points: 0,
                last_step: 0,
                last_values: Vec::new(),
                started_ms: now_ms,
                updated_ms: now_ms,
            },
            points: Vec::new(),
        });
        for p in r.points {
            if run.points.last().is_some_and(|last| p.step <= last.step) {
                continue;
            }
            run.info.last_step = p.step;
            run.info.last_values = p.values.clone();
            run.info.points += 1;
            run.points.push(p);
            if run.points.len() > MAX_POINTS {
                let (n, mut i) = (run.points.len(), 0);
                run.points.retain(|_| {
                    let keep = i % 2 == 1 || i == n - 1;
                    i += 1;
                    keep
                });
            }
        }
        run.info.updated_ms = now_ms;
    }

    /// Every run, most recently updated first.
    pub fn list(&self) -> Vec<RunInfo> {
        let mut v: Vec<RunInfo> = self.runs.values().map(|r| r.info.clone()).collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.updated_ms));
        v
    }

    /// One run's points.
    pub fn get(&self, run_id: &str) -> Option<(RunInfo, Vec<RunPoint>)> {
        self.runs
            .get(run_id)
            .map(|r| (r.info.clone(), r.points.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::JobId;

    fn report(id: &str, steps: std::ops::Range<u64>) -> RunReport {
        RunReport {
            run_id: id.into(),
            name: "mlp".into(),
            job_id: JobId::random(),
            points: steps
                .map(|s| RunPoint {
                    step: s,
                    values: vec![("loss".into(), 1.0 / (s as f64 + 1.0))],
                    seconds: s as f64,
                })
                .collect(),
        }
    }

    #[test]
    fn points_accumulate_and_repeated_steps_are_ignored() {
        let mut t = RunTable::default();
        t.report(report("r1", 1..4), 10);
        t.report(report("r1", 2..6), 20);
        let (info, points) = t.get("r1").unwrap();
        let steps: Vec<u64> = points.iter().map(|p| p.step).collect();
        assert_eq!(steps, vec![1, 2, 3, 4, 5]);
        assert_eq!(
            (info.last_step, info.updated_ms, info.started_ms),
            (5, 20, 10)
        );
    }

    #[test]
    fn a_full_run_halves_its_resolution_rt2() {
        let mut t = RunTable::default();
        t.report(report("r", 0..(MAX_POINTS as u64 + 1)), 1);
        let (_, points) = t.get("r").unwrap();
        assert!(points.len() <= MAX_POINTS / 2 + 1, "{}", points.len());
        assert!(points.windows(2).all(|w| w[0].step < w[1].step));
        assert_eq!(points.last().unwrap().step, MAX_POINTS as u64);
    }

    #[test]
    fn the_oldest_run_goes_first_rt1() {
        let mut t = RunTable::default();
        for i in 0..MAX_RUNS as u64 {
            t.report(report(&format!("r{i}"), 0..1), i);
        }
        t.report(report("new", 0..1), 1_000);
        assert_eq!(t.list().len(), MAX_RUNS);
        assert!(t.get("r0").is_none() && t.get("new").is_some());
    }
}
