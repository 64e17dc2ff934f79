//! Rollouts on an embedded cluster under open-loop load (the load
//! generator of `prism serve bench`): a broken canary rolled back on its
//! own with no failed request, a good one promoted through every step, a
//! blue-green switch, shadow traffic that never changes an answer. Each
//! test runs a driver (this binary re-executed with PRISM_TEST_ROLE).

mod common;

use common::{calc, deployment, json_of, post};
use prism_serve::loadgen::{LoadReport, LoadSpec};
use prism_serve::{Application, RolloutSpec, Strategy, Thresholds};
use prism_test_support::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Serves `Calc` as deployment "r" (2 replicas, version v1) at /r.
fn serve() -> (prism::Cluster, String) {
    let c = prism::InitOptions::new().num_cpus(4.0).init().unwrap();
    let url = prism_serve::start("127.0.0.1", 0).unwrap();
    prism_serve::run(
        Application::new("r").deployment(
            calc("r")
                .replicas(2)
                .version("v1")
                .route_prefix("/r")
                .user_config(json!({"sum_only": true})),
        ),
    )
    .unwrap();
    (c, format!("{url}/r"))
}

/// 200 requests/s, open loop, until `stop` (at most 120 s).
fn load(url: &str, stop: &Arc<AtomicBool>) -> JoinHandle<LoadReport> {
    let mut spec = LoadSpec::new(url, 200.0, Duration::from_secs(120));
    spec.body = Some(b"[2, 3]".to_vec());
    let stop = stop.clone();
    std::thread::spawn(move || prism_serve::loadgen::run(&spec, Some(stop)).unwrap())
}

fn quick(t: Thresholds) -> Thresholds {
    Thresholds {
        window_s: 3,
        min_requests: 20,
        ..t
    }
}

fn finish(stop: &Arc<AtomicBool>, h: JoinHandle<LoadReport>) -> LoadReport {
    stop.store(true, Ordering::Relaxed);
    let r = h.join().unwrap();
    print!("load: {r}");
    r
}

fn challenger_gone(name: &str) -> bool {
    wait_until(Duration::from_secs(30), || deployment(name).is_null())
}

fn role_canary() {
    let (_c, url) = serve();
    let stop = Arc::new(AtomicBool::new(false));
    let h = load(&url, &stop);
    wait_until(Duration::from_secs(20), || {
        deployment("r")["window"]["requests"].as_u64() > Some(50)
    });
    // A broken version: every 10th answer is an error.
    let broken = RolloutSpec::new(
        "r",
        "v2",
        Strategy::Canary {
            steps: vec![20, 50, 100],
            step_s: 3,
        },
    )
    .user_config(json!({"sum_only": true, "fail_every": 10}))
    .thresholds(quick(Thresholds::default()));
    prism_serve::rollout(broken).unwrap();
    let end = prism_serve::wait_rollout("r", Duration::from_secs(90)).unwrap();
    println!("{}: {}", end.event, end.detail);
    check(
        end.event == "rolled back",
        "the broken canary is rolled back",
    );
    check(
        end.detail.contains("error rate"),
        "and the reason names the error rate",
    );
    let h_all = prism_serve::history("r").unwrap();
    let took = h_all
        .iter()
        .find(|e| e.event == "step")
        .map(|s| end.at_unix_ms.saturating_sub(s.at_unix_ms));
    println!("rolled back {took:?} ms after the canary took traffic");
    check(
        challenger_gone("r~v2"),
        "the broken version's replicas are gone",
    );
    check(deployment("r")["version_label"] == "v1", "v1 stays live");
    // A good version: every step, then promoted.
    let good = RolloutSpec::new(
        "r",
        "v3",
        Strategy::Canary {
            steps: vec![20, 50, 100],
            step_s: 2,
        },
    )
    .thresholds(quick(Thresholds::default()));
    prism_serve::rollout(good).unwrap();
    check(
        deployment("r~v3")["target_replicas"] == 1,
        "a 20% canary of 2 replicas starts with 1",
    );
    let end = prism_serve::wait_rollout("r", Duration::from_secs(90)).unwrap();
    println!("{}: {}", end.event, end.detail);
    let steps: Vec<String> = prism_serve::history("r")
        .unwrap()
        .into_iter()
        .filter(|e| e.to == "v3" && e.event == "step")
        .map(|e| e.detail)
        .collect();
    check(end.event == "promoted", "the good canary is promoted");
    check(steps.len() == 3, &format!("through every step: {steps:?}"));
    check(deployment("r")["version_label"] == "v3", "v3 is live");
    check(
        wait_until(Duration::from_secs(30), || {
            deployment("r")["replicas"].as_array().map(Vec::len) == Some(2)
        }),
        "with as many replicas as v1 had (the canary grew with its share)",
    );
    // After the swap the retired set (v1's replicas) drains under v3's
    // challenger name.
    check(challenger_gone("r~v3"), "v1's replicas drained");
    let r = finish(&stop, h);
    check(r.failures() == 0, "no request failed during either rollout");
    check(
        r.by_version.get("v2").copied().unwrap_or(0) > 0,
        "the canary answered its share before the rollback",
    );
    check(
        r.by_version.get("v3").copied().unwrap_or(0) > 0,
        "v3 answered",
    );
    println!("ALL OK");
}

fn role_blue_green() {
    let (_c, url) = serve();
    let stop = Arc::new(AtomicBool::new(false));
    let h = load(&url, &stop);
    let bg = RolloutSpec::new("r", "blue", Strategy::BlueGreen { keep_warm_s: 2 })
        .thresholds(quick(Thresholds::default()));
    prism_serve::rollout(bg).unwrap();
    let end = prism_serve::wait_rollout("r", Duration::from_secs(90)).unwrap();
    println!("{}: {}", end.event, end.detail);
    check(end.event == "promoted", "blue-green switches and promotes");
    check(
        challenger_gone("r~blue"),
        "the old set is retired after keep-warm",
    );
    let r = finish(&stop, h);
    check(r.failures() == 0, "no request failed across the switch");
    check(r.by_version.contains_key("blue"), "the new set answered");
    println!("ALL OK");
}

fn role_shadow() {
    let (_c, url) = serve();
    let stop = Arc::new(AtomicBool::new(false));
    let h = load(&url, &stop);
    let shadow = |version: &str, add: i64, min_agreement: f64| {
        RolloutSpec::new(
            "r",
            version,
            Strategy::Shadow {
                percent: 100,
                duration_s: 3,
                promote: false,
            },
        )
        .user_config(json!({"sum_only": true, "add": add}))
        .thresholds(quick(Thresholds {
            min_agreement,
            ..Thresholds::default()
        }))
    };
    // The same model: every mirrored answer agrees.
    prism_serve::rollout(shadow("twin", 0, 0.0)).unwrap();
    let end = prism_serve::wait_rollout("r", Duration::from_secs(60)).unwrap();
    println!("{}: {}", end.event, end.detail);
    check(end.event == "ended", "shadowing ends without promotion");
    check(
        end.detail.contains("mirrored answers agreed"),
        "and records the agreement",
    );
    check(challenger_gone("r~twin"), "the shadow's replicas are gone");
    // A model that answers differently: rolled back on agreement.
    prism_serve::rollout(shadow("off", 1, 0.9)).unwrap();
    let (_, body, _, _) = post(&url, "[2, 3]");
    check(
        json_of(&body)["sum"] == 5,
        "clients get the live answer while shadowing",
    );
    let end = prism_serve::wait_rollout("r", Duration::from_secs(60)).unwrap();
    println!("{}: {}", end.event, end.detail);
    check(
        end.event == "rolled back" && end.detail.contains("agreement"),
        "a disagreeing shadow is rolled back",
    );
    let r = finish(&stop, h);
    check(r.failures() == 0, "no request failed");
    check(
        r.by_version.keys().all(|v| v == "v1"),
        &format!("every answer came from v1: {:?}", r.by_version),
    );
    println!("ALL OK");
}

fn role_registry() {
    let (_c, url) = serve();
    let dir = std::env::temp_dir().join(format!("prism-reg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    prism::log_run_params("run-calc", "calc", vec![], vec![]).unwrap();
    let register = |n: i64| {
        let ck = dir.join(format!("add{n}"));
        std::fs::write(&ck, n.to_string()).unwrap();
        let mut v = None;
        // The run's record reaches the head asynchronously.
        wait_until(Duration::from_secs(10), || {
            v = prism::models::register("calc", "run-calc", ck.to_str().unwrap(), "adds").ok();
            v.is_some()
        });
        v.expect("registered")
    };
    let (v1, v2) = (register(10), register(20));
    prism::models::set_alias("calc", "champion", v1).unwrap();
    // Each version's drift reference sits next to its checkpoint.
    let rows: Vec<Vec<f64>> = (0..100).map(|i| vec![i as f64, 1.0]).collect();
    let reference = prism_serve::drift::Reference::from_rows(&["a", "b"], &rows, 5).unwrap();
    for n in [10, 20] {
        let file = dir.join(format!("add{n}.drift.json"));
        reference.save(&file).unwrap();
    }
    // A drift reference named by registry version is resolved by this
    // process (replicas resolve nothing); a redeploy after the alias
    // moved is the same deployment, not a new version.
    let watched = || {
        Application::new("dr").deployment(
            calc("dr")
                .version("v1")
                .drift("calc@champion", 50)
                .route_prefix("/dr"),
        )
    };
    prism_serve::run(watched()).unwrap();
    let (_, body, _, _) = post(&url.replace("/r", "/dr"), "[2, 3]");
    check(json_of(&body)["sum"] == 5, "the watched deployment answers");
    let replicas = |d: &serde_json::Value| d["replicas"].to_string();
    let before = deployment("dr");
    prism_serve::run(
        Application::new("reg")
            .deployment(calc("reg").registry("calc@champion").route_prefix("/reg")),
    )
    .unwrap();
    let reg = url.replace("/r", "/reg");
    let (_, body, _, _) = post(&reg, "[2, 3]");
    check(
        json_of(&body)["sum"] == 15,
        "the champion's checkpoint (add 10) answers",
    );
    check(
        deployment("reg")["version_label"] == format!("calc@{v1}"),
        "labelled with the pinned version",
    );
    // The alias moves; the running deployment stays pinned.
    prism::models::set_alias("calc", "champion", v2).unwrap();
    prism_serve::run(watched()).unwrap();
    let after = deployment("dr");
    check(
        after["version"] == before["version"]
            && after["replicas"][0]["actor_id"] == before["replicas"][0]["actor_id"],
        &format!(
            "a redeploy with the alias moved keeps the replicas: {} then {}",
            replicas(&before),
            replicas(&after)
        ),
    );
    let (_, body, _, _) = post(&reg, "[2, 3]");
    check(
        json_of(&body)["sum"] == 15,
        "a moved alias does not change what runs",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let h = load(&reg, &stop);
    let next = RolloutSpec::new("reg", "", Strategy::BlueGreen { keep_warm_s: 1 })
        .registry("calc@champion")
        .thresholds(quick(Thresholds::default()));
    prism_serve::rollout(next).unwrap();
    let end = prism_serve::wait_rollout("reg", Duration::from_secs(90)).unwrap();
    println!("{}: {}", end.event, end.detail);
    check(end.event == "promoted", "the new champion is rolled out");
    let (_, body, _, _) = post(&reg, "[2, 3]");
    check(
        json_of(&body)["sum"] == 25,
        "and answers from its checkpoint (add 20)",
    );
    let r = finish(&stop, h);
    check(r.failures() == 0, "no request failed");
    check(
        r.by_version.contains_key(&format!("calc@{v2}")),
        "answers carry the registry version",
    );
    let _ = std::fs::remove_dir_all(&dir);
    println!("ALL OK");
}

/// A rollout declared with the deployment (as `rollout:` in serve.yaml):
/// a redeploy with a new version label rolls it out by that strategy.
fn role_declared() {
    let _c = prism::InitOptions::new().num_cpus(4.0).init().unwrap();
    let base = prism_serve::start("127.0.0.1", 0).unwrap();
    let app = |version: &str, config: serde_json::Value| {
        Application::new("d").deployment(
            calc("d")
                .replicas(2)
                .version(version)
                .route_prefix("/d")
                .user_config(config)
                .rollout_policy(prism_serve::RolloutPolicy {
                    thresholds: quick(Thresholds::default()),
                    ..prism_serve::RolloutPolicy::new(Strategy::Canary {
                        steps: vec![50, 100],
                        step_s: 1,
                    })
                }),
        )
    };
    prism_serve::run(app("v1", json!({"sum_only": true}))).unwrap();
    let url = format!("{base}/d");
    let stop = Arc::new(AtomicBool::new(false));
    let h = load(&url, &stop);
    // The same spec again: nothing to do.
    prism_serve::run(app("v1", json!({"sum_only": true}))).unwrap();
    check(
        prism_serve::history("d").unwrap().is_empty(),
        "an unchanged deploy starts nothing",
    );
    prism_serve::run(app("v2", json!({"sum_only": true, "add": 1}))).unwrap();
    let end = prism_serve::wait_rollout("d", Duration::from_secs(90)).unwrap();
    println!("{}: {}", end.event, end.detail);
    check(
        end.event == "promoted",
        "a new version label rolls out by the declared canary",
    );
    let (_, body, _, _) = post(&url, "[2, 3]");
    check(json_of(&body)["sum"] == 6, "v2 answers");
    prism_serve::run(app("v3", json!({"sum_only": true, "fail_every": 10}))).unwrap();
    let end = prism_serve::wait_rollout("d", Duration::from_secs(90)).unwrap();
    println!("{}: {}", end.event, end.detail);
    check(end.event == "rolled back", "a broken v3 is rolled back");
    check(deployment("d")["version_label"] == "v2", "v2 stays live");
    // The promoted version's file deployed again changes nothing.
    prism_serve::run(app("v2", json!({"sum_only": true, "add": 1}))).unwrap();
    check(
        deployment("d")["version_label"] == "v2",
        "redeploying v2 keeps v2",
    );
    let r = finish(&stop, h);
    check(r.failures() == 0, "no request failed");
    println!("ALL OK");
}

#[test]
#[ignore = "a driver role, run by the tests in this file"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "canary" => role_canary(),
        "blue_green" => role_blue_green(),
        "shadow" => role_shadow(),
        "registry" => role_registry(),
        "declared" => role_declared(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn broken_canary_rolls_back_good_canary_promotes_no_request_fails() {
    println!("{}", run_role("canary", Duration::from_secs(300)));
}

#[test]
fn blue_green_switches_under_load_with_no_error() {
    println!("{}", run_role("blue_green", Duration::from_secs(180)));
}

#[test]
fn shadow_traffic_never_changes_an_answer_and_records_agreement() {
    println!("{}", run_role("shadow", Duration::from_secs(180)));
}

#[test]
fn a_declared_rollout_takes_a_redeployed_version_out_by_its_strategy() {
    println!("{}", run_role("declared", Duration::from_secs(240)));
}

#[test]
fn registry_versions_are_pinned_served_and_rolled_out() {
    println!("{}", run_role("registry", Duration::from_secs(180)));
}

/// The README's rollout demo (`serve/examples/serve_canary.rs`) runs to its
/// end: rolled back on its own, no failed request.
#[test]
fn the_canary_example_rolls_back_with_no_failed_request() {
    let out = run_example("serve_canary", "failed requests: 0");
    println!("{out}");
    assert!(
        out.contains("rolled back scores v2 → v1: error rate"),
        "{out}"
    );
}
