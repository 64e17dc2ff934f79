//! `/metrics`: the whole cluster in Prometheus' text format, gathered on
//! each scrape from the head (nodes, actors, jobs, placement groups, its
//! request latency) and every raylet (tasks, store, transfers, users'
//! metrics), encoded by the official `prometheus-client`.

use crate::source::SourceError;
use crate::App;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prism::client::Table;
use prism::metrics::{Histogram, MetricKind, MetricValue, MetricsTable};
use prism::proto::head::{HeadRequest, HeadResponse};
use prism::proto::state::NodeMetrics;
use prism::views::NodeView;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Arc;

type Labels = Vec<(String, String)>;

/// Everything one scrape shows.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The head's node table.
    pub nodes: Vec<NodeView>,
    /// Actors by state.
    pub actors: BTreeMap<String, u64>,
    /// Jobs by state.
    pub jobs: BTreeMap<String, u64>,
    /// Placement groups by state.
    pub groups: BTreeMap<String, u64>,
    /// The head's request latency.
    pub head_requests: Histogram,
    /// Each raylet's counters.
    pub raylets: Vec<NodeMetrics>,
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, f64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, f64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, &Histogram)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in rows {
        m.encode_family(labels)?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                h.sum,
                h.count,
                &h.buckets(),
                None,
            )?;
    }
    Ok(())
}

fn by_state(map: &BTreeMap<String, u64>) -> Vec<(Labels, f64)> {
    map.iter()
        .map(|(s, n)| (vec![("state".to_string(), s.clone())], *n as f64))
        .collect()
}

impl Snapshot {
    fn per_node(&self, f: impl Fn(&NodeMetrics) -> u64) -> Vec<(Labels, f64)> {
        self.raylets
            .iter()
            .map(|m| {
                let node = m.node_id.map(|n| n.to_string()).unwrap_or_default();
                (vec![("node".to_string(), node)], f(m) as f64)
            })
            .collect()
    }

    fn encode_cluster(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let mut states: BTreeMap<String, u64> = BTreeMap::new();
        let (mut total, mut used) = (Vec::new(), Vec::new());
        for n in &self.nodes {
            *states
                .entry(format!("{:?}", n.state).to_lowercase())
                .or_default() += 1;
            if n.state == prism::proto::common::NodeState::Dead {
                continue;
            }
            for (r, t) in &n.resources_total {
                let labels = vec![
                    ("node".to_string(), n.node_id.to_string()),
                    ("resource".to_string(), r.clone()),
                ];
                let free = n.resources_available.get(r).copied().unwrap_or(0.0);
                used.push((labels.clone(), t - free));
                total.push((labels, *t));
            }
        }
        gauge(enc, "prism_nodes", "Nodes by state.", &by_state(&states))?;
        gauge(
            enc,
            "prism_node_resource_total",
            "Resources a node offers.",
            &total,
        )?;
        gauge(
            enc,
            "prism_node_resource_used",
            "Resources in use on a node.",
            &used,
        )?;
        gauge(
            enc,
            "prism_actors",
            "Actors by state.",
            &by_state(&self.actors),
        )?;
        gauge(enc, "prism_jobs", "Jobs by state.", &by_state(&self.jobs))?;
        gauge(
            enc,
            "prism_placement_groups",
            "Placement groups by state.",
            &by_state(&self.groups),
        )?;
        histogram(
            enc,
            "prism_head_request_seconds",
            "Time the head took to answer a request.",
            &[(vec![], &self.head_requests)],
        )
    }

    fn encode_raylets(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let mut tasks: Vec<(Labels, f64)> = Vec::new();
        for m in &self.raylets {
            let node = m.node_id.map(|n| n.to_string()).unwrap_or_default();
            for (state, n) in [("queued", m.tasks_queued), ("running", m.tasks_running)] {
                tasks.push((
                    vec![
                        ("node".into(), node.clone()),
                        ("state".into(), state.into()),
                    ],
                    n as f64,
                ));
            }
        }
        gauge(
            enc,
            "prism_tasks",
            "Tasks queued or running now, by node.",
            &tasks,
        )?;
        counter(
            enc,
            "prism_tasks_finished",
            "Tasks that returned a result.",
            &self.per_node(|m| m.tasks_finished),
        )?;
        counter(
            enc,
            "prism_tasks_failed",
            "Tasks that failed.",
            &self.per_node(|m| m.tasks_failed),
        )?;
        gauge(
            enc,
            "prism_leases_held",
            "Workers leased to owners now (their tasks bypass the raylet).",
            &self.per_node(|m| m.leases_held),
        )?;
        gauge(
            enc,
            "prism_leases_waiting",
            "Lease requests waiting their turn in a raylet's queue now.",
            &self.per_node(|m| m.leases_waiting),
        )?;
        counter(
            enc,
            "prism_leases_granted",
            "Worker leases granted.",
            &self.per_node(|m| m.leases_granted),
        )?;
        counter(
            enc,
            "prism_work_refused",
            "Work a raylet refused because it was sent for another incarnation of its node.",
            &self.per_node(|m| m.work_refused),
        )?;
        let hists: Vec<(Labels, &Histogram)> = self
            .raylets
            .iter()
            .map(|m| {
                (
                    vec![(
                        "node".to_string(),
                        m.node_id.map(|n| n.to_string()).unwrap_or_default(),
                    )],
                    &m.task_seconds,
                )
            })
            .collect();
        histogram(
            enc,
            "prism_task_seconds",
            "Task run time, start to end.",
            &hists,
        )?;
        gauge(
            enc,
            "prism_object_store_capacity_bytes",
            "Object store size.",
            &self.per_node(|m| m.store_capacity),
        )?;
        gauge(
            enc,
            "prism_object_store_used_bytes",
            "Object store bytes in use.",
            &self.per_node(|m| m.store_used),
        )?;
        gauge(
            enc,
            "prism_object_store_objects",
            "Objects held.",
            &self.per_node(|m| m.store_objects),
        )?;
        gauge(
            enc,
            "prism_object_store_spilled_bytes",
            "Bytes of objects spilled to disk.",
            &self.per_node(|m| m.store_spilled_bytes),
        )?;
        counter(
            enc,
            "prism_object_spills",
            "Objects spilled to disk.",
            &self.per_node(|m| m.spills),
        )?;
        counter(
            enc,
            "prism_object_evictions",
            "Objects evicted.",
            &self.per_node(|m| m.evictions),
        )?;
        counter(
            enc,
            "prism_transfer_sent_bytes",
            "Object bytes sent to other nodes.",
            &self.per_node(|m| m.bytes_sent),
        )?;
        counter(
            enc,
            "prism_transfer_received_bytes",
            "Object bytes pulled from other nodes.",
            &self.per_node(|m| m.bytes_received),
        )?;
        gauge(
            enc,
            "prism_workers",
            "Worker processes.",
            &self.per_node(|m| m.workers),
        )
    }

    /// Users' metrics, summed over nodes (gauges: each node's last value, summed).
    fn encode_user(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let mut table = MetricsTable::default();
        for m in &self.raylets {
            table.add(&m.user);
        }
        let mut by_name: BTreeMap<(String, MetricKind), Vec<MetricValue>> = BTreeMap::new();
        for v in table.values() {
            by_name.entry((v.name.clone(), v.kind)).or_default().push(v);
        }
        for ((name, kind), values) in by_name {
            let help = "A user metric (prism::metrics).";
            match kind {
                MetricKind::Counter => {
                    let rows: Vec<_> = values.iter().map(|v| (v.tags.clone(), v.value)).collect();
                    counter(enc, &name, help, &rows)?;
                }
                MetricKind::Gauge => {
                    let rows: Vec<_> = values.iter().map(|v| (v.tags.clone(), v.value)).collect();
                    gauge(enc, &name, help, &rows)?;
                }
                MetricKind::Histogram => {
                    let rows: Vec<_> = values.iter().map(|v| (v.tags.clone(), &v.hist)).collect();
                    histogram(enc, &name, help, &rows)?;
                }
            }
        }
        Ok(())
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        self.encode_cluster(&mut enc)?;
        self.encode_raylets(&mut enc)?;
        self.encode_user(&mut enc)
    }
}

/// The Prometheus text of a snapshot.
pub fn render(snapshot: Snapshot) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

fn count(rows: &[serde_json::Value]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in rows {
        *out.entry(r["state"].as_str().unwrap_or("unknown").to_string())
            .or_default() += 1;
    }
    out
}

async fn gather(app: &App, role: &crate::auth::Role) -> Result<Snapshot, SourceError> {
    let src = app.source.view(role);
    let nodes: Vec<NodeView> = match src.request(&HeadRequest::GetStatus).await? {
        HeadResponse::Status(s) => s.nodes.iter().map(NodeView::from_status).collect(),
        other => return Err(SourceError::Head(format!("unexpected answer {other:?}"))),
    };
    let (head_requests, raylets) = match src.request(&HeadRequest::Metrics).await? {
        HeadResponse::Metrics {
            head_requests,
            nodes,
        } => (head_requests, nodes),
        other => return Err(SourceError::Head(format!("unexpected answer {other:?}"))),
    };
    Ok(Snapshot {
        nodes,
        actors: count(&src.rows(Table::Actors).await?),
        jobs: count(&src.rows(Table::Jobs).await?),
        groups: count(&src.rows(Table::PlacementGroups).await?),
        head_requests,
        raylets,
    })
}

/// `GET /metrics`.
pub async fn scrape(
    State(app): State<Arc<App>>,
    axum::Extension(role): axum::Extension<crate::auth::Role>,
) -> Response {
    match gather(&app, &role).await.map(render) {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_counters_sum_over_nodes_and_histograms_are_cumulative() {
        let mut user = MetricsTable::default();
        user.apply(&prism::metrics::MetricUpdate {
            name: "hits".into(),
            tags: vec![("route".into(), "/a".into())],
            kind: MetricKind::Counter,
            value: 60.0,
            hist: Histogram::default(),
        });
        let mut other = user.clone();
        other.apply(&prism::metrics::MetricUpdate {
            name: "hits".into(),
            tags: vec![("route".into(), "/a".into())],
            kind: MetricKind::Counter,
            value: -20.0,
            hist: Histogram::default(),
        });
        let mut h = Histogram::default();
        h.observe(0.2);
        let snap = Snapshot {
            raylets: vec![
                NodeMetrics {
                    user: user.values(),
                    task_seconds: h.clone(),
                    leases_granted: 7,
                    work_refused: 2,
                    ..Default::default()
                },
                NodeMetrics {
                    user: other.values(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let text = render(snap).unwrap();
        assert!(text.contains("hits_total{route=\"/a\"} 100.0"), "{text}");
        assert!(
            text.contains("prism_leases_granted_total{node=\"\"} 7")
                && text.contains("prism_work_refused_total{node=\"\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("prism_task_seconds_bucket{le=\"0.25\",node=\"\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("prism_task_seconds_bucket{le=\"+Inf\",node=\"\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE prism_head_request_seconds histogram"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
