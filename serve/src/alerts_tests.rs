use super::*;
use proptest::prelude::*;

fn engine(for_s: u64) -> Engine {
    Engine::new(Rules {
        rules: vec![Rule {
            name: "errors".into(),
            metric: Metric::ErrorRate,
            threshold: 0.01,
            for_s,
            severity: "critical".into(),
            deployment: None,
            webhooks: vec!["http://127.0.0.1:9/hook".into()],
            run: Vec::new(),
        }],
    })
}

fn err(v: f64) -> Vec<(String, Metric, f64)> {
    vec![("r".into(), Metric::ErrorRate, v)]
}

#[test]
fn one_notice_per_incident_and_one_when_it_ends() {
    let mut e = engine(10);
    assert!(
        e.evaluate(0, 0, &err(0.5)).is_empty(),
        "pending, not firing"
    );
    assert!(e.evaluate(9_999, 0, &err(0.5)).is_empty());
    let fired = e.evaluate(10_000, 7, &err(0.5));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].kind, Kind::Firing);
    assert_eq!(fired[0].at_unix_ms, 7);
    assert_eq!(
        fired[0].text(),
        "[FIRING critical] error_rate of r is 0.5000 > 0.01 (rule errors)"
    );
    for t in 11..60 {
        assert!(
            e.evaluate(t * 1000, 0, &err(0.5)).is_empty(),
            "deduplicated"
        );
    }
    assert_eq!(e.firing(), vec![("errors".to_string(), "r".to_string())]);
    assert!(e.evaluate(60_000, 0, &err(0.0)).is_empty(), "recovering");
    let resolved = e.evaluate(70_000, 0, &err(0.0));
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].kind, Kind::Resolved);
    assert!(e.firing().is_empty());
}

#[test]
fn a_blip_shorter_than_for_s_fires_nothing_and_a_relapse_keeps_firing() {
    let mut e = engine(10);
    e.evaluate(0, 0, &err(0.5));
    assert!(e.evaluate(5_000, 0, &err(0.0)).is_empty());
    assert!(
        e.evaluate(20_000, 0, &err(0.5)).is_empty(),
        "the clock restarted"
    );
    assert_eq!(e.evaluate(30_000, 0, &err(0.5)).len(), 1);
    e.evaluate(31_000, 0, &err(0.0));
    e.evaluate(35_000, 0, &err(0.5));
    assert!(
        e.evaluate(50_000, 0, &err(0.0)).is_empty(),
        "a relapse restarts the recovery clock"
    );
}

#[test]
fn rules_scope_to_their_deployment_and_metric() {
    let mut e = engine(0);
    let mut rules = e.rules().clone();
    rules.rules[0].deployment = Some("other".into());
    e = Engine::new(rules);
    assert!(e.evaluate(0, 0, &err(0.9)).is_empty());
    let mut e = engine(0);
    assert!(e
        .evaluate(0, 0, &[("r".into(), Metric::DriftScore, 9.0)])
        .is_empty());
}

#[test]
fn defaults_are_the_seeds_thresholds_and_bad_rules_are_named() {
    let d = Rules::default();
    let t: Vec<(Metric, f64)> = d.rules.iter().map(|r| (r.metric, r.threshold)).collect();
    assert_eq!(
        t[..3],
        [
            (Metric::P99LatencyMs, 500.0),
            (Metric::ErrorRate, 0.01),
            (Metric::DriftScore, 0.15)
        ]
    );
    assert!(d.rules[3..].iter().all(|r| r.metric.is_event()));
    assert!(d.validate().is_ok());
    let mut bad = d.clone();
    bad.rules[1].name = "p99-latency".into();
    assert!(bad.validate().unwrap_err().contains("unique"));
    let mut bad = d;
    bad.rules[0].webhooks = vec!["https://hooks.example/x".into()];
    assert!(bad.validate().unwrap_err().contains("http://"));
}

proptest! {
    /// Whatever the values, firing and resolved notices alternate, starting
    /// with firing, for each (rule, deployment).
    #[test]
    fn notices_alternate(values in prop::collection::vec(0.0f64..0.02, 1..200), hold in 0u64..5) {
        let mut e = engine(hold);
        let mut last = None;
        for (i, v) in values.into_iter().enumerate() {
            for n in e.evaluate(i as u64 * 1000, 0, &err(v)) {
                match (last, n.kind) {
                    (None | Some(Kind::Resolved), Kind::Firing) | (Some(Kind::Firing), Kind::Resolved) => {}
                    other => prop_assert!(false, "out of order: {other:?}"),
                }
                last = Some(n.kind);
            }
        }
    }
}

#[test]
fn the_shipped_rules_file_is_the_default_and_mistakes_name_their_line() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts.yaml");
    assert_eq!(Rules::load(&path).unwrap(), Rules::default());
    let dir = std::env::temp_dir().join(format!("prism-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "rules:\n  - name: x\n    metric: latency\n    threshold: 1\n",
    )
    .unwrap();
    let e = Rules::load(&bad).unwrap_err().to_string();
    assert!(
        e.contains("bad.yaml:3:") && e.contains("rules[0].metric"),
        "{e}"
    );
    std::fs::write(
        &bad,
        "rules:\n  - {name: x, metric: error_rate, threshold: 1, webhooks: [ftp://x]}\n",
    )
    .unwrap();
    let e = Rules::load(&bad).unwrap_err().to_string();
    assert!(e.contains("http://"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn events_give_one_notice_each_even_across_new_rules() {
    let mut e = Engine::new(Rules::default());
    let ev = vec![
        (
            Metric::RunFailed,
            "run-1".to_string(),
            "failed: boom".to_string(),
        ),
        (
            Metric::NodeDead,
            "host-a #1".to_string(),
            "missed heartbeats".to_string(),
        ),
    ];
    let first = e.events(5, &ev);
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|n| n.kind == Kind::Event));
    assert_eq!(
        first[0].text(),
        "[critical] run_failed run-1: failed: boom (rule run-failed)"
    );
    assert!(e.events(6, &ev).is_empty(), "deduplicated");
    let mut again = Engine::new(Rules::default());
    again.carry_over(e);
    assert!(
        again.events(7, &ev).is_empty(),
        "new rules keep what was sent"
    );
    assert!(
        again
            .evaluate(0, 0, &[("r".into(), Metric::RunFailed, 1.0)])
            .is_empty(),
        "events are not thresholds"
    );
}

#[test]
fn unchanged_rules_keep_their_alerts_and_gone_deployments_resolve() {
    let mut e = engine(0);
    assert_eq!(e.evaluate(0, 0, &err(0.5)).len(), 1);
    let mut same = engine(0);
    same.carry_over(e);
    assert!(
        same.evaluate(1_000, 0, &err(0.5)).is_empty(),
        "still firing, not again"
    );
    let resolved = same.forget_gone(9, |d| d != "r");
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].kind, Kind::Resolved);
    assert_eq!(resolved[0].detail, "the deployment is gone");
    assert!(same.firing().is_empty());
}

#[test]
fn a_pending_alert_not_measured_starts_its_clock_again() {
    let mut e = engine(10);
    e.evaluate(0, 0, &err(0.5));
    // Too few requests for a while: no value for "r".
    e.evaluate(5_000, 0, &[]);
    assert!(
        e.evaluate(10_000, 0, &err(0.5)).is_empty(),
        "not 10 s over the threshold"
    );
    assert_eq!(e.evaluate(20_000, 0, &err(0.5)).len(), 1);
}
