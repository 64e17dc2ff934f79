//! Draining a node during a 2-worker DDP run on a real cluster (a head with
//! no CPUs, raylets a, b and c with one CPU each): once a checkpoint is
//! written, `prism drain` takes the node of one worker; that node leaves at
//! its deadline, the trainer resumes from its checkpoint on the remaining
//! nodes, and the run finishes with the accuracy it should have.

use prism_ml::recipes::{self, MlpConfig};
use prism_ml::train::{DdpTrainer, ScalingConfig};
use prism_test_support::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn role_train() {
    let _c = prism::init().unwrap();
    let (train, test) = prism_ml::data::digits(256)
        .unwrap()
        .shuffle(11)
        .unwrap()
        .train_test_split(0.2, 5)
        .unwrap();
    let cfg = MlpConfig {
        layers: vec![64, 64, 10],
        epochs: 150,
        batch_size: 32,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 0.0,
        seed: 1,
        cuda: false,
    };
    // The held-out set is read here first and kept by this driver (on the
    // head's node): blocks made inside tasks on a drained node go with it
    // (primary copies are not moved by a drain yet).
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for b in test.iter_batches(1 << 20) {
        let b = b.unwrap();
        xs.push(b.features);
        ys.push(b.labels.unwrap());
    }
    let test = prism_ml::data::Dataset::from_tch(
        &tch::Tensor::cat(&xs, 0),
        Some(&tch::Tensor::cat(&ys, 0)),
        64,
    )
    .unwrap();
    let ckpt = std::path::PathBuf::from(std::env::var("CKPT_DIR").unwrap());
    let result = DdpTrainer::new("mlp_classifier", ScalingConfig::new(2))
        .unwrap()
        .config(cfg.to_bytes())
        .dataset(train)
        .checkpoint(&ckpt, 20)
        .max_failures(2)
        .fit()
        .unwrap();
    check(
        result.failures >= 1,
        &format!("the trainer recovered ({} failures)", result.failures),
    );
    let first = result.metrics.first().map(|m| m.step).unwrap_or(0);
    check(
        first > 20,
        &format!("it resumed from a checkpoint (first step after restart {first})"),
    );
    let (_, net) = recipes::load_flat(&cfg, &result.output).unwrap();
    let acc = recipes::accuracy(&net, &test).unwrap();
    println!("test accuracy after the drain: {acc:.4}");
    check(acc >= 0.9, "the run still learns the digits");
    println!("ALL OK");
}

#[test]
#[ignore = "a driver role, run by the tests in this file"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "train" => role_train(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn draining_a_workers_node_mid_run_resumes_on_the_others_and_finishes() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "0"]);
    let _nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| sb.start_raylet(n, &head, &["--num-cpus", "1"]))
        .collect();
    assert!(wait_until(Duration::from_secs(20), || sb
        .nodes_in_state("alive")
        .len()
        == 4));
    let ckpt = sb.temp().join("checkpoints");
    let mut envs = sb.driver_envs(&head, &head);
    envs.push(("CKPT_DIR".into(), ckpt.display().to_string()));
    let mut job = Job::spawn("train", &envs);
    // Once a checkpoint exists, drain the node of one of the two workers.
    let saved = wait_until(Duration::from_secs(240), || {
        !prism_ml::train::checkpoint::list(&ckpt).is_empty()
            || !job.stdout().is_empty() && job.stdout().contains("ALL OK")
    });
    assert!(saved, "no checkpoint:\n{}\n{}", job.stdout(), job.stderr());
    let out = sb.run(&["list", "actors", "--state", "alive", "--json"]);
    let actors: Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = actors
        .as_array()
        .and_then(|a| a.iter().find_map(|r| r["node_id"].as_str()))
        .expect("a live worker actor")
        .to_string();
    let out = sb.run(&["drain", &node, "--reason", "spot", "--deadline", "1s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, out) = job.finish(Duration::from_secs(300));
    assert!(ok && out.contains("ALL OK"), "{out}");
    let gone = sb.status()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == node.as_str())
        .cloned()
        .unwrap();
    assert_eq!(gone["death_reason"], "drained (spot)", "{gone:#}");
    assert!(Path::new(&ckpt).exists());
}
