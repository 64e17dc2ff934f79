//! Training runs the head has heard of: each run's params, tags, status
//! and per-step metrics, as its trainer reports them (`DdpTrainer` reports
//! every step), for `prism runs` and the dashboard's training page. Pure
//! and bounded; what changed is taken as durable changes (a durable head
//! writes them before it replies, so runs survive `kill -9` of the head).
//!
//! Invariants:
//!
//! - **RT-1** at most [`MAX_RUNS`] runs are kept; a new run beyond that
//!   replaces the one updated longest ago;
//! - **RT-2** a run keeps at most [`MAX_POINTS`] points in memory: when
//!   full, every other point is dropped (the curve keeps its shape at half
//!   the resolution) and steps stay in increasing order;
//! - **RT-3** every point, param, tag and status accepted is in the next
//!   [`RunTable::take_changes`], once;
//! - **RT-4** points are kept in step order; a point for a step already
//!   there merges into it (its keys replace theirs), so concurrent writers
//!   logging different metrics, or steps out of order, lose nothing.

use crate::proto::runs::{RunInfo, RunPoint, RunReport};
use std::collections::{BTreeSet, HashMap};

/// Most runs kept.
pub const MAX_RUNS: usize = 10_000;
/// Most points kept per run.
pub const MAX_POINTS: usize = 10_000;

#[derive(Debug, Clone)]
struct Run {
    info: RunInfo,
    points: Vec<RunPoint>,
}

/// What changed in the runs since the last [`RunTable::take_changes`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunChanges {
    /// Runs whose row (info, params, tags, status) changed.
    pub rows: Vec<RunInfo>,
    /// New points, by run.
    pub points: Vec<(String, Vec<RunPoint>)>,
    /// Runs forgotten (RT-1).
    pub gone: Vec<String>,
}

/// The runs.
#[derive(Debug, Clone, Default)]
pub struct RunTable {
    runs: HashMap<String, Run>,
    dirty: BTreeSet<String>,
    new_points: HashMap<String, Vec<RunPoint>>,
    gone: Vec<String>,
}

fn upsert(into: &mut Vec<(String, String)>, from: Vec<(String, String)>) -> bool {
    let mut changed = false;
    for (k, v) in from {
        match into.iter_mut().find(|(key, _)| *key == k) {
            Some(e) if e.1 == v => {}
            Some(e) => {
                e.1 = v;
                changed = true;
            }
            None => {
                into.push((k, v));
                changed = true;
            }
        }
    }
    into.sort();
    changed
}

impl RunTable {
    /// Adds a report: its points (merged in step order, RT-4: a resumed run
    /// reporting from its checkpoint's step on rewrites those steps), its
    /// params and tags, its end.
    pub fn report(&mut self, r: RunReport, now_ms: u64) {
        if !self.runs.contains_key(&r.run_id) && self.runs.len() >= MAX_RUNS {
            if let Some(oldest) = self
                .runs
                .iter()
                .min_by_key(|(_, run)| run.info.updated_ms)
                .map(|(id, _)| id.clone())
            {
                self.runs.remove(&oldest);
                self.dirty.remove(&oldest);
                self.new_points.remove(&oldest);
                self.gone.push(oldest);
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
                params: Vec::new(),
                tags: Vec::new(),
                status: "running".into(),
            },
            points: Vec::new(),
        });
        let mut accepted = Vec::new();
        for p in r.points {
            let merged = merge_point(&mut run.points, p);
            accepted.push(merged);
            if run.points.len() > MAX_POINTS {
                halve(&mut run.points);
            }
        }
        if let Some(last) = run.points.last() {
            run.info.last_step = last.step;
            run.info.last_values = last_values(&run.info.last_values, last, &accepted);
        }
        run.info.points = run.info.points.max(run.points.len() as u64);
        upsert(&mut run.info.params, r.params);
        upsert(&mut run.info.tags, r.tags);
        if let Some(end) = r.ended {
            run.info.status = end;
        }
        run.info.updated_ms = now_ms;
        if !accepted.is_empty() {
            self.new_points
                .entry(r.run_id.clone())
                .or_default()
                .extend(accepted);
        }
        self.dirty.insert(r.run_id);
    }

    /// Every run, most recently updated first.
    pub fn list(&self) -> Vec<RunInfo> {
        let mut v: Vec<RunInfo> = self.runs.values().map(|r| r.info.clone()).collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.updated_ms));
        v
    }

    /// The job a run belongs to.
    pub fn job_of(&self, run_id: &str) -> Option<crate::ids::JobId> {
        self.runs.get(run_id).map(|r| r.info.job_id)
    }

    /// One run's points.
    pub fn get(&self, run_id: &str) -> Option<(RunInfo, Vec<RunPoint>)> {
        self.runs
            .get(run_id)
            .map(|r| (r.info.clone(), r.points.clone()))
    }

    /// What changed since the last call (RT-3).
    pub fn take_changes(&mut self) -> RunChanges {
        let rows = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|id| self.runs.get(&id).map(|r| r.info.clone()))
            .collect();
        let mut points: Vec<(String, Vec<RunPoint>)> = self.new_points.drain().collect();
        points.sort_by(|a, b| a.0.cmp(&b.0));
        RunChanges {
            rows,
            points,
            gone: std::mem::take(&mut self.gone),
        }
    }

    /// The runs a head that died had: their rows and stored points (in
    /// step order per run).
    pub fn restore(rows: Vec<RunInfo>, points: Vec<(String, RunPoint)>) -> RunTable {
        let mut t = RunTable::default();
        for info in rows {
            t.runs.insert(
                info.run_id.clone(),
                Run {
                    info,
                    points: Vec::new(),
                },
            );
        }
        for (id, p) in points {
            if let Some(run) = t.runs.get_mut(&id) {
                if run.points.last().is_none_or(|last| p.step > last.step) {
                    run.points.push(p);
                    if run.points.len() > MAX_POINTS {
                        halve(&mut run.points);
                    }
                }
            }
        }
        t
    }
}

/// Puts `p` in step order: a new step is inserted; an existing step takes
/// `p`'s values (a key logged again replaces its value; new keys join).
/// Returns the point as it now stands (what the store must hold).
fn merge_point(points: &mut Vec<RunPoint>, p: RunPoint) -> RunPoint {
    match points.binary_search_by_key(&p.step, |x| x.step) {
        Ok(i) => {
            let at = &mut points[i];
            for (k, v) in p.values {
                match at.values.iter_mut().find(|(key, _)| *key == k) {
                    Some(e) => e.1 = v,
                    None => at.values.push((k, v)),
                }
            }
            at.seconds = at.seconds.max(p.seconds);
            at.clone()
        }
        Err(i) => {
            points.insert(i, p.clone());
            p
        }
    }
}

/// The newest value of each key: the last step's values, then keys last
/// seen earlier (kept from before, or from points merged in late). O(keys).
fn last_values(
    before: &[(String, f64)],
    last: &RunPoint,
    merged: &[RunPoint],
) -> Vec<(String, f64)> {
    let mut out = last.values.clone();
    let known = |out: &Vec<(String, f64)>, k: &str| out.iter().any(|(key, _)| key == k);
    for p in merged.iter().rev() {
        for (k, v) in &p.values {
            if !known(&out, k) {
                out.push((k.clone(), *v));
            }
        }
    }
    for (k, v) in before {
        if !known(&out, k) {
            out.push((k.clone(), *v));
        }
    }
    out
}

/// RT-2: every other point goes; the last stays.
fn halve(points: &mut Vec<RunPoint>) {
    let (n, mut i) = (points.len(), 0);
    points.retain(|_| {
        let keep = i % 2 == 1 || i == n - 1;
        i += 1;
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::JobId;

    fn report(id: &str, steps: std::ops::Range<u64>) -> RunReport {
        RunReport::points(
            id,
            "mlp",
            JobId::random(),
            steps
                .map(|s| RunPoint {
                    step: s,
                    values: vec![("loss".into(), 1.0 / (s as f64 + 1.0))],
                    seconds: s as f64,
                })
                .collect(),
        )
    }

    #[test]
    fn points_accumulate_and_repeated_steps_merge() {
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
    fn concurrent_writers_and_late_steps_lose_nothing_rt4() {
        let mut t = RunTable::default();
        let point = |step, k: &str, v| RunPoint {
            step,
            values: vec![(k.to_string(), v)],
            seconds: 0.0,
        };
        let job = JobId::random();
        // Two workers log their own metric at the same steps, interleaved
        // and out of order.
        for (step, k) in [(2, "a"), (1, "b"), (1, "a"), (3, "b"), (2, "b"), (3, "a")] {
            t.report(
                RunReport::points("r", "mlp", job, vec![point(step, k, step as f64)]),
                1,
            );
        }
        let (info, points) = t.get("r").unwrap();
        assert_eq!(
            points.iter().map(|p| p.step).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(points.iter().all(|p| p.values.len() == 2), "{points:?}");
        assert_eq!((info.last_step, info.points), (3, 3));
        let c = t.take_changes();
        let last = c.points[0].1.iter().rev().find(|p| p.step == 2).unwrap();
        assert_eq!(last.values.len(), 2, "the store gets the merged point");
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
        let _ = t.take_changes();
        t.report(report("new", 0..1), 1_000_000);
        assert_eq!(t.list().len(), MAX_RUNS);
        assert!(t.get("r0").is_none() && t.get("new").is_some());
        assert_eq!(t.take_changes().gone, vec!["r0".to_string()]);
    }

    #[test]
    fn params_tags_and_the_end_are_recorded_and_taken_once_rt3() {
        let mut t = RunTable::default();
        let mut r = report("r", 0..3);
        r.params = vec![("lr".into(), "0.1".into()), ("epochs".into(), "2".into())];
        t.report(r, 1);
        let mut r = report("r", 3..4);
        r.params = vec![("lr".into(), "0.05".into())];
        r.tags = vec![("team".into(), "vision".into())];
        r.ended = Some("finished".into());
        t.report(r, 2);
        let c = t.take_changes();
        assert_eq!(c.rows.len(), 1);
        let info = &c.rows[0];
        assert_eq!(
            info.params,
            vec![("epochs".into(), "2".into()), ("lr".into(), "0.05".into())]
        );
        assert_eq!((info.tags.len(), info.status.as_str()), (1, "finished"));
        assert_eq!(
            c.points[0].1.iter().map(|p| p.step).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(t.take_changes(), RunChanges::default(), "taken once");
    }

    #[test]
    fn a_restored_table_is_the_one_that_was_written() {
        let mut t = RunTable::default();
        t.report(report("a", 0..5), 1);
        t.report(report("b", 0..2), 2);
        let c = t.take_changes();
        let points = c
            .points
            .iter()
            .flat_map(|(id, ps)| ps.iter().map(move |p| (id.clone(), p.clone())))
            .collect();
        let back = RunTable::restore(c.rows, points);
        assert_eq!(back.list(), t.list());
        assert_eq!(back.get("a"), t.get("a"));
    }
}
