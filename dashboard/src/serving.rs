//! `GET /api/v0/serve`: each namespace's serving the caller may see, as
//! its serve controller last reported it to the head (applications,
//! deployments with their windows, rollouts and drift, replicas, proxies),
//! with how long ago. The Serve page draws it.

use crate::api::{bad_request, ApiError};
use crate::auth::Role;
use crate::App;
use axum::extract::State;
use axum::{Extension, Json};
use prism::proto::head::{HeadRequest, HeadResponse};
use serde_json::{json, Value};
use std::sync::Arc;

/// A controller silent this long is shown as no longer reporting (it
/// reports at least every 5 s).
pub const STALE_AFTER_MS: u64 = 15_000;

/// `GET /api/v0/serve`.
pub async fn serve(
    State(app): State<Arc<App>>,
    Extension(role): Extension<Role>,
) -> Result<Json<Value>, ApiError> {
    let src = app.source.view(&role);
    let rows = match src.request(&HeadRequest::ListServe).await? {
        HeadResponse::Serve(r) => r,
        other => return Err(bad_request(format!("unexpected answer {other:?}"))),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let namespaces: Vec<Value> = rows
        .iter()
        .map(|r| {
            let age = now.saturating_sub(r.updated_ms);
            json!({
                "namespace": r.namespace,
                "job_id": r.job_id.to_string(),
                "updated_ms": r.updated_ms,
                "age_s": age / 1000,
                "stale": age > STALE_AFTER_MS,
                "status": serde_json::from_str::<Value>(&r.status).unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(Json(json!({ "namespaces": namespaces })))
}
