//! DDP on a real embedded cluster (worker actors in their own processes,
//! chunks through the shared-memory object store): ring all-reduce
//! correctness, equivalence with one process at the global batch, and a
//! trainer that survives `kill -9` of a worker by resuming from its
//! checkpoint.

mod common;

use common::synthetic;
use prism_ml::recipes::{self, MlpConfig};
use prism_ml::train::collective::{self, Transport};
use prism_ml::train::{DdpTrainer, ScalingConfig};
use prism_test_support::*;
use std::time::Duration;

fn role_all_reduce() {
    let _c = prism::InitOptions::new().num_cpus(4.0).init().unwrap();
    for (n, transport) in (1..=4usize).flat_map(|n| [(n, Transport::Auto), (n, Transport::Store)]) {
        // Channels cut chunks into 1 MiB pieces: 300,001 f64s take several.
        let lens: &[usize] = match transport {
            Transport::Auto => &[1, 7, 1001, 65_537, 300_001],
            Transport::Store => &[7, 65_537],
        };
        for &len in lens {
            // Rank r holds r + i/1000 at i: sums are easy to state exactly.
            let inputs: Vec<Vec<f64>> = (0..n)
                .map(|r| (0..len).map(|i| r as f64 + i as f64 / 1000.0).collect())
                .collect();
            let (out, _) = collective::run(inputs, false, 64 << 10, 1, transport).unwrap();
            let want: Vec<f64> = (0..len)
                .map(|i| (0..n).map(|r| r as f64 + i as f64 / 1000.0).sum())
                .collect();
            for o in &out {
                let err = o
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(
                    o.len() == len && err < 1e-9,
                    "f64 n={n} len={len}: err {err}"
                );
            }
            let inputs: Vec<Vec<f32>> = (0..n)
                .map(|r| (0..len).map(|i| (r * 3 + i % 5) as f32).collect())
                .collect();
            let (out, _) = collective::run(inputs, true, 16 << 10, 2, transport).unwrap();
            for o in &out {
                let ok = o.iter().enumerate().all(|(i, x)| {
                    let want = (0..n).map(|r| (r * 3 + i % 5) as f32).sum::<f32>() / n as f32;
                    (x - want).abs() < 1e-5
                });
                assert!(o.len() == len && ok, "f32 average n={n} len={len}");
            }
        }
        // (every size was asserted above)
        println!(
            "ok: {n} workers over {transport:?}: exact sums (f64) and averages (f32), uneven sizes"
        );
    }
    println!("ALL OK");
}

fn role_equivalence() {
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    let ds = synthetic();
    let (n, b, steps) = (2usize, 16usize, 8u64);
    let cfg = MlpConfig {
        layers: vec![8, 512, 512, 3], // 512×512 ≥ 2^18: reduced in place
        epochs: 1,
        batch_size: b,
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
        seed: 3,
        cuda: false,
    };
    let result = DdpTrainer::new("mlp_classifier", ScalingConfig::new(n))
        .unwrap()
        .config(cfg.to_bytes())
        .dataset(ds.clone())
        .fit()
        .unwrap();
    check(result.metrics.len() as u64 == steps, "8 DDP steps ran");
    let (ddp_vs, _) = recipes::load_flat(&cfg, &result.output).unwrap();
    // One process, batch n·b: batch k is the concatenation of every
    // shard's batch k.
    let shards = ds.split(n).unwrap();
    let vs = common::one_process(&cfg, &shards, steps as usize);
    let worst = common::largest_difference(&vs, &ddp_vs);
    println!("largest weight difference: {worst:e}");
    check(
        worst < 1e-5,
        "2 workers × batch 16 = one process × batch 32, 8 steps",
    );
    println!("ALL OK");
}

/// The pid of this driver's worker process whose training thread is rank `rank`.
fn rank_pid(rank: usize) -> Option<u32> {
    let want = format!("prism-train-{rank}");
    let me = std::process::id();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid: u32 = stat.rsplit(") ").next()?.split(' ').nth(1)?.parse().ok()?;
        if ppid != me {
            return None;
        }
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        tasks
            .flatten()
            .any(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == want))
            .then_some(pid)
    })
}

fn role_fault() {
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    let (train, test) = prism_ml::data::digits(256)
        .unwrap()
        .shuffle(11)
        .unwrap()
        .train_test_split(0.2, 5)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = MlpConfig {
        layers: vec![64, 64, 10],
        epochs: 12,
        batch_size: 32,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 0.0,
        seed: 1,
        cuda: false,
    };
    let ckpt = dir.path().join("checkpoints");
    // The killer watches until the run ends (no clock: a slow machine just
    // takes longer to reach the first checkpoint).
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let ckpt = ckpt.clone();
        let finished = finished.clone();
        std::thread::spawn(move || {
            while !finished.load(std::sync::atomic::Ordering::Acquire) {
                let saved = prism_ml::train::checkpoint::list(&ckpt);
                if saved.iter().any(|(s, _)| *s >= 20) {
                    if let Some(pid) = rank_pid(1) {
                        // SAFETY: kill(2) on a pid we just found as our child.
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                        return Some(pid);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        })
    };
    let result = DdpTrainer::new("mlp_classifier", ScalingConfig::new(2))
        .unwrap()
        .config(cfg.to_bytes())
        .dataset(train)
        .checkpoint(&ckpt, 20)
        .max_failures(2)
        .fit();
    finished.store(true, std::sync::atomic::Ordering::Release);
    let result = result.unwrap();
    let killed = killer.join().unwrap();
    check(killed.is_some(), "rank 1's worker was SIGKILLed mid-run");
    check(
        result.failures == 1,
        "the trainer recovered from one failure",
    );
    let first = result.metrics.first().map(|m| m.step).unwrap_or(0);
    check(
        first > 20,
        &format!("it resumed from a checkpoint (first step after restart {first})"),
    );
    let (_, net) = recipes::load_flat(&cfg, &result.output).unwrap();
    let acc = recipes::accuracy(&net, &test).unwrap();
    println!("test accuracy after recovery: {acc:.4}");
    check(acc >= 0.9, "the recovered run still learns the digits");
    println!("ALL OK");
}

#[test]
#[ignore = "a driver role, run by the tests in this file"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "all_reduce" => role_all_reduce(),
        "equivalence" => role_equivalence(),
        "fault" => role_fault(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn ring_all_reduce_is_exact_for_1_to_4_workers_and_uneven_sizes() {
    run_role("all_reduce", Duration::from_secs(300));
}

#[test]
fn ddp_matches_one_process_at_the_global_batch() {
    run_role("equivalence", Duration::from_secs(300));
}

#[test]
fn a_killed_worker_resumes_from_the_last_checkpoint() {
    run_role("fault", Duration::from_secs(300));
}
