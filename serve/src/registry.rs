//! Serving a model version from the registry: a deployment (or a rollout)
//! naming `NAME@alias` or `NAME@3` is pinned to that version when it is
//! deployed, so every replica loads the same weights even if the alias
//! moves later. The deploying process resolves it, as its own job, so a
//! user serves only the models of the namespaces granted to them (the
//! controller, a detached actor of whoever started serve, only applies
//! what it was given). The model finds them in its user config: `checkpoint`
//! (the version's checkpoint path) and `model_version` (`NAME@3`), which is
//! also the version label its answers carry unless one was given.

use serde_json::Value;

/// Resolves `registry` (`NAME@alias`, `NAME@3`) in this process, as its
/// job: `(NAME@N, checkpoint)`. The deploying process does it, not the
/// controller, so that nobody serves a model their namespaces do not hold.
pub(crate) fn resolve(registry: &str) -> Result<(String, String), String> {
    let v =
        prism::models::resolve(registry).map_err(|e| format!("registry model {registry}: {e}"))?;
    let name = registry.split('@').next().unwrap_or(registry);
    Ok((format!("{name}@{}", v.version), v.checkpoint))
}

/// Returns `config` (JSON text, an object or null) with the version the
/// caller resolved (`pinned`: `NAME@N` and its checkpoint) as
/// `model_version` and `checkpoint`; fills an empty `label`.
pub(crate) fn pin(
    registry: &str,
    pinned: Option<&(String, String)>,
    config: &str,
    label: &mut String,
) -> Result<String, String> {
    let Some((pinned, checkpoint)) = pinned else {
        return Err(format!(
            "registry model {registry} was not resolved by the deploying process (prism_serve's \
             deploy and rollout resolve it, as the caller's job)"
        ));
    };
    let mut cfg: Value = serde_json::from_str(config).map_err(|e| e.to_string())?;
    if cfg.is_null() {
        cfg = Value::Object(Default::default());
    }
    let Some(obj) = cfg.as_object_mut() else {
        return Err(format!(
            "registry model {registry}: user_config must be a JSON object (or null) to receive the checkpoint"
        ));
    };
    obj.insert("checkpoint".into(), Value::String(checkpoint.clone()));
    obj.insert("model_version".into(), Value::String(pinned.clone()));
    if label.is_empty() {
        *label = pinned.clone();
    }
    Ok(cfg.to_string())
}
