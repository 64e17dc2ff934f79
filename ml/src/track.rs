//! Tracking by hand, from a driver or any task or actor (the trainers do
//! it on their own): a [`Run`] records params, tags, per-step metrics and
//! artifacts' content hashes on the head, with the same run table the
//! trainers use (`prism runs`). Calls return at once; the head merges
//! metrics logged for the same step from many workers (nothing is lost).
//!
//! ```no_run
//! # fn main() -> Result<(), prism_ml::MlError> {
//! let _c = prism::init()?;
//! let run = prism_ml::track::start_run("sweep")?;
//! run.log_param("lr", "0.05")?;
//! for step in 0..10 {
//!     run.log_metric("loss", 1.0 / (step as f64 + 1.0), step)?;
//! }
//! run.end(Ok(()))?;
//! # Ok(()) }
//! ```

use crate::Result;
use prism::proto::runs::RunPoint;

/// A run being tracked; cheap to clone and to pass to tasks and actors.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq)]
pub struct Run {
    /// Its id (`prism runs show ID`).
    pub id: String,
    /// What it is (the name `prism runs list` shows).
    pub name: String,
    /// When it started, Unix ms (metrics carry seconds since then).
    pub started_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Starts a run named `name` with a fresh id.
pub fn start_run(name: &str) -> Result<Run> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(7))
        .unwrap_or(0);
    let run = Run {
        id: format!("{name}-{nanos:08x}"),
        name: name.to_string(),
        started_ms: now_ms(),
    };
    prism::log_run_params(
        &run.id,
        name,
        Vec::new(),
        vec![("source".into(), "track".into())],
    )?;
    Ok(run)
}

impl Run {
    /// Records a param (a later value of the key replaces it).
    pub fn log_param(&self, key: &str, value: &str) -> Result<()> {
        self.log_params([(key, value)])
    }

    /// Records several params.
    pub fn log_params<'a>(&self, kv: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<()> {
        let params = kv
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(prism::log_run_params(
            &self.id,
            &self.name,
            params,
            Vec::new(),
        )?)
    }

    /// Sets a tag.
    pub fn set_tag(&self, key: &str, value: &str) -> Result<()> {
        Ok(prism::log_run_params(
            &self.id,
            &self.name,
            Vec::new(),
            vec![(key.into(), value.into())],
        )?)
    }

    /// Records `key = value` at `step` (merged with other keys of that step).
    pub fn log_metric(&self, key: &str, value: f64, step: u64) -> Result<()> {
        self.log_metrics(step, &[(key, value)])
    }

    /// Records several metrics of one step.
    pub fn log_metrics(&self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        let point = RunPoint {
            step,
            values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            seconds: now_ms().saturating_sub(self.started_ms) as f64 / 1e3,
        };
        Ok(prism::report_run(&self.id, &self.name, vec![point])?)
    }

    /// Copies a file to the head's machine as an artifact
    /// ([`crate::artifacts`]: content-addressed next to the head's
    /// database, moved through the object store) and records its SHA-256,
    /// size and place under the tag `artifact.<file name>`; returns the
    /// hash ([`crate::artifacts::fetch`] reads it back).
    pub fn log_artifact(&self, path: &std::path::Path) -> Result<String> {
        let bytes = std::fs::read(path).map_err(|source| crate::MlError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let size = bytes.len();
        let (hash, stored) = crate::artifacts::store(bytes)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let value = format!("sha256:{hash} {size} bytes stored at {stored}");
        self.set_tag(&format!("artifact.{name}"), &value)?;
        Ok(hash)
    }

    /// Marks the run finished, or failed with the reason.
    pub fn end(&self, outcome: std::result::Result<(), String>) -> Result<()> {
        Ok(prism::end_run(&self.id, &self.name, outcome)?)
    }
}
