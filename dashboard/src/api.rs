//! The JSON state API, `/api/v0/*`: the same rows as `prism list … --json`
//! (one model, [`prism::views`]), with filters (`state=`, `job=`, `node=`,
//! `name=`, any field), `sort=`/`order=`, and `limit=` (default 100) /
//! `offset=` paging. Plus a summary for the overview, worker logs, the
//! task timeline, training runs, the model registry and stopping a job
//! (admins, and users the head lets).

use crate::auth::Role;
use crate::source::SourceError;
use crate::App;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use prism::client::Table;
use prism::proto::head::{HeadRequest, HeadResponse};
use prism::proto::models::{ModelInfo, ModelRequest};
use prism::proto::state::LogChunk;
use prism::views::Query as RowQuery;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Rows per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;

/// An API error: its status and one sentence.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<SourceError> for ApiError {
    fn from(e: SourceError) -> ApiError {
        let status = match e {
            SourceError::Unreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            SourceError::Head(_) => StatusCode::BAD_GATEWAY,
            SourceError::Forbidden(_) => StatusCode::FORBIDDEN,
        };
        ApiError(status, e.to_string())
    }
}

pub(crate) fn bad_request(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, e.to_string())
}

/// A page's query (filters, sort, paging; [`DEFAULT_LIMIT`] rows unless
/// `limit=` says), or a 400 naming what is wrong with it.
fn row_query(params: Vec<(String, String)>) -> Result<RowQuery, ApiError> {
    let mut q = RowQuery::parse(params).map_err(bad_request)?;
    q.limit = Some(q.limit.unwrap_or(DEFAULT_LIMIT));
    Ok(q)
}

/// `GET /api/v0/{table}`.
pub async fn table(
    State(app): State<Arc<App>>,
    Extension(role): Extension<Role>,
    Path(name): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<prism::views::Page>, ApiError> {
    let src = app.source.view(&role);
    let table = Table::parse(&name).ok_or_else(|| {
        let names: Vec<_> = Table::ALL.iter().map(|t| t.name()).collect();
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no table {name:?}; there are: {}", names.join(", ")),
        )
    })?;
    let mut q = row_query(params)?;
    if table == Table::Tasks {
        // Tasks are the big table: the raylets filter them and send only
        // the newest rows a page needs, when the query allows.
        if let Some(filter) = q.task_filter() {
            let (rows, total) = src.task_page(filter).await?;
            let rows = rows.into_iter().skip(q.offset).collect();
            return Ok(Json(prism::views::Page {
                total: total as usize,
                offset: q.offset,
                limit: q.limit,
                rows,
            }));
        }
        if q.sort.is_none() {
            // The same order as the pushed-down pages: newest first.
            q.sort = Some("submitted_us".into());
            q.descending = true;
        }
    }
    let rows = src.rows(table).await?;
    let page = q.apply_refs(&rows).map_err(bad_request)?;
    Ok(Json(page))
}

fn count_by(rows: &[Value], field: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in rows {
        let k = match &r[field] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        *out.entry(k).or_insert(0) += 1;
    }
    out
}

/// `GET /api/v0/summary`: what the overview shows — nodes with their
/// resources, totals, demand, and counts of jobs, actors, tasks by state.
pub async fn summary(
    State(app): State<Arc<App>>,
    Extension(role): Extension<Role>,
) -> Result<Json<Value>, ApiError> {
    let src = app.source.view(&role);
    let status = match src.request(&HeadRequest::GetStatus).await? {
        HeadResponse::Status(s) => s,
        other => return Err(bad_request(format!("unexpected answer {other:?}"))),
    };
    let nodes: Vec<_> = status
        .nodes
        .iter()
        .map(prism::views::NodeView::from_status)
        .collect();
    let mut total: BTreeMap<String, f64> = BTreeMap::new();
    let mut available: BTreeMap<String, f64> = BTreeMap::new();
    for n in nodes
        .iter()
        .filter(|n| n.state != prism::proto::common::NodeState::Dead)
    {
        for (k, v) in &n.resources_total {
            *total.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &n.resources_available {
            *available.entry(k.clone()).or_default() += v;
        }
    }
    let demand: Vec<Value> = status
        .demand
        .iter()
        .map(|d| {
            let shape: Map<String, Value> = d
                .shape
                .to_set()
                .iter()
                .map(|(k, q)| (k.to_string(), json!(q.as_f64())))
                .collect();
            json!({"node_id": d.node_id, "shape": shape, "count": d.count, "infeasible": d.infeasible})
        })
        .collect();
    let jobs = src.rows(Table::Jobs).await?;
    let actors = src.rows(Table::Actors).await?;
    let groups = src.rows(Table::PlacementGroups).await?;
    // Task counts by state, counted by the raylets (no rows move).
    let mut tasks = BTreeMap::new();
    for state in ["queued", "running", "infeasible", "finished", "failed"] {
        let filter = prism::proto::state::TaskFilter {
            state: prism::proto::state::TaskState::parse(state),
            ..Default::default()
        };
        let (_, n) = src.task_page(filter).await?;
        if n > 0 {
            tasks.insert(state.to_string(), n);
        }
    }
    Ok(Json(json!({
        "cluster_id": status.cluster_id,
        "head_address": status.head_address,
        "nodes": nodes,
        "resources_total": total,
        "resources_available": available,
        "demand": demand,
        "jobs": count_by(&jobs, "state"),
        "actors": count_by(&actors, "state"),
        "tasks": tasks,
        "placement_groups": count_by(&groups, "state"),
    })))
}

/// The query of `/api/v0/logs`.
#[derive(Debug, serde::Deserialize)]
pub struct LogQuery {
    node: String,
    pid: u32,
    #[serde(default)]
    offset: u64,
}

/// `GET /api/v0/logs?node=N&pid=P&offset=O`: part of a worker's log.
pub async fn logs(
    State(app): State<Arc<App>>,
    Extension(role): Extension<Role>,
    Query(q): Query<LogQuery>,
) -> Result<Json<Value>, ApiError> {
    let src = app.source.view(&role);
    let node = q
        .node
        .parse()
        .map_err(|_| bad_request(format!("node={:?} is not a node id", q.node)))?;
    let req = HeadRequest::WorkerLog {
        node_id: node,
        pid: q.pid,
        offset: q.offset,
    };
    match src.request(&req).await? {
        HeadResponse::WorkerLog(LogChunk::Data { data, next }) => Ok(Json(json!({
            "data": String::from_utf8_lossy(&data),
            "next": next,
        }))),
        HeadResponse::WorkerLog(LogChunk::Missing(why)) => {
            Err(ApiError(StatusCode::NOT_FOUND, why))
        }
        other => Err(bad_request(format!("unexpected answer {other:?}"))),
    }
}

/// `GET /api/v0/timeline?job=J`: the tasks' runs as a Chrome trace.
pub async fn timeline(
    State(app): State<Arc<App>>,
    Extension(role): Extension<Role>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let src = app.source.view(&role);
    let tasks = match src.request(&HeadRequest::ListTasks).await? {
        HeadResponse::Tasks(t) => t,
        other => return Err(bad_request(format!("unexpected answer {other:?}"))),
    };
    let job = params.get("job").filter(|j| !j.is_empty());
    let tasks: Vec<_> = tasks
        .into_iter()
        .filter(|t| job.is_none_or(|j| t.job_id.to_string().starts_with(j.as_str())))
        .collect();
    Ok(Json(prism::views::chrome_trace(&tasks)))
}

/// `POST /api/v0/jobs/{id}/stop`: admins, and users the head lets.
pub async fn stop_job(
    State(app): State<Arc<App>>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if role == Role::Viewer {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "stopping a job needs the cluster token or a user allowed to (this session has the read-only dashboard token)".into(),
        ));
    }
    let src = app.source.view(&role);
    let job_id = id
        .parse()
        .map_err(|_| bad_request(format!("{id:?} is not a job id")))?;
    match src.request(&HeadRequest::StopJob { job_id }).await? {
        HeadResponse::Ok => Ok(Json(json!({"stopped": id}))),
        other => Err(bad_request(format!("unexpected answer {other:?}"))),
    }
}

/// `GET /api/v0/whoami`: who the caller is and whether it may stop jobs
/// (the pages show the stop buttons by it; the head decides anyway).
pub async fn whoami(
    State(app): State<Arc<App>>,
    Extension(role): Extension<Role>,
) -> Result<Json<Value>, ApiError> {
    if role == Role::Admin {
        return Ok(Json(
            json!({ "role": "admin", "user": "admin", "namespaces": ["*"], "can_stop": true }),
        ));
    }
    // Users and the read-only token: as the head knows them.
    let req = HeadRequest::Access(prism::proto::access::AccessRequest::WhoAmI);
    match app.source.view(&role).request(&req).await? {
        HeadResponse::Access(prism::proto::access::AccessReply::Me(me)) => {
            let can_stop = me.permissions.iter().any(|p| p.starts_with("jobs:stop"));
            Ok(Json(json!({
                "role": me.role, "user": me.name, "namespaces": me.namespaces, "can_stop": can_stop,
            })))
        }
        other => Err(bad_request(format!("unexpected answer {other:?}"))),
    }
}

/// `GET /api/v0/runs`: training runs, most recently updated first.
pub async fn runs(
    State(app): State<Arc<App>>,
    Extension(role): Extension<Role>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<prism::views::Page>, ApiError> {
    let src = app.source.view(&role);
    let q = row_query(params)?;
    let runs = match src.request(&HeadRequest::ListRuns).await? {
        HeadResponse::Runs(r) => r,
        other => return Err(bad_request(format!("unexpected answer {other:?}"))),
    };
    let rows: Vec<Value> = runs
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .collect();
    Ok(Json(q.apply_refs(&rows).map_err(bad_request)?))
}

/// `GET /api/v0/runs/{id}`: one run's points, as `{run, points}`.
pub async fn run(
    State(app): State<Arc<App>>,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let src = app.source.view(&role);
    match src
        .request(&HeadRequest::GetRun { run_id: id.clone() })
        .await?
    {
        HeadResponse::Run(Some((info, points))) => Ok(Json(json!({"run": info, "points": points}))),
        HeadResponse::Run(None) => Err(ApiError(StatusCode::NOT_FOUND, format!("no run {id:?}"))),
        other => Err(bad_request(format!("unexpected answer {other:?}"))),
    }
}

/// One model as a row of `/api/v0/models`: its namespace, how many
/// versions, its aliases (`champion=v2`), and its latest version's run
/// and metrics.
fn model_row(m: &ModelInfo) -> Value {
    let latest = m.versions.last();
    let aliases: Vec<String> = m.aliases.iter().map(|(a, v)| format!("{a}=v{v}")).collect();
    json!({
        "name": m.name,
        "namespace": m.namespace,
        "versions": m.versions.len(),
        "aliases": aliases,
        "latest_version": latest.map(|v| v.version),
        "latest_run": latest.map(|v| v.run_id.clone()),
        "latest_metrics": latest.map(|v| v.metrics.clone()).unwrap_or_default(),
        "updated_ms": m.history.last().map(|e| e.at_ms),
    })
}

/// `GET /api/v0/models`: the model registry, one row per model the
/// caller may see (the head scopes it by namespace), with the tables'
/// filters and paging.
pub async fn models(
    State(app): State<Arc<App>>,
    Extension(role): Extension<Role>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<prism::views::Page>, ApiError> {
    let src = app.source.view(&role);
    let q = row_query(params)?;
    let models = match src
        .request(&HeadRequest::Models(ModelRequest::List))
        .await?
    {
        HeadResponse::Models(m) => m,
        other => return Err(bad_request(format!("unexpected answer {other:?}"))),
    };
    let rows: Vec<Value> = models.iter().map(model_row).collect();
    Ok(Json(q.apply_refs(&rows).map_err(bad_request)?))
}

/// `GET /api/v0/models/{name}[?namespace=NS]`: one model whole: its
/// versions with their runs, metrics and cards, its aliases and its
/// history. Without `namespace`, the one of the caller's namespaces that
/// has a model of that name (MN-2).
pub async fn model(
    State(app): State<Arc<App>>,
    Extension(role): Extension<Role>,
    Path(name): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<ModelInfo>, ApiError> {
    let src = app.source.view(&role);
    let mut namespace = String::new();
    for (k, v) in params {
        match k.as_str() {
            "namespace" => namespace = v,
            other => {
                return Err(bad_request(format!(
                    "unknown parameter {other:?} (namespace)"
                )))
            }
        }
    }
    let req = HeadRequest::Models(ModelRequest::Show {
        namespace,
        name: name.clone(),
    });
    match src.request(&req).await {
        Ok(HeadResponse::Models(mut m)) if !m.is_empty() => Ok(Json(m.remove(0))),
        // Left out by the caller's namespaces after the gate let it by
        // (the model moved meanwhile): as if unknown.
        Ok(HeadResponse::Models(_)) => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no model named {name:?}"),
        )),
        // The registry's own words for a name it does not hold.
        Err(SourceError::Head(e)) if e.starts_with("no model named") => {
            Err(ApiError(StatusCode::NOT_FOUND, e))
        }
        Err(e) => Err(e.into()),
        Ok(other) => Err(bad_request(format!("unexpected answer {other:?}"))),
    }
}
