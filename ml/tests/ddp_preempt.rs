//! A spot-class DDP job preempted for an urgent one, over real processes:
//! `prism submit --spot` runs a 2-worker trainer on a 2-CPU head; an urgent
//! job that needs those CPUs makes the head SIGTERM it; every rank stops at
//! one step after a checkpoint there; the job waits, and when the urgent job
//! is done it runs again and resumes from that step to the accuracy it
//! should reach.

use prism_ml::recipes::{self, MlpConfig};
use prism_ml::train::{DdpTrainer, ScalingConfig};
use prism_ml::MlError;
use prism_test_support::*;
use serde_json::Value;
use std::time::Duration;

fn role_train() {
    let _c = prism::init().unwrap();
    let (train, test) = prism_ml::data::digits(256)
        .unwrap()
        .train_test_split(0.2, 5)
        .unwrap();
    let cfg = MlpConfig {
        layers: vec![64, 64, 10],
        epochs: 300,
        batch_size: 32,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 0.0,
        seed: 1,
        cuda: false,
    };
    let ckpt = std::path::PathBuf::from(std::env::var("CKPT_DIR").unwrap());
    let fitted = DdpTrainer::new("mlp_classifier", ScalingConfig::new(2))
        .unwrap()
        .config(cfg.to_bytes())
        .dataset(train)
        .checkpoint(&ckpt, 10)
        .fit();
    match fitted {
        Err(MlError::Preempted { step, checkpointed }) => {
            println!("PREEMPTED AT {step} checkpointed={checkpointed}");
            std::process::exit(3);
        }
        Err(e) => panic!("{e}"),
        Ok(result) => {
            let first = result.metrics.first().map_or(0, |m| m.step);
            println!("RESUMED FROM {first}");
            let (_, net) = recipes::load_flat(&cfg, &result.output).unwrap();
            let acc = recipes::accuracy(&net, &test).unwrap();
            println!("test accuracy after the preemption: {acc:.4}");
            check(acc >= 0.9, "the run still learns the digits");
            println!("ALL OK");
        }
    }
}

#[test]
#[ignore = "a driver role, run by the tests in this file"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "train" => role_train(),
        "hold" => {
            let _c = prism::init().unwrap();
            hold_until_done();
        }
        other => panic!("unknown role {other}"),
    }
}

fn submit(sb: &Sandbox, role: &str, envs: &[String], extra: &[&str]) -> String {
    let mut c = std::process::Command::new(prism_bin());
    c.args(["submit", "--temp-dir"]).arg(sb.temp());
    c.args(["--no-wait", "--env", &format!("PRISM_TEST_ROLE={role}")]);
    for e in envs {
        c.args(["--env", e]);
    }
    c.args(extra)
        .arg("--")
        .arg(std::env::current_exe().unwrap());
    c.args(["--ignored", "--exact", "child_role", "--nocapture"]);
    c.env_remove("PRISM_ADDRESS")
        .env_remove("PRISM_TOKEN")
        .envs(sb.envs.iter().cloned());
    let out = c.stdin(std::process::Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn job(sb: &Sandbox, id: &str) -> Value {
    let out = sb.run(&["job", "list", "--json"]);
    let jobs: Value = serde_json::from_slice(&out.stdout).unwrap();
    jobs.as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_id"] == id)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_preempted_trainer_checkpoints_and_resumes_when_it_runs_again() {
    let sb = Sandbox::new();
    let _head = sb.start_head(&["--num-cpus", "2"]);
    let ckpt = sb.temp().join("ckpt");
    let done = sb.temp().join("release");
    let envs = [
        format!("CKPT_DIR={}", ckpt.display()),
        format!("PRISM_TEST_DONE={}", done.display()),
    ];
    let spot = submit(&sb, "train", &envs, &["--num-cpus", "2", "--spot"]);
    let checkpointed = || std::fs::read_dir(&ckpt).is_ok_and(|mut d| d.next().is_some());
    assert!(
        wait_until(Duration::from_secs(180), checkpointed),
        "no checkpoint: {}",
        job(&sb, &spot)
    );
    let urgent = submit(&sb, "hold", &envs, &["--num-cpus", "2", "--priority", "10"]);
    let requeued = || {
        job(&sb, &spot)["message"]
            .as_str()
            .is_some_and(|m| m.contains("preempted"))
    };
    assert!(
        wait_until(Duration::from_secs(60), requeued),
        "{}",
        job(&sb, &spot)
    );
    assert_eq!(job(&sb, &spot)["state"], "pending");
    assert!(wait_until(Duration::from_secs(60), || job(&sb, &urgent)
        ["state"]
        == "running"));
    std::fs::write(&done, "").unwrap();
    let finished = || job(&sb, &spot)["state"] == "succeeded";
    assert!(
        wait_until(Duration::from_secs(300), finished),
        "{}",
        job(&sb, &spot)
    );
    let logs = sb.run(&["job", "logs", &spot]);
    let logs = String::from_utf8_lossy(&logs.stdout).into_owned();
    let at: u64 = logs
        .lines()
        .find_map(|l| {
            l.strip_prefix("PREEMPTED AT ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no preemption in the log:\n{logs}"));
    assert!(
        logs.contains(&format!("PREEMPTED AT {at} checkpointed=true")),
        "{logs}"
    );
    assert!(logs.contains(&format!("RESUMED FROM {}", at + 1)), "{logs}");
    assert!(logs.contains("ALL OK"), "{logs}");
    eprintln!(
        "preempted at step {at}; {}",
        logs.lines()
            .find(|l| l.starts_with("test accuracy"))
            .unwrap_or("")
    );
}
