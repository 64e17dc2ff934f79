//! Promotion through a gate: a challenger version of a registered model
//! takes an alias (`champion`) only if it scores at least as well as the
//! version holding it, both evaluated on a golden data set in tasks.
//!
//! The versions are models of the MLP recipe ([`crate::recipes`]): their
//! config is rebuilt from the run's recorded `config.*` params and their
//! weights read from the registered checkpoint (a file of
//! [`crate::recipes::flat_weights`], readable where the task runs).
//!
//! ```no_run
//! # fn main() -> Result<(), prism_ml::MlError> {
//! # let golden = prism_ml::data::digits(128)?;
//! let _c = prism::init()?;
//! let p = prism_ml::registry::promote("digits", 3, "champion", &golden)?;
//! println!("v3 {:.3} vs {:?}: promoted", p.challenger, p.champion);
//! # Ok(()) }
//! ```

use crate::data::Dataset;
use crate::recipes::{self, MlpConfig};
use crate::{MlError, Result};
use prism::proto::models::ModelVersion;

/// What a promotion found.
#[derive(Debug, Clone, PartialEq)]
pub struct Promotion {
    /// The challenger's accuracy on the golden set.
    pub challenger: f64,
    /// The version that held the alias and its accuracy, if one did.
    pub champion: Option<(u32, f64)>,
}

/// The MLP config a version's run recorded (its `config.*` params).
pub fn config_of(v: &ModelVersion) -> Result<MlpConfig> {
    let mut obj = serde_json::Map::new();
    for (k, val) in &v.params {
        if let Some(key) = k.strip_prefix("config.") {
            let json = serde_json::from_str(val)
                .unwrap_or_else(|_| serde_json::Value::String(val.clone()));
            obj.insert(key.to_string(), json);
        }
    }
    MlpConfig::from_bytes(&serde_json::to_vec(&obj).unwrap_or_default()).map_err(|e| {
        MlError::Train(format!(
            "version {}: its run's config is not the MLP recipe's: {e}",
            v.version
        ))
    })
}

/// Accuracy of the MLP `config` (JSON) with the weights in `weights_path`
/// on `golden`.
#[prism::remote]
pub fn evaluate(
    config: Vec<u8>,
    weights_path: String,
    golden: Dataset,
) -> std::result::Result<f64, String> {
    let cfg = MlpConfig::from_bytes(&config).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(&weights_path).map_err(|e| format!("{weights_path}: {e}"))?;
    let (_vs, net) = recipes::load_flat(&cfg, &bytes).map_err(|e| e.to_string())?;
    recipes::accuracy(&net, &golden).map_err(|e| e.to_string())
}

fn score(
    v: &ModelVersion,
    golden: &Dataset,
) -> Result<prism::ObjectRef<std::result::Result<f64, String>>> {
    if v.checkpoint.is_empty() {
        return Err(MlError::Train(format!(
            "version {} has no checkpoint to evaluate",
            v.version
        )));
    }
    let cfg = config_of(v)?;
    Ok(evaluate::remote(
        cfg.to_bytes(),
        v.checkpoint.clone(),
        golden.clone(),
    )?)
}

/// Moves `alias` of `name` to `version` if it scores at least as well on
/// `golden` as the version holding it (both evaluated in parallel tasks);
/// otherwise refuses with both scores and leaves the alias where it was.
pub fn promote(name: &str, version: u32, alias: &str, golden: &Dataset) -> Result<Promotion> {
    let model = prism::models::get(name)?;
    let find = |n: u32| {
        model
            .versions
            .iter()
            .find(|v| v.version == n)
            .ok_or_else(|| MlError::Train(format!("model {name} has no version {n}")))
    };
    let challenger = find(version)?;
    let holder = model
        .aliases
        .iter()
        .find(|(a, _)| a == alias)
        .map(|(_, v)| *v);
    let c = score(challenger, golden)?;
    let h = match holder {
        Some(n) if n != version => Some((n, score(find(n)?, golden)?)),
        _ => None,
    };
    let challenger_acc = c.get()?.map_err(MlError::Train)?;
    let champion = match h {
        Some((n, r)) => Some((n, r.get()?.map_err(MlError::Train)?)),
        None => None,
    };
    if let Some((n, acc)) = champion {
        if challenger_acc < acc {
            return Err(MlError::Promotion(format!(
                "{name} v{version} scores {:.2}% on the golden set, below {alias} v{n}'s {:.2}%: not promoted",
                challenger_acc * 100.0,
                acc * 100.0
            )));
        }
    }
    prism::models::set_alias(name, alias, version)?;
    Ok(Promotion {
        challenger: challenger_acc,
        champion,
    })
}
