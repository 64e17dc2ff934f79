//! User metrics: `prism::metrics::counter("requests", &[("route", "/a")]).inc()`
//! in any task, actor or driver; the values appear, summed over the whole
//! cluster, at the head's Prometheus endpoint (`/metrics` on the
//! dashboard).
//!
//! A process keeps its changes in memory and sends them to its raylet
//! ([`LocalRequest::Metrics`](crate::proto::task::LocalRequest::Metrics)):
//! a worker before each result it returns (so a driver that has a task's
//! result sees its metrics), a driver once a second. Each raylet sums them
//! in a [`MetricsTable`] per job ([`JobMetrics`], so that a user who sees
//! some namespaces only sees their jobs' metrics); the head adds the
//! raylets' tables up.
//!
//! ```no_run
//! let hits = prism::metrics::counter("cache_hits", &[("cache", "l1")]);
//! hits.inc();
//! prism::metrics::gauge("queue_depth", &[]).set(12.0);
//! prism::metrics::histogram("batch_seconds", &[]).observe(0.25);
//! ```

use crate::ids::JobId;
use rkyv::{Archive, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// What a metric is.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum MetricKind {
    /// Only goes up; changes add.
    Counter,
    /// A value that is set; the last one wins.
    Gauge,
    /// Observations in buckets ([`BUCKETS`]).
    Histogram,
}

/// Upper bounds of histogram buckets (seconds-friendly, Prometheus' defaults).
pub const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram's observations: counts per bucket of [`BUCKETS`] (the last
/// one for everything above), their sum and count.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    /// Observations per bucket, `BUCKETS.len() + 1` of them.
    pub counts: Vec<u64>,
    /// Their sum.
    pub sum: f64,
    /// How many.
    pub count: u64,
}

impl Histogram {
    /// Adds one observation.
    pub fn observe(&mut self, v: f64) {
        if self.counts.len() != BUCKETS.len() + 1 {
            self.counts = vec![0; BUCKETS.len() + 1];
        }
        let i = BUCKETS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    /// Adds another histogram's observations.
    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.len() != other.counts.len() {
            self.counts = vec![0; other.counts.len()];
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// `(upper bound, count in that bucket)` pairs, the last bound
    /// `f64::MAX` (Prometheus' `+Inf`).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        BUCKETS
            .iter()
            .chain(std::iter::once(&f64::MAX))
            .enumerate()
            .map(|(i, bound)| (*bound, self.counts.get(i).copied().unwrap_or(0)))
            .collect()
    }
}

/// One metric's change from one process.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MetricUpdate {
    /// Its name.
    pub name: String,
    /// Its tags, sorted.
    pub tags: Vec<(String, String)>,
    /// Counter: what to add; gauge: the value.
    pub kind: MetricKind,
    /// Counter delta or gauge value.
    pub value: f64,
    /// Histogram: the new observations.
    pub hist: Histogram,
}

/// One metric's value, summed over a node or the cluster.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MetricValue {
    /// Its name.
    pub name: String,
    /// Its tags, sorted.
    pub tags: Vec<(String, String)>,
    /// Its kind.
    pub kind: MetricKind,
    /// Counter total or gauge value.
    pub value: f64,
    /// Histogram observations.
    pub hist: Histogram,
    /// The job whose processes recorded it, as their raylet knows it (a
    /// task worker's job is that of the task it ran last); `None` in sums
    /// over jobs.
    pub job_id: Option<JobId>,
}

type Key = (String, Vec<(String, String)>, MetricKind);

/// Metric values by name, tags and kind: counters and histograms add up,
/// gauges keep the last value. Pure.
#[derive(Debug, Clone, Default)]
pub struct MetricsTable {
    values: BTreeMap<Key, (f64, Histogram)>,
}

impl MetricsTable {
    /// Applies one update.
    pub fn apply(&mut self, u: &MetricUpdate) {
        let e = self
            .values
            .entry((u.name.clone(), u.tags.clone(), u.kind))
            .or_default();
        match u.kind {
            MetricKind::Counter => e.0 += u.value,
            MetricKind::Gauge => e.0 = u.value,
            MetricKind::Histogram => e.1.merge(&u.hist),
        }
    }

    /// Adds another table (another node's): gauges add too (each node's
    /// last value, summed over nodes).
    pub fn add(&mut self, values: &[MetricValue]) {
        for v in values {
            let e = self
                .values
                .entry((v.name.clone(), v.tags.clone(), v.kind))
                .or_default();
            e.0 += v.value;
            e.1.merge(&v.hist);
        }
    }

    /// Every value.
    pub fn values(&self) -> Vec<MetricValue> {
        self.values
            .iter()
            .map(|((name, tags, kind), (value, hist))| MetricValue {
                name: name.clone(),
                tags: tags.clone(),
                kind: *kind,
                value: *value,
                hist: hist.clone(),
                job_id: None,
            })
            .collect()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The changes since the last take, as updates (emptying the table).
    pub fn take_updates(&mut self) -> Vec<MetricUpdate> {
        std::mem::take(&mut self.values)
            .into_iter()
            .map(|((name, tags, kind), (value, hist))| MetricUpdate {
                name,
                tags,
                kind,
                value,
                hist,
            })
            .collect()
    }
}

/// Ended jobs whose counters and histograms a raylet keeps as theirs; older
/// ones are folded into its unattributed sum ([`JobMetrics::job_ended`]).
pub const ENDED_JOBS_KEPT: usize = 64;

/// A raylet's users' metrics, one table per job of the processes that
/// sent them (`None`: a process of no known job, and the jobs that ended
/// longest ago). Pure.
#[derive(Debug, Clone, Default)]
pub struct JobMetrics {
    jobs: BTreeMap<Option<JobId>, MetricsTable>,
    /// Jobs ended, oldest first.
    ended: std::collections::VecDeque<JobId>,
}

impl JobMetrics {
    /// Applies updates from a process of `job`.
    pub fn apply(&mut self, job: Option<JobId>, updates: &[MetricUpdate]) {
        let table = self.jobs.entry(job).or_default();
        for u in updates {
            table.apply(u);
        }
    }

    /// `job` ended (its detached actors may live on): its values stay its
    /// own for the last [`ENDED_JOBS_KEPT`] jobs ended; then its counters
    /// and histograms join the unattributed sum (seen by those who see
    /// every namespace) and its gauges go, so memory and each scrape stay
    /// bounded however many jobs a raylet outlives, while the node's totals
    /// never go down. (A detached actor of a folded job that records more
    /// starts the job's own series again.)
    pub fn job_ended(&mut self, job: JobId) {
        if self.ended.contains(&job) {
            return;
        }
        self.ended.push_back(job);
        while self.ended.len() > ENDED_JOBS_KEPT {
            let Some(old) = self.ended.pop_front() else {
                break;
            };
            if let Some(mut t) = self.jobs.remove(&Some(old)) {
                t.values
                    .retain(|(_, _, kind), _| *kind != MetricKind::Gauge);
                self.jobs.entry(None).or_default().add(&t.values());
            }
        }
    }

    /// Every value, each with its job.
    pub fn values(&self) -> Vec<MetricValue> {
        self.jobs
            .iter()
            .flat_map(|(job, t)| {
                t.values().into_iter().map(|mut v| {
                    v.job_id = *job;
                    v
                })
            })
            .collect()
    }
}

/// This process's changes not yet sent to its raylet.
static PENDING: Mutex<Option<MetricsTable>> = Mutex::new(None);

fn record(name: &str, tags: &[(String, String)], kind: MetricKind, value: f64, obs: Option<f64>) {
    let mut hist = Histogram::default();
    if let Some(v) = obs {
        hist.observe(v);
    }
    let update = MetricUpdate {
        name: name.to_string(),
        tags: tags.to_vec(),
        kind,
        value,
        hist,
    };
    let mut p = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    p.get_or_insert_with(MetricsTable::default).apply(&update);
}

/// The changes recorded in this process since the last call.
pub(crate) fn take_pending() -> Vec<MetricUpdate> {
    let mut p = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    p.as_mut().map(|t| t.take_updates()).unwrap_or_default()
}

/// Metric names Prometheus accepts: letters, digits and `_` (others become `_`).
fn clean(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn tags(t: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = t.iter().map(|(k, v)| (clean(k), v.to_string())).collect();
    v.sort();
    v
}

/// A counter: [`Counter::inc`] and [`Counter::inc_by`] add to it.
#[derive(Debug, Clone)]
pub struct Counter {
    name: String,
    tags: Vec<(String, String)>,
}

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1.0);
    }
    /// Adds `v` (negative values are ignored: counters only go up).
    pub fn inc_by(&self, v: f64) {
        if v > 0.0 {
            record(&self.name, &self.tags, MetricKind::Counter, v, None);
        }
    }
}

/// A gauge: [`Gauge::set`] replaces its value.
#[derive(Debug, Clone)]
pub struct Gauge {
    name: String,
    tags: Vec<(String, String)>,
}

impl Gauge {
    /// Sets it.
    pub fn set(&self, v: f64) {
        record(&self.name, &self.tags, MetricKind::Gauge, v, None);
    }
}

/// A histogram over [`BUCKETS`].
#[derive(Debug, Clone)]
pub struct HistogramMetric {
    name: String,
    tags: Vec<(String, String)>,
}

impl HistogramMetric {
    /// Records one observation.
    pub fn observe(&self, v: f64) {
        record(&self.name, &self.tags, MetricKind::Histogram, 0.0, Some(v));
    }
}

/// The counter `name` with these tags.
pub fn counter(name: &str, tags: &[(&str, &str)]) -> Counter {
    Counter {
        name: clean(name),
        tags: self::tags(tags),
    }
}

/// The gauge `name` with these tags.
pub fn gauge(name: &str, tags: &[(&str, &str)]) -> Gauge {
    Gauge {
        name: clean(name),
        tags: self::tags(tags),
    }
}

/// The histogram `name` with these tags.
pub fn histogram(name: &str, tags: &[(&str, &str)]) -> HistogramMetric {
    HistogramMetric {
        name: clean(name),
        tags: self::tags(tags),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upd(kind: MetricKind, value: f64) -> MetricUpdate {
        MetricUpdate {
            name: "m".into(),
            tags: vec![],
            kind,
            value,
            hist: Histogram::default(),
        }
    }

    #[test]
    fn counters_add_gauges_keep_the_last_value() {
        let mut t = MetricsTable::default();
        t.apply(&upd(MetricKind::Counter, 2.0));
        t.apply(&upd(MetricKind::Counter, 3.0));
        t.apply(&upd(MetricKind::Gauge, 7.0));
        t.apply(&upd(MetricKind::Gauge, 4.0));
        let v = t.values();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].kind, v[0].value), (MetricKind::Counter, 5.0));
        assert_eq!((v[1].kind, v[1].value), (MetricKind::Gauge, 4.0));
    }

    #[test]
    fn each_job_keeps_its_own_values_and_a_sum_forgets_jobs() {
        let (a, b) = (JobId::random(), JobId::random());
        let mut t = JobMetrics::default();
        t.apply(Some(a), &[upd(MetricKind::Counter, 2.0)]);
        t.apply(Some(b), &[upd(MetricKind::Counter, 4.0)]);
        t.apply(Some(a), &[upd(MetricKind::Counter, 1.0)]);
        let mut v: Vec<(Option<JobId>, f64)> =
            t.values().iter().map(|v| (v.job_id, v.value)).collect();
        v.sort_by(|x, y| x.1.total_cmp(&y.1));
        assert_eq!(v, vec![(Some(a), 3.0), (Some(b), 4.0)]);
        let mut sum = MetricsTable::default();
        sum.add(&t.values());
        let s = sum.values();
        assert_eq!((s.len(), s[0].value, s[0].job_id), (1, 7.0, None));
    }

    #[test]
    fn an_ended_job_keeps_its_counters_a_while_then_they_join_the_sum() {
        let mut t = JobMetrics::default();
        let first = JobId::random();
        t.apply(
            Some(first),
            &[upd(MetricKind::Counter, 2.0), upd(MetricKind::Gauge, 9.0)],
        );
        t.job_ended(first);
        t.job_ended(first);
        // Its values stay its own a while (its detached actors may live).
        let v = t.values();
        assert_eq!(v.len(), 2);
        assert!(v.iter().all(|v| v.job_id == Some(first)));
        for _ in 0..ENDED_JOBS_KEPT {
            let j = JobId::random();
            t.apply(Some(j), &[upd(MetricKind::Counter, 1.0)]);
            t.job_ended(j);
        }
        // The oldest folded into the unattributed sum, its gauge gone:
        // bounded, and the node's counter total is unchanged.
        assert_eq!(t.jobs.len(), ENDED_JOBS_KEPT + 1);
        let mut sum = MetricsTable::default();
        sum.add(&t.values());
        assert_eq!(sum.values()[0].value, 2.0 + ENDED_JOBS_KEPT as f64);
        assert!(t.values().iter().all(|v| v.job_id != Some(first)));
        assert!(t.values().iter().all(|v| v.kind == MetricKind::Counter));
    }

    #[test]
    fn histograms_bucket_and_merge() {
        let mut h = Histogram::default();
        for v in [0.001, 0.3, 0.3, 100.0] {
            h.observe(v);
        }
        let mut total = Histogram::default();
        total.merge(&h);
        total.merge(&h);
        let c = total.buckets();
        assert_eq!(c.len(), BUCKETS.len() + 1);
        assert_eq!(c[0], (0.005, 2));
        assert_eq!(c.iter().find(|(b, _)| *b == 0.5).map(|x| x.1), Some(4));
        assert_eq!(c.last().map(|x| x.1), Some(2));
        assert_eq!(total.count, 8);
    }

    #[test]
    fn names_and_tags_are_cleaned_and_sorted() {
        let c = counter("my-metric.total", &[("z", "1"), ("a-b", "2")]);
        assert_eq!(c.name, "my_metric_total");
        assert_eq!(
            c.tags,
            vec![("a_b".into(), "2".into()), ("z".into(), "1".into())]
        );
    }

    #[test]
    fn taking_updates_empties_the_table() {
        let mut t = MetricsTable::default();
        t.apply(&upd(MetricKind::Counter, 1.0));
        assert_eq!(t.take_updates().len(), 1);
        assert!(t.is_empty());
    }
}
