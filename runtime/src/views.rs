//! The rows of the state API and the query over them. `prism list … --json`
//! and the dashboard's `/api/v0/*` show the same rows (one model: the
//! head's [`ActorInfo`](crate::proto::head::ActorInfo), `JobInfo`, `PgInfo`,
//! the raylets' `TaskInfo`, `ObjectInfo`, `WorkerInfo`, and [`NodeView`]
//! here) through the same [`Query`]: filters, sorting, paging. Also the
//! Chrome trace of `prism timeline`. Pure.

use crate::ids::NodeId;
use crate::proto::common::{GpuInfo, NodeState, NodeStatus, Resources};
use crate::proto::state::TaskInfo;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// A node as the state API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// Its id.
    pub node_id: NodeId,
    /// `alive`, `suspect` or `dead`.
    pub state: NodeState,
    /// Its name.
    pub name: String,
    /// Its raylet's address.
    pub address: String,
    /// Whether the head runs there.
    pub is_head: bool,
    /// Why it died.
    pub death_reason: Option<String>,
    /// Its incarnation under its name.
    pub incarnation: u64,
    /// Its raylet's pid.
    pub pid: u32,
    /// What it offers (`CPU`, `GPU`, `memory`, `object_store_memory`, custom).
    pub resources_total: BTreeMap<String, f64>,
    /// What is free now.
    pub resources_available: BTreeMap<String, f64>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its GPUs.
    pub gpus: Vec<GpuInfo>,
    /// Milliseconds since its last heartbeat.
    pub last_heartbeat_ms_ago: u64,
}

fn amounts(r: &Resources) -> BTreeMap<String, f64> {
    r.to_set()
        .iter()
        .map(|(k, q)| (k.to_string(), q.as_f64()))
        .collect()
}

impl NodeView {
    /// The view of one node of the head's status.
    pub fn from_status(n: &NodeStatus) -> NodeView {
        NodeView {
            node_id: n.node_id,
            state: n.state,
            name: n.name.clone(),
            address: n.address.clone(),
            is_head: n.is_head,
            death_reason: n.death_reason.clone(),
            incarnation: n.incarnation,
            pid: n.pid,
            resources_total: amounts(&n.total),
            resources_available: amounts(&n.available),
            labels: n.labels.iter().cloned().collect(),
            gpus: n.gpus.clone(),
            last_heartbeat_ms_ago: n.last_heartbeat_ms_ago,
        }
    }
}

/// A query the state API cannot answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// A filter or sort names a field the rows do not have.
    #[error("unknown field {field:?}; these rows have: {known}")]
    UnknownField {
        /// The field asked for.
        field: String,
        /// The fields there are.
        known: String,
    },
    /// A number did not parse.
    #[error("{param}={value:?} is not a non-negative whole number")]
    BadNumber {
        /// `limit` or `offset`.
        param: String,
        /// What was given.
        value: String,
    },
    /// `order` was not `asc` or `desc`.
    #[error("order={0:?}: use asc or desc")]
    BadOrder(String),
}

/// Filters (`field=value`, all must hold), a sort and a page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// `(field, value)`: the row's field equals the value (case-insensitive;
    /// ids also match by prefix, so a short id works).
    pub filters: Vec<(String, String)>,
    /// Sort by this field.
    pub sort: Option<String>,
    /// Largest first.
    pub descending: bool,
    /// At most this many rows.
    pub limit: Option<usize>,
    /// Skip this many rows first.
    pub offset: usize,
}

/// One page of rows.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// Rows that passed the filters (before paging).
    pub total: usize,
    /// Rows skipped.
    pub offset: usize,
    /// The page size asked for.
    pub limit: Option<usize>,
    /// The rows of this page.
    pub rows: Vec<Value>,
}

/// Short names for fields: `job` for `job_id`, and so on.
fn field_name(f: &str) -> String {
    match f {
        "job" => "job_id".into(),
        "node" => "node_id".into(),
        "actor" => "actor_id".into(),
        "task" => "task_id".into(),
        "object" => "object_id".into(),
        "worker" => "worker_id".into(),
        "pg" | "placement_group" => "pg".into(),
        other => other.to_string(),
    }
}

impl Query {
    /// From URL query pairs or `--filter` flags: `sort`, `order`
    /// (`asc`/`desc`), `limit` and `offset` are the query's; every other
    /// pair is a filter.
    pub fn parse<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Query, QueryError> {
        let mut q = Query::default();
        let number = |k: &str, v: &str| {
            v.parse::<usize>().map_err(|_| QueryError::BadNumber {
                param: k.into(),
                value: v.into(),
            })
        };
        for (k, v) in pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            match k {
                "sort" | "sort_by" => q.sort = Some(field_name(v)),
                "order" => {
                    q.descending = match v {
                        "asc" => false,
                        "desc" => true,
                        other => return Err(QueryError::BadOrder(other.into())),
                    }
                }
                "limit" => q.limit = Some(number(k, v)?),
                "offset" => q.offset = number(k, v)?,
                _ if v.is_empty() => {}
                _ => q.filters.push((field_name(k), v.to_string())),
            }
        }
        Ok(q)
    }

    /// The page of `rows` this query asks for.
    pub fn apply<T: Serialize>(&self, rows: &[T]) -> Result<Page, QueryError> {
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
            .collect();
        self.apply_values(rows)
    }

    /// [`Query::apply`] on rows already in JSON.
    pub fn apply_values(&self, rows: Vec<Value>) -> Result<Page, QueryError> {
        self.apply_refs(&rows)
    }

    /// [`Query::apply`] on borrowed JSON rows: only the page is copied.
    pub fn apply_refs(&self, rows: &[Value]) -> Result<Page, QueryError> {
        if let Some(first) = rows.first().and_then(Value::as_object) {
            let wanted = self.filters.iter().map(|(f, _)| f).chain(self.sort.iter());
            for f in wanted {
                if !first.contains_key(f) {
                    return Err(QueryError::UnknownField {
                        field: f.clone(),
                        known: first.keys().cloned().collect::<Vec<_>>().join(", "),
                    });
                }
            }
        }
        let mut kept: Vec<&Value> = rows
            .iter()
            .filter(|r| {
                self.filters
                    .iter()
                    .all(|(f, want)| r.get(f).is_some_and(|v| matches(v, want)))
            })
            .collect();
        if let Some(f) = &self.sort {
            kept.sort_by(|a, b| compare(a.get(f), b.get(f)));
            if self.descending {
                kept.reverse();
            }
        }
        let total = kept.len();
        let rows = kept
            .into_iter()
            .skip(self.offset)
            .take(self.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        Ok(Page {
            total,
            offset: self.offset,
            limit: self.limit,
            rows,
        })
    }

    /// The same query as a [`TaskFilter`](crate::proto::state::TaskFilter)
    /// the raylets can apply themselves, when it only filters by state,
    /// job, name and node and sorts newest first by one of the task's
    /// times (newest arrival is the tasks' default order).
    pub fn task_filter(&self) -> Option<crate::proto::state::TaskFilter> {
        use crate::proto::state::TaskTime;
        let by = match &self.sort {
            None => TaskTime::Submitted,
            Some(f) if self.descending => TaskTime::parse(f)?,
            Some(_) => return None,
        };
        let mut f = crate::proto::state::TaskFilter {
            by,
            newest: (self.offset + self.limit.unwrap_or(usize::MAX - self.offset))
                .min(u32::MAX as usize) as u32,
            ..Default::default()
        };
        for (field, v) in &self.filters {
            match field.as_str() {
                "state" => f.state = Some(crate::proto::state::TaskState::parse(v)?),
                "job_id" => f.job = Some(v.clone()),
                "node_id" => f.node = Some(v.clone()),
                "name" => f.name = Some(v.clone()),
                _ => return None,
            }
        }
        Some(f)
    }
}

/// Whether a field's value matches a filter's text.
fn matches(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => {
            s.eq_ignore_ascii_case(want)
                || (want.len() >= 4 && s.len() > want.len() && is_id(s) && s.starts_with(want))
        }
        Value::Null => want == "null" || want == "none",
        Value::Array(items) => items.iter().any(|i| matches(i, want)),
        other => want == other.to_string().as_str(),
    }
}

/// `n-…`, `j-…`, `a-…`: an id, which short forms may name.
fn is_id(s: &str) -> bool {
    s.as_bytes().get(1) == Some(&b'-')
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Null) | None, Some(Value::Null) | None) => Ordering::Equal,
        (Some(Value::Null) | None, _) => Ordering::Greater,
        (_, Some(Value::Null) | None) => Ordering::Less,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

/// Tasks as a Chrome trace (`chrome://tracing`, Perfetto): one process per
/// node, one thread per worker, one complete event per task run, like
/// `ray timeline`.
pub fn chrome_trace(tasks: &[TaskInfo]) -> Value {
    let mut events = Vec::new();
    let mut nodes: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        let (Some(start), Some(end)) = (t.started_us, t.ended_us) else {
            continue;
        };
        let n = nodes.len() as u64 + 1;
        let pid = *nodes.entry(t.node_id.to_string()).or_insert(n);
        events.push(json!({
            "name": t.name,
            "cat": t.kind,
            "ph": "X",
            "ts": start,
            "dur": end.saturating_sub(start),
            "pid": pid,
            "tid": t.worker_pid.unwrap_or(0),
            "args": {
                "task_id": t.task_id,
                "job_id": t.job_id,
                "state": t.state,
                "queued_us": start.saturating_sub(t.submitted_us),
                "error": t.error,
            },
        }));
    }
    for (node, pid) in &nodes {
        let mut args = Map::new();
        args.insert("name".into(), Value::String(format!("node {node}")));
        events.push(json!({"name": "process_name", "ph": "M", "pid": pid, "args": args}));
    }
    Value::Array(events)
}

#[cfg(test)]
mod tests;
