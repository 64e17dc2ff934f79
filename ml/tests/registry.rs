//! The model registry with a promotion gate on an embedded cluster: two
//! DDP runs registered as versions of `digits`; the better one takes
//! `champion` through the gate (both scored on a golden set in tasks) and
//! the worse one is refused with both scores; `digits@champion` resolves
//! to the winner and the history says who did what.

mod common;

use prism_ml::registry::promote;
use prism_ml::train::{DdpTrainer, ScalingConfig};
use prism_ml::MlError;
use prism_test_support::*;
use std::time::Duration;

fn role_promote() {
    let _c = prism::InitOptions::new().num_cpus(4.0).init().unwrap();
    let (train, golden) = common::digits();
    let dir = tempfile::tempdir().unwrap();
    for (epochs, lr) in [(1, 0.002), (8, 0.05)] {
        let cfg = common::digits_mlp(vec![64, 32, 10], epochs, lr);
        let r = DdpTrainer::new("mlp_classifier", ScalingConfig::new(2))
            .unwrap()
            .config(cfg.to_bytes())
            .dataset(train.clone())
            .fit()
            .unwrap();
        let path = dir.path().join(format!("digits-{epochs}.weights"));
        std::fs::write(&path, &r.output).unwrap();
        let card =
            format!("intent: 8x8 digits\ntraining data: {epochs} epochs of the digits train split");
        let v =
            prism::models::register("digits", &r.run_id, path.to_str().unwrap(), &card).unwrap();
        println!("registered v{v} from {}", r.run_id);
    }
    let first = promote("digits", 1, "champion", &golden).unwrap();
    check(
        first.champion.is_none(),
        &format!("v1 takes an empty champion ({:.3})", first.challenger),
    );
    let better = promote("digits", 2, "champion", &golden).unwrap();
    let (held, old) = better.champion.unwrap();
    println!("v2 {:.3} vs v{held} {old:.3}", better.challenger);
    check(
        held == 1 && better.challenger >= old,
        "the better v2 is promoted over v1",
    );
    let refused = promote("digits", 1, "champion", &golden);
    let msg = match &refused {
        Err(MlError::Promotion(m)) => m.clone(),
        other => panic!("{other:?}"),
    };
    println!("{msg}");
    check(
        msg.contains("digits v1 scores") && msg.contains("below champion v2"),
        "the worse v1 is refused with both scores",
    );
    let champion = prism::models::resolve("digits@champion").unwrap();
    check(champion.version == 2, "digits@champion is v2");
    check(
        prism::models::resolve("digits@1").unwrap().version == 1,
        "digits@1 is v1",
    );
    check(
        prism::models::resolve("digits@nope").is_err(),
        "an unknown alias says so",
    );
    let m = prism::models::get("digits").unwrap();
    let what: Vec<&str> = m.history.iter().map(|e| e.what.as_str()).collect();
    check(
        what.len() == 4 && what[3] == "champion: v1 -> v2",
        &format!("the history has every change ({what:?})"),
    );
    check(
        m.versions[1]
            .params
            .iter()
            .any(|(k, _)| k == "dataset.version"),
        "a version keeps its run's data version",
    );
    println!("ALL OK");
}

#[test]
#[ignore = "a driver role, run by the tests in this file"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "promote" => role_promote(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn registry_promotion_gate_accepts_the_better_and_refuses_the_worse() {
    println!("{}", run_role("promote", Duration::from_secs(300)));
}
