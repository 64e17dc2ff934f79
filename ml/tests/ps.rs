//! The parameter server on an embedded cluster (server actors and worker
//! tasks in their own processes): synchronous mode is one process at the
//! global batch, step for step; bounded staleness and asynchronous modes
//! learn the digits.

mod common;

use common::synthetic;
use prism_ml::ps::{Mode, ParameterServer};
use prism_ml::recipes::{self, MlpConfig};
use prism_test_support::*;
use std::time::Duration;

fn role_sync() {
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    let ds = synthetic();
    let (n, b) = (2usize, 16usize);
    let cfg = MlpConfig {
        layers: vec![8, 32, 3],
        epochs: 2,
        batch_size: b,
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
        seed: 3,
        cuda: false,
    };
    let result = ParameterServer::new(cfg.clone(), 2, n, Mode::Sync)
        .dataset(ds.clone())
        .fit()
        .unwrap();
    let steps = result.losses[0].len();
    check(
        steps == 16,
        &format!("16 steps ran on each worker ({steps})"),
    );
    check(
        result.updates == 2 * 16,
        "one update per step on each of 2 servers",
    );
    let (ps_vs, _) = recipes::load_flat(&cfg, &result.output).unwrap();
    // One process, batch n·b: batch k is every shard's batch k together.
    let shards = ds.split(n).unwrap();
    let vs = common::one_process(&cfg, &shards, steps / cfg.epochs as usize);
    let worst = common::largest_difference(&vs, &ps_vs);
    println!("largest weight difference: {worst:e}");
    check(
        worst < 1e-4,
        "sync PS, 2 workers × batch 16 = one process × batch 32, 16 steps",
    );
    println!("ALL OK");
}

fn role_digits() {
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    let (train, test) = common::digits();
    let cfg = common::digits_mlp(vec![64, 64, 10], 15, 0.05);
    for mode in [Mode::Stale(2), Mode::Async] {
        let r = ParameterServer::new(cfg.clone(), 2, 2, mode)
            .dataset(train.clone())
            .fit()
            .unwrap();
        let (_, net) = recipes::load_flat(&cfg, &r.output).unwrap();
        let acc = recipes::accuracy(&net, &test).unwrap();
        println!(
            "{mode:?}: {} updates in {:.2} s, test accuracy {:.1}%",
            r.updates,
            r.seconds,
            acc * 100.0
        );
        check(acc >= 0.9, &format!("{mode:?} learns the digits"));
    }
    println!("ALL OK");
}

/// A shard's process is killed once it has a checkpoint: it restarts from
/// it and the synchronous run still learns the digits.
fn role_fault() {
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    let (train, test) = common::digits();
    let cfg = common::digits_mlp(vec![64, 64, 10], 15, 0.05);
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().to_path_buf();
    let shard = ckpt.join("shard-0.bin");
    let killer = common::Killer::when(move || shard.exists(), ckpt.join("shard-0.pid"));
    let r = ParameterServer::new(cfg.clone(), 2, 2, Mode::Sync)
        .dataset(train)
        .checkpoint(&ckpt, 20)
        .max_failures(2)
        .fit();
    let killed = killer.stop();
    let r = r.unwrap();
    check(killed.is_some(), "shard 0 was SIGKILLed mid-run");
    let (_, net) = recipes::load_flat(&cfg, &r.output).unwrap();
    let acc = recipes::accuracy(&net, &test).unwrap();
    println!(
        "after a shard was killed: test accuracy {:.1}%",
        acc * 100.0
    );
    check(acc >= 0.9, "the run still learns the digits");
    // Run on a cluster that encrypts at rest: the restart opened a sealed file.
    let saved = std::fs::read(ckpt.join("shard-0.bin")).unwrap();
    check(
        prism::at_rest::is_sealed(&saved),
        "the shard's checkpoint is sealed with the cluster's at-rest key",
    );
    println!("ALL OK");
}

/// A run the test preempts with SIGTERM once both shards saved; run again
/// it starts from their files and finishes.
fn role_preempt() {
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    let (train, test) = common::digits();
    let cfg = common::digits_mlp(vec![64, 64, 10], 40, 0.05);
    let ckpt = std::path::PathBuf::from(std::env::var("PRISM_TEST_CKPT").unwrap());
    let r = ParameterServer::new(cfg.clone(), 2, 2, Mode::Sync)
        .dataset(train)
        .checkpoint(&ckpt, 20)
        .fit();
    match r {
        Err(prism_ml::MlError::Preempted { step, checkpointed }) => {
            println!("PREEMPTED {step} {checkpointed}");
        }
        Ok(r) => {
            let (_, net) = recipes::load_flat(&cfg, &r.output).unwrap();
            let acc = recipes::accuracy(&net, &test).unwrap();
            let steps = r.losses.iter().map(Vec::len).max().unwrap_or(0);
            println!(
                "FINISHED {steps} steps in this run, test accuracy {:.1}%",
                acc * 100.0
            );
            check(acc >= 0.9, "the resumed run learns the digits");
        }
        Err(e) => panic!("{e}"),
    }
    println!("ALL OK");
}

/// The click log the sparse roles learn: 3 fields of 200 ids.
fn click_log() -> prism_ml::ps::ctr::ClickLog {
    prism_ml::ps::ctr::ClickLog {
        fields: 3,
        vocab: 200,
        seed: 42,
    }
}

/// Sparse: CTR logistic regression on a generated click log comes within
/// reach of the generating model, and the servers hold exactly the rows
/// the batches touched (PS-5).
fn role_ctr() {
    use prism_ml::ps::ctr::{score, CtrRun};
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    let log = click_log();
    let mut run = CtrRun::new(log);
    let r = run.fit().unwrap();
    let test = log.examples(1_000, 5_000);
    let (loss, acc) = score(&test, |ids| r.p(ids));
    let (best_loss, best_acc) = score(&test, |ids| log.true_p(ids));
    println!("CTR: log loss {loss:.4} vs {best_loss:.4}, accuracy {acc:.3} vs {best_acc:.3}, {} updates in {:.2} s", r.updates, r.seconds);
    check(
        loss <= best_loss + 0.03,
        "log loss near the generating model's",
    );
    check(
        acc >= best_acc - 0.02,
        "accuracy near the generating model's",
    );
    // A few batches over a large vocabulary: most rows never touched.
    run.log.vocab = 5_000;
    run.examples = 300;
    run.epochs = 1;
    let r = run.fit().unwrap();
    println!("rows touched {}, held {}", r.rows_touched, r.rows_held);
    check(r.rows_touched < 3 * 5_000 / 5, "most rows untouched");
    check(
        r.rows_held == r.rows_touched,
        "the servers hold exactly the touched rows",
    );
    println!("ALL OK");
}

/// Sparse, synchronous: a shard's process is killed once it has a
/// checkpoint; it restarts from its rows, accumulators and steps, the
/// workers carry on, and the model still nears the generating one.
fn role_ctr_fault() {
    use prism_ml::ps::ctr::{score, CtrRun};
    use prism_ml::ps::ShardCheckpoint;
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().to_path_buf();
    let file = ckpt.join("sparse-0.bin");
    let killer = common::Killer::when(move || file.exists(), ckpt.join("sparse-0.pid"));
    let log = click_log();
    let run = CtrRun {
        mode: Mode::Sync,
        checkpoint: Some(ShardCheckpoint {
            dir: ckpt.display().to_string(),
            every: 20,
        }),
        max_failures: 2,
        ..CtrRun::new(log)
    };
    let r = run.fit();
    let killed = killer.stop();
    let r = r.unwrap();
    check(killed.is_some(), "sparse shard 0 was SIGKILLed mid-run");
    let test = log.examples(1_000, 5_000);
    let (loss, acc) = score(&test, |ids| r.p(ids));
    let (best_loss, best_acc) = score(&test, |ids| log.true_p(ids));
    println!("CTR after a shard was killed: log loss {loss:.4} vs {best_loss:.4}, accuracy {acc:.3} vs {best_acc:.3}, {} updates", r.updates);
    check(
        loss <= best_loss + 0.03,
        "log loss near the generating model's",
    );
    check(
        acc >= best_acc - 0.02,
        "accuracy near the generating model's",
    );
    check(
        r.rows_held == r.rows_touched,
        "the restored shard holds its rows",
    );
    let saved = std::fs::read(ckpt.join("sparse-0.bin")).unwrap();
    check(
        prism::at_rest::is_sealed(&saved),
        "the sparse checkpoint is sealed with the cluster's at-rest key",
    );
    println!("ALL OK");
}

/// Sparse and synchronous, preempted by the test once both shards saved;
/// run again it starts from their files and finishes near the model.
fn role_ctr_preempt() {
    use prism_ml::ps::ctr::{score, CtrRun};
    use prism_ml::ps::ShardCheckpoint;
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    let log = click_log();
    let run = CtrRun {
        mode: Mode::Sync,
        epochs: 20,
        checkpoint: Some(ShardCheckpoint {
            dir: std::env::var("PRISM_TEST_CKPT").unwrap(),
            every: 20,
        }),
        ..CtrRun::new(log)
    };
    match run.fit() {
        Err(prism_ml::MlError::Preempted { step, checkpointed }) => {
            println!("PREEMPTED {step} {checkpointed}");
        }
        Ok(r) => {
            let test = log.examples(1_000, 5_000);
            let (loss, _) = score(&test, |ids| r.p(ids));
            let (best, _) = score(&test, |ids| log.true_p(ids));
            println!(
                "FINISHED {} steps in this run, log loss {loss:.4} vs {best:.4}",
                r.steps
            );
            check(
                loss <= best + 0.03,
                "the resumed run nears the generating model",
            );
        }
        Err(e) => panic!("{e}"),
    }
    println!("ALL OK");
}

#[test]
#[ignore = "a driver role, run by the tests in this file"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "sync" => role_sync(),
        "digits" => role_digits(),
        "fault" => role_fault(),
        "ctr" => role_ctr(),
        "ctr_fault" => role_ctr_fault(),
        "ctr_preempt" => role_ctr_preempt(),
        "preempt" => role_preempt(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn ps_sync_equals_one_process_at_the_global_batch() {
    let out = run_role("sync", Duration::from_secs(300));
    println!("{out}");
}

#[test]
fn ps_bounded_staleness_and_async_learn_the_digits() {
    let out = run_role("digits", Duration::from_secs(300));
    println!("{out}");
}

#[test]
fn ps_a_killed_shard_restarts_from_its_checkpoint_and_the_run_finishes() {
    // On a cluster that encrypts at rest: the shards' files are sealed.
    let sealed = [("PRISM_ENCRYPT_AT_REST", "true")];
    let out = run_role_with("fault", &sealed, Duration::from_secs(300));
    println!("{out}");
    assert!(
        out.contains("shard 0 restored from its checkpoint"),
        "{out}"
    );
}

#[test]
fn ps_a_killed_sparse_shard_restarts_from_its_checkpoint_and_ctr_still_learns() {
    let sealed = [("PRISM_ENCRYPT_AT_REST", "true")];
    let out = run_role_with("ctr_fault", &sealed, Duration::from_secs(300));
    println!("{out}");
    assert!(
        out.contains("sparse shard 0 restored from its checkpoint"),
        "{out}"
    );
}

#[test]
fn ps_a_preempted_run_saves_every_shard_and_the_next_run_resumes_there() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().display().to_string();
    let both = || (0..2).all(|i| dir.path().join(format!("shard-{i}.bin")).exists());
    let step = common::preempt_role("preempt", &ckpt, both);
    // 40 epochs of 1,437 rows / 2 workers / batch 32 = 880 steps a worker.
    assert!(step > 0 && step < 880, "stopped at step {step}");
    let again = [("PRISM_TEST_CKPT", ckpt.as_str()), ("PRISM_PREEMPTED", "1")];
    let out = run_role_with("preempt", &again, Duration::from_secs(300));
    println!("{out}");
    let ran: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("FINISHED "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the second run did not finish: {out}"));
    assert!(
        out.contains("shard 0 restored from its checkpoint")
            && out.contains("shard 1 restored from its checkpoint"),
        "{out}"
    );
    assert!(
        ran + step <= 881,
        "the second run went on from step {step} ({ran} steps), not from the start"
    );
}

#[test]
fn ps_sparse_ctr_nears_the_generating_model_and_touches_only_its_rows() {
    let out = run_role("ctr", Duration::from_secs(300));
    println!("{out}");
}

#[test]
fn ps_a_preempted_sparse_run_saves_every_shard_and_the_next_run_resumes_there() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().display().to_string();
    let both = || (0..2).all(|i| dir.path().join(format!("sparse-{i}.bin")).exists());
    let step = common::preempt_role("ctr_preempt", &ckpt, both);
    // 20 passes over 20,000 clicks in batches of 256: 1,580 steps a worker.
    assert!(step > 0 && step < 1_580, "stopped at step {step}");
    let again = [("PRISM_TEST_CKPT", ckpt.as_str())];
    let out = run_role_with("ctr_preempt", &again, Duration::from_secs(300));
    println!("{out}");
    assert!(
        out.contains("sparse shard 0 restored from its checkpoint")
            && out.contains("sparse shard 1 restored from its checkpoint"),
        "{out}"
    );
    let ran: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("FINISHED "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the second run did not finish: {out}"));
    // Two workers; each went on from where it stopped (at or after `step`).
    assert!(
        ran + 2 * step <= 2 * 1_580,
        "the second run went on from step {step} ({ran} steps), not from the start"
    );
}
