//! Drift: live inputs and predictions against the distribution the model
//! was trained on. A [`Reference`] holds, per feature, bin edges cut at
//! the training data's quantiles and the share of training rows in each
//! bin; a [`Monitor`] counts live values into the same bins and, every
//! `window` requests, scores each feature by the population stability
//! index and the KL divergence (live ‖ reference). The window's drift
//! score is the largest KL over the features (the seeds' alert is
//! "drift_score 0.15 KL divergence").

use serde::{Deserialize, Serialize};

/// Added to every share so empty bins do not make the scores infinite.
const EPS: f64 = 1e-4;

/// One feature's training distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    /// Its name (`x3`, `prediction`, …).
    pub name: String,
    /// Inner bin edges, rising (bins: below the first, between, above the last).
    pub edges: Vec<f64>,
    /// Share of training rows in each bin (`edges.len() + 1` of them).
    pub shares: Vec<f64>,
}

/// A model's reference distribution: every feature it is watched on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// The features, in the order [`crate::Model::drift_features`] gives them.
    pub features: Vec<Feature>,
}

fn bin(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|&e| e <= x)
}

impl Reference {
    /// Cuts each column of `rows` into (at most) `bins` bins at its
    /// quantiles; `names` names the columns.
    pub fn from_rows(names: &[&str], rows: &[Vec<f64>], bins: usize) -> Result<Reference, String> {
        if rows.is_empty() {
            return Err("a drift reference needs training rows".into());
        }
        let mut features = Vec::new();
        for (j, name) in names.iter().enumerate() {
            let mut col: Vec<f64> = rows
                .iter()
                .map(|r| {
                    r.get(j).copied().ok_or_else(|| {
                        format!("a row has {} values; feature {name} is #{j}", r.len())
                    })
                })
                .collect::<Result<_, _>>()?;
            col.sort_by(f64::total_cmp);
            let mut edges: Vec<f64> = (1..bins.max(2))
                .map(|k| col[k * col.len() / bins.max(2)])
                .collect();
            edges.dedup();
            // A constant feature still gets two bins (at it, above it).
            if edges.is_empty() {
                edges.push(col[0]);
            }
            let mut counts = vec![0u64; edges.len() + 1];
            for &x in &col {
                counts[bin(&edges, x)] += 1;
            }
            let n = col.len() as f64;
            features.push(Feature {
                name: name.to_string(),
                edges,
                shares: counts.iter().map(|&c| c as f64 / n).collect(),
            });
        }
        Ok(Reference { features })
    }

    /// Reads a reference saved by [`Reference::save`].
    pub fn load(path: &std::path::Path) -> Result<Reference, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("drift reference {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("drift reference {}: {e}", path.display()))
    }

    /// Writes it as JSON.
    pub fn save(&self, path: &std::path::Path) -> Result<(), String> {
        let text = serde_json::to_string(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("drift reference {}: {e}", path.display()))
    }
}

/// Whether the reference `spec` names a registry version (`NAME@alias`,
/// `NAME@3`: an `@` and no `/`) rather than a file. Decided by the text
/// alone, so the deploying process and every replica agree whatever
/// files their machines hold (a file whose name has an `@` is named with
/// a directory, `./ref@1.json`).
fn in_registry(spec: &str) -> bool {
    spec.contains('@') && !spec.contains('/')
}

/// The file a registry reference `spec` (`NAME@alias` / `NAME@3`) names:
/// its checkpoint's `drift_reference.json`, or `CHECKPOINT.drift.json`
/// next to a checkpoint file; `None` for a file. Resolved in this
/// process, as its job: the deploying process, so a user watches against
/// the references of their namespaces' models only.
pub fn resolve(spec: &str) -> Result<Option<String>, String> {
    if !in_registry(spec) {
        return Ok(None);
    }
    let v = prism::models::resolve(spec).map_err(|e| format!("drift reference {spec}: {e}"))?;
    let ck = std::path::Path::new(&v.checkpoint);
    let file = match ck.is_dir() {
        true => ck.join("drift_reference.json"),
        false => std::path::PathBuf::from(format!("{}.drift.json", v.checkpoint)),
    };
    Ok(Some(file.display().to_string()))
}

/// Reads the reference `spec` names: a file, or a registry version the
/// deploying process resolved to `resolved` ([`resolve`]).
pub fn load_reference(spec: &str, resolved: Option<&str>) -> Result<Reference, String> {
    match resolved {
        Some(file) => Reference::load(std::path::Path::new(file))
            .map_err(|e| format!("drift reference {spec}: {e}")),
        None if in_registry(spec) => Err(format!(
            "drift reference {spec} was not resolved by the deploying process (prism_serve's \
             deploy resolves it, as the caller's job)"
        )),
        None => Reference::load(std::path::Path::new(spec)),
    }
}

/// Σ f(live share, reference share) over the bins, both smoothed; 0 for
/// no live values.
fn divergence(shares: &[f64], counts: &[u64], f: impl Fn(f64, f64) -> f64) -> f64 {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return 0.0;
    }
    shares
        .iter()
        .zip(counts)
        .map(|(&e, &c)| f(c as f64 / n as f64 + EPS, e + EPS))
        .sum()
}

/// Population stability index of live `counts` against `shares`.
pub fn psi(shares: &[f64], counts: &[u64]) -> f64 {
    divergence(shares, counts, |a, e| (a - e) * (a / e).ln())
}

/// KL divergence of live `counts` from `shares` (live ‖ reference), nats.
pub fn kl(shares: &[f64], counts: &[u64]) -> f64 {
    divergence(shares, counts, |a, e| a * (a / e).ln()).max(0.0)
}

/// One finished window's verdict.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, Default, PartialEq, Serialize,
)]
pub struct DriftReport {
    /// Windows finished so far.
    pub windows: u64,
    /// The largest KL divergence over the features.
    pub score: f64,
    /// The largest PSI over the features.
    pub psi: f64,
    /// The feature with the largest KL.
    pub feature: String,
}

/// Counts live values in windows of `window` requests.
pub struct Monitor {
    reference: Reference,
    window: u64,
    counts: Vec<Vec<u64>>,
    seen: u64,
    last: Option<DriftReport>,
    windows: u64,
}

impl Monitor {
    /// Watches against `reference`, judging every `window` requests.
    pub fn new(reference: Reference, window: u64) -> Monitor {
        let counts = reference
            .features
            .iter()
            .map(|f| vec![0; f.shares.len()])
            .collect();
        Monitor {
            reference,
            window: window.max(1),
            counts,
            seen: 0,
            last: None,
            windows: 0,
        }
    }

    /// One request's values (as many as the reference has features;
    /// extra ones are ignored). Returns the window's report when it closes.
    pub fn observe(&mut self, values: &[f64]) -> Option<DriftReport> {
        for ((f, c), &x) in self
            .reference
            .features
            .iter()
            .zip(&mut self.counts)
            .zip(values)
        {
            c[bin(&f.edges, x)] += 1;
        }
        self.seen += 1;
        if self.seen < self.window {
            return None;
        }
        self.windows += 1;
        let mut r = DriftReport {
            windows: self.windows,
            ..DriftReport::default()
        };
        for (f, c) in self.reference.features.iter().zip(&mut self.counts) {
            let (k, p) = (kl(&f.shares, c), psi(&f.shares, c));
            if k > r.score || r.feature.is_empty() {
                r.score = k;
                r.feature = f.name.clone();
            }
            r.psi = r.psi.max(p);
            c.iter_mut().for_each(|x| *x = 0);
        }
        self.seen = 0;
        self.last = Some(r.clone());
        Some(r)
    }

    /// The last finished window's report.
    pub fn last(&self) -> Option<&DriftReport> {
        self.last.as_ref()
    }
}

#[cfg(test)]
#[path = "drift_tests.rs"]
mod tests;
