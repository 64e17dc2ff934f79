//! The proxy's Prometheus metrics (`GET /-/metrics`): requests by
//! deployment and status code, their latency as a histogram, and at scrape
//! time each deployment's replicas and queued requests as this proxy sees
//! them. Replica-side counters (batches, per-replica latency) are in
//! `prism serve status`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answer {
    deployment: String,
    version: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Versioned {
    deployment: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Dep {
    deployment: String,
}

/// The proxy's counters.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<Answer, Counter>,
    latency: Family<Versioned, Histogram>,
    replicas: Family<Dep, Gauge>,
    queued: Family<Dep, Gauge>,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~26 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        50e-6, 2.0, 20,
    ))
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("prism_serve");
        let requests = Family::<Answer, Counter>::default();
        let latency = Family::<Versioned, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let replicas = Family::<Dep, Gauge>::default();
        let queued = Family::<Dep, Gauge>::default();
        registry.register(
            "requests",
            "HTTP requests answered, by deployment, version and status code",
            requests.clone(),
        );
        registry.register(
            "request_latency_seconds",
            "time from request to answer at the proxy",
            latency.clone(),
        );
        registry.register(
            "replicas",
            "replicas this proxy routes to",
            replicas.clone(),
        );
        registry.register(
            "queued_requests",
            "requests waiting for a replica in this proxy",
            queued.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            replicas,
            queued,
        }
    }

    /// One answered request (by `version` of the deployment).
    pub(crate) fn answered(&self, deployment: &str, version: &str, code: u16, took: Duration) {
        self.requests
            .get_or_create(&Answer {
                deployment: deployment.to_string(),
                version: version.to_string(),
                code,
            })
            .inc();
        self.latency
            .get_or_create(&Versioned {
                deployment: deployment.to_string(),
                version: version.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// The text exposition, with `(deployment, replicas, queued)` now.
    pub(crate) fn encode(&self, now: &[(String, usize, u32)]) -> String {
        for (d, replicas, queued) in now {
            let dep = Dep {
                deployment: d.clone(),
            };
            self.replicas.get_or_create(&dep).set(*replicas as i64);
            self.queued.get_or_create(&dep).set(*queued as i64);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_counts_histogram_and_gauges() {
        let m = Metrics::new();
        m.answered("digits", "v1", 200, Duration::from_micros(300));
        m.answered("digits", "v1", 503, Duration::from_micros(40));
        m.answered("digits", "v2", 200, Duration::from_micros(40));
        let text = m.encode(&[("digits".into(), 2, 5)]);
        assert!(
            text.contains(
                r#"prism_serve_requests_total{deployment="digits",version="v1",code="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"prism_serve_requests_total{deployment="digits",version="v2",code="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "prism_serve_request_latency_seconds_count{deployment=\"digits\",version=\"v1\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"prism_serve_replicas{deployment="digits"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"prism_serve_queued_requests{deployment="digits"} 5"#),
            "{text}"
        );
    }
}
