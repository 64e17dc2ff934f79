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

/// Trains a weak v1 (1 epoch, tiny rate) and a strong v2 (8 epochs) of
/// `digits` with DDP and registers both, weights in `dir`.
fn register_weak_and_strong(train: &prism_ml::data::Dataset, dir: &std::path::Path) {
    for (epochs, lr) in [(1, 0.002), (8, 0.05)] {
        let cfg = common::digits_mlp(vec![64, 32, 10], epochs, lr);
        let r = DdpTrainer::new("mlp_classifier", ScalingConfig::new(2))
            .unwrap()
            .config(cfg.to_bytes())
            .dataset(train.clone())
            .fit()
            .unwrap();
        let path = dir.join(format!("digits-{epochs}.weights"));
        std::fs::write(&path, &r.output).unwrap();
        let card =
            format!("intent: 8x8 digits\ntraining data: {epochs} epochs of the digits train split");
        let v =
            prism::models::register("digits", &r.run_id, path.to_str().unwrap(), &card).unwrap();
        println!("registered v{v} from {}", r.run_id);
    }
}

fn role_promote() {
    let _c = prism::InitOptions::new().num_cpus(4.0).init().unwrap();
    let (train, golden) = common::digits();
    let dir = tempfile::tempdir().unwrap();
    register_weak_and_strong(&train, dir.path());
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

/// A job on a real head: registers a weak v1 and a strong v2 of
/// `digits`, and writes the golden set where `GOLDEN` says.
fn role_register() {
    let _c = prism::init().unwrap();
    let (train, golden) = common::digits();
    let file = std::path::PathBuf::from(std::env::var("GOLDEN").unwrap());
    register_weak_and_strong(&train, file.parent().unwrap());
    golden
        .write_tensor_file(std::env::var("GOLDEN").unwrap())
        .unwrap();
    println!("ALL OK");
}

#[test]
#[ignore = "a driver role, run by the tests in this file"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "promote" => role_promote(),
        "register" => role_register(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn registry_promotion_gate_accepts_the_better_and_refuses_the_worse() {
    println!("{}", run_role("promote", Duration::from_secs(300)));
}

/// `prism models promote` (the CLI, which runs prism-ml's
/// `prism-models-promote`) against a real head: v2 takes `champion`
/// through the gate with both scores printed, then v1 is refused.
#[test]
fn the_cli_promotes_through_the_gate() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "4"]);
    let golden = sb.temp().join("golden.pdsf");
    let mut envs = sb.driver_envs(&head, &head);
    envs.push(("GOLDEN".into(), golden.display().to_string()));
    let (ok, out) = Job::spawn("register", &envs).finish(Duration::from_secs(240));
    assert!(ok && out.contains("ALL OK"), "{out}");
    let gate = golden.to_str().unwrap();
    let first = sb.run(&[
        "models", "promote", "digits", "1", "--to", "champion", "--gate", gate,
    ]);
    let text = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        first.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(text.contains("champion was unset"), "{text}");
    let second = sb.run(&[
        "models", "promote", "digits", "2", "--to", "champion", "--gate", gate,
    ]);
    let text = String::from_utf8_lossy(&second.stdout).into_owned();
    println!("{text}");
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        text.contains("champion v1:") && text.contains("digits@champion is now v2"),
        "{text}"
    );
    let back = sb.run(&[
        "models", "promote", "digits", "1", "--to", "champion", "--gate", gate,
    ]);
    let err = String::from_utf8_lossy(&back.stderr).into_owned();
    println!("{err}");
    assert!(!back.status.success(), "a worse version must be refused");
    assert!(
        err.contains("digits v1 scores") && err.contains("below champion v2"),
        "{err}"
    );
    let bad = sb.run(&[
        "models", "promote", "digits", "2", "--to", "champion", "--gate", gate, "--metric", "f1",
    ]);
    let err = String::from_utf8_lossy(&bad.stderr).into_owned();
    assert!(
        !bad.status.success() && err.contains("only accuracy"),
        "{err}"
    );
}
