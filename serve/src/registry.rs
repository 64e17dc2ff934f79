//! Serving a model version from the registry: a deployment (or a rollout)
//! naming `NAME@alias` or `NAME@3` is pinned to that version when it is
//! deployed, so every replica loads the same weights even if the alias
//! moves later. The model finds them in its user config: `checkpoint`
//! (the version's checkpoint path) and `model_version` (`NAME@3`), which is
//! also the version label its answers carry unless one was given.

use serde_json::Value;

/// Resolves `registry` and returns `config` (JSON text, an object or
/// null) with `checkpoint` and `model_version` set; fills an empty `label`.
pub(crate) async fn pin(
    registry: &str,
    config: &str,
    label: &mut String,
) -> Result<String, String> {
    let r = registry.to_string();
    let v = tokio::task::spawn_blocking(move || prism::models::resolve(&r))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("registry model {registry}: {e}"))?;
    let name = registry.split('@').next().unwrap_or(registry);
    let pinned = format!("{name}@{}", v.version);
    let mut cfg: Value = serde_json::from_str(config).map_err(|e| e.to_string())?;
    if cfg.is_null() {
        cfg = Value::Object(Default::default());
    }
    let Some(obj) = cfg.as_object_mut() else {
        return Err(format!(
            "registry model {registry}: user_config must be a JSON object (or null) to receive the checkpoint"
        ));
    };
    obj.insert("checkpoint".into(), Value::String(v.checkpoint.clone()));
    obj.insert("model_version".into(), Value::String(pinned.clone()));
    if label.is_empty() {
        *label = pinned;
    }
    Ok(cfg.to_string())
}
