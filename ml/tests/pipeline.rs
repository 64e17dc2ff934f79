//! Pipeline-parallel training on an embedded cluster (each stage an actor
//! in its own process): GPipe and 1F1B, p ∈ {2, 3} stages, m ∈ {1, 4, 7}
//! micro-batches, give the weights of one process on the whole batch (on
//! one node through channels between the stages, across two nodes as call
//! results); 1F1B
//! never holds more than p − s micro-batches' activations on stage s, GPipe
//! holds all m; 2 data-parallel replicas of a 2-stage pipeline equal one
//! process at twice the batch; a cut balanced by parameter count equals
//! one process too, as do 2 replicas on two nodes (their gradient ring
//! crossing machines); and a 2-stage 1F1B pipeline learns the digits.

mod common;

use common::synthetic;
use prism::PlacementStrategy::{Pack, StrictSpread};
use prism_ml::pipeline::{Balance, PipelineTrainer, Schedule};
use prism_ml::recipes::{self, MlpConfig};
use prism_test_support::*;
use std::time::Duration;

/// 3 layers for the synthetic set, batch 28 (divisible by 1, 4 and 7).
fn small_mlp() -> MlpConfig {
    MlpConfig {
        layers: vec![8, 16, 16, 3],
        epochs: 1,
        batch_size: 28,
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
        seed: 5,
        cuda: false,
    }
}

/// 2 replicas of a `p`-stage pipeline at `cfg`'s batch give the weights of
/// one process at twice the batch.
fn two_replicas_equal_twice_the_batch(
    cfg: &MlpConfig,
    ds: &prism_ml::data::Dataset,
    p: u32,
    schedule: Schedule,
    placement: prism::PlacementStrategy,
    what: &str,
) {
    let wide = MlpConfig {
        batch_size: 2 * cfg.batch_size,
        ..cfg.clone()
    };
    let steps = 256 / wide.batch_size;
    let reference = common::one_process(&wide, std::slice::from_ref(ds), steps);
    let r = PipelineTrainer::new(cfg.clone(), p, 4, schedule)
        .replicas(2)
        .placement(placement)
        .dataset(ds.clone())
        .fit()
        .unwrap();
    check(r.losses.len() == steps, "every pair of batches ran");
    // Each stage's ring of 2 replicas has 2 links: through shared memory
    // when the replicas share a node (PACK), through the store otherwise.
    let shared = match placement {
        prism::PlacementStrategy::StrictSpread => 0,
        _ => 2 * p as usize,
    };
    check(
        r.ring_channels == shared,
        &format!(
            "{what}: {} of the rings' links went through shared memory, not {shared}",
            r.ring_channels
        ),
    );
    let (vs, _) = recipes::load_flat(cfg, &r.output).unwrap();
    let worst = common::largest_difference(&reference, &vs);
    println!("{what}: largest weight difference {worst:e}");
    check(
        worst < 1e-5,
        &format!("{what}: 2 replicas = one process at twice the batch"),
    );
}

/// A user model of 3 stages that is not the MLP recipe's: tanh, then a
/// ReLU block, then the classifier.
fn three_blocks(p: &tch::nn::Path, stage: u32, _stages: u32) -> tch::nn::Sequential {
    use tch::nn;
    match stage {
        0 => nn::seq()
            .add(nn::linear(p / "a", 8, 12, Default::default()))
            .add_fn(|x| x.tanh()),
        1 => nn::seq()
            .add(nn::linear(p / "b", 12, 12, Default::default()))
            .add_fn(|x| x.relu()),
        _ => nn::seq().add(nn::linear(p / "c", 12, 3, Default::default())),
    }
}
prism_ml::pipeline_model!(three_blocks);

fn role_equivalence() {
    let _c = prism::InitOptions::new().num_cpus(4.0).init().unwrap();
    let ds = synthetic();
    let cfg = small_mlp();
    let steps = 256 / 28;
    let reference = common::one_process(&cfg, std::slice::from_ref(&ds), steps);
    for schedule in [Schedule::GPipe, Schedule::OneFOneB] {
        for p in [2u32, 3] {
            for m in [1u32, 4, 7] {
                let r = PipelineTrainer::new(cfg.clone(), p, m, schedule)
                    .dataset(ds.clone())
                    .fit()
                    .unwrap();
                check(r.losses.len() == steps, "every batch ran");
                check(
                    r.channels,
                    "stages on one node pass tensors through channels",
                );
                let (vs, _) = recipes::load_flat(&cfg, &r.output).unwrap();
                let worst = common::largest_difference(&reference, &vs);
                println!("{schedule:?} p={p} m={m}: largest weight difference {worst:e}");
                check(
                    worst < 1e-5,
                    "the same weights as one process on the whole batch",
                );
                let bound = |s: usize| match schedule {
                    Schedule::GPipe => m as u64,
                    Schedule::OneFOneB => (p as u64 - s as u64).min(m as u64),
                };
                let held = r
                    .peak_alive
                    .iter()
                    .all(|peaks| peaks.iter().enumerate().all(|(s, k)| *k == bound(s)));
                check(
                    held,
                    &format!(
                        "stage s held at most its bound of micro-batches: {:?}",
                        r.peak_alive[0]
                    ),
                );
                // Every stage's clock counted its computing, within its step.
                let timed = r.busy_ms.iter().zip(&r.step_ms).all(|(busy, ms)| {
                    busy.len() == p as usize && busy.iter().all(|b| *b > 0.0 && b <= ms)
                });
                check(
                    timed,
                    &format!(
                        "stage compute times {:?} of {:?}",
                        r.busy_ms[0], r.step_ms[0]
                    ),
                );
            }
        }
    }
    // dp × p: 2 replicas of a 2-stage pipeline at batch 28 = one process at
    // batch 56.
    for schedule in [Schedule::GPipe, Schedule::OneFOneB] {
        let what = format!("{schedule:?} dp=2 x p=2");
        two_replicas_equal_twice_the_batch(&cfg, &ds, 2, schedule, Pack, &what);
    }
    // A user model, built stage by stage in each stage's process: the
    // weights of the same model trained in one process.
    let steps = 256 / 28;
    let whole = prism_ml::pipeline::whole_model("three_blocks", 3, cfg.seed).unwrap();
    let reference = common::one_process_of(&cfg, whole, std::slice::from_ref(&ds), steps);
    for schedule in [Schedule::GPipe, Schedule::OneFOneB] {
        let r = PipelineTrainer::new(cfg.clone(), 3, 4, schedule)
            .model("three_blocks")
            .dataset(ds.clone())
            .fit()
            .unwrap();
        let (vs, _) =
            prism_ml::pipeline::load_model("three_blocks", 3, cfg.seed, &r.output).unwrap();
        let worst = common::largest_difference(&reference, &vs);
        println!("{schedule:?} user model p=3: largest weight difference {worst:e}");
        check(
            worst < 1e-5,
            "a user model's pipeline = the model in one process",
        );
        check(
            r.channels,
            "a user model's stages on one node pass tensors through channels",
        );
    }
    let unknown = PipelineTrainer::new(cfg.clone(), 2, 4, Schedule::GPipe)
        .model("no_such_model")
        .dataset(ds.clone())
        .fit()
        .unwrap_err()
        .to_string();
    check(
        unknown.contains("no pipeline model named \"no_such_model\"")
            && unknown.contains("three_blocks"),
        &format!("an unknown model is named with the known ones: {unknown}"),
    );
    // Balanced by parameters: 8 → 64 → 16 → 16 → 3 on 2 stages is cut
    // after the first layer (576 | 1,363 parameters, not 1,616 | 323), and
    // still equals one process.
    let uneven = MlpConfig {
        layers: vec![8, 64, 16, 16, 3],
        ..cfg.clone()
    };
    check(
        prism_ml::pipeline::partition::cut(&uneven.layers, 2, Balance::Params) == [(0, 1), (1, 4)],
        "the balanced cut",
    );
    let reference = common::one_process(&uneven, std::slice::from_ref(&ds), steps);
    let r = PipelineTrainer::new(uneven.clone(), 2, 4, Schedule::OneFOneB)
        .balance(Balance::Params)
        .dataset(ds.clone())
        .fit()
        .unwrap();
    let (vs, _) = recipes::load_flat(&uneven, &r.output).unwrap();
    let worst = common::largest_difference(&reference, &vs);
    println!("1F1B p=2 balanced by parameters: largest weight difference {worst:e}");
    check(worst < 1e-5, "a balanced cut gives the same weights");
    println!("ALL OK");
}

fn role_digits() {
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    let (train, test) = common::digits();
    let cfg = common::digits_mlp(vec![64, 64, 64, 10], 8, 0.1);
    let r = PipelineTrainer::new(cfg.clone(), 2, 4, Schedule::OneFOneB)
        .dataset(train)
        .fit()
        .unwrap();
    let (_, net) = recipes::load_flat(&cfg, &r.output).unwrap();
    let acc = recipes::accuracy(&net, &test).unwrap();
    println!(
        "1F1B, 2 stages, 4 micro-batches: {} steps in {:.2} s, test accuracy {:.1}%",
        r.losses.len(),
        r.seconds,
        acc * 100.0
    );
    check(acc >= 0.9, "the pipeline learns the digits");
    println!("ALL OK");
}

/// A stage's process is killed once every stage saved step 20: every stage
/// starts again from that checkpoint and the run still learns the digits.
fn role_fault() {
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    let (train, test) = common::digits();
    let cfg = common::digits_mlp(vec![64, 64, 64, 10], 8, 0.1);
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().to_path_buf();
    let root = ckpt.clone();
    let both_saved = move || {
        let saved = |s: &str| prism_ml::train::checkpoint::list(&root.join(s));
        saved("stage-0")
            .iter()
            .chain(&saved("stage-1"))
            .filter(|(s, _)| *s >= 20)
            .count()
            >= 2
    };
    let killer = common::Killer::when(both_saved, ckpt.join("stage-1.pid"));
    let r = PipelineTrainer::new(cfg.clone(), 2, 4, Schedule::OneFOneB)
        .dataset(train)
        .checkpoint(&ckpt, 10)
        .max_failures(2)
        .fit();
    let killed = killer.stop();
    let r = r.unwrap();
    check(killed.is_some(), "stage 1 was SIGKILLed mid-run");
    check(r.failures == 1, &format!("one restart ({})", r.failures));
    let (_, net) = recipes::load_flat(&cfg, &r.output).unwrap();
    let acc = recipes::accuracy(&net, &test).unwrap();
    println!(
        "after a stage was killed: {} steps, test accuracy {:.1}%",
        r.losses.len(),
        acc * 100.0
    );
    check(acc >= 0.9, "the run still learns the digits");
    // The test runs this on a cluster that encrypts at rest: every file of
    // every checkpoint is sealed, and the restart above opened them.
    let files: Vec<_> = ["stage-0", "stage-1"]
        .iter()
        .flat_map(|s| prism_ml::train::checkpoint::list(&ckpt.join(s)))
        .flat_map(|(_, d)| std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()))
        .collect();
    println!("{} checkpoint files", files.len());
    check(
        !files.is_empty()
            && files
                .iter()
                .all(|f| prism::at_rest::is_sealed(&std::fs::read(f).unwrap())),
        "every checkpoint file is sealed with the cluster's at-rest key",
    );
    println!("ALL OK");
}

/// A run the test preempts with SIGTERM once every stage saved step 10;
/// run again with `PRISM_PREEMPTED=1` it resumes there and finishes.
fn role_preempt() {
    let _c = prism::InitOptions::new().num_cpus(2.0).init().unwrap();
    let (train, test) = common::digits();
    let cfg = common::digits_mlp(vec![64, 64, 64, 10], 30, 0.1);
    let ckpt = std::path::PathBuf::from(std::env::var("PRISM_TEST_CKPT").unwrap());
    let r = PipelineTrainer::new(cfg.clone(), 2, 4, Schedule::OneFOneB)
        .dataset(train)
        .checkpoint(&ckpt, 10)
        .fit();
    match r {
        Err(prism_ml::MlError::Preempted { step, checkpointed }) => {
            println!("PREEMPTED {step} {checkpointed}");
        }
        Ok(r) => {
            let (_, net) = recipes::load_flat(&cfg, &r.output).unwrap();
            let acc = recipes::accuracy(&net, &test).unwrap();
            println!(
                "FINISHED {} steps, test accuracy {:.1}%",
                r.losses.len(),
                acc * 100.0
            );
            check(acc >= 0.9, "the resumed run learns the digits");
        }
        Err(e) => panic!("{e}"),
    }
    println!("ALL OK");
}

/// Across machines: one stage per node (STRICT_SPREAD), the same weights.
fn role_spread() {
    let _c = prism::init().unwrap();
    let ds = synthetic();
    let cfg = small_mlp();
    let reference = common::one_process(&cfg, std::slice::from_ref(&ds), 256 / 28);
    for schedule in [Schedule::GPipe, Schedule::OneFOneB] {
        let r = PipelineTrainer::new(cfg.clone(), 2, 4, schedule)
            .placement(prism::PlacementStrategy::StrictSpread)
            .dataset(ds.clone())
            .fit()
            .unwrap();
        check(
            r.stage_nodes[0] != r.stage_nodes[1],
            &format!("the stages ran on two nodes: {:?}", r.stage_nodes),
        );
        check(!r.channels, "stages on two nodes pass tensors as results");
        let (vs, _) = recipes::load_flat(&cfg, &r.output).unwrap();
        let worst = common::largest_difference(&reference, &vs);
        println!("{schedule:?} across two nodes: largest weight difference {worst:e}");
        check(worst < 1e-5, "the same weights as one process");
    }
    // dp across machines: 2 replicas of a 1-stage pipeline, one per node
    // (STRICT_SPREAD), average their gradients through a ring whose links
    // go through the object store and QUIC.
    let what = "dp=2 replicas on two nodes";
    two_replicas_equal_twice_the_batch(&cfg, &ds, 1, Schedule::OneFOneB, StrictSpread, what);
    println!("ALL OK");
}

#[test]
#[ignore = "a driver role, run by the tests in this file"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "equivalence" => role_equivalence(),
        "digits" => role_digits(),
        "spread" => role_spread(),
        "fault" => role_fault(),
        "preempt" => role_preempt(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn pipeline_gpipe_and_1f1b_equal_one_process_and_bound_their_activations() {
    let out = run_role("equivalence", Duration::from_secs(600));
    println!("{out}");
}

#[test]
fn pipeline_1f1b_learns_the_digits() {
    let out = run_role("digits", Duration::from_secs(300));
    println!("{out}");
}

#[test]
fn pipeline_across_two_nodes_equals_one_process() {
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "2"]);
    let _b = sb.start_raylet("b", &head, &["--num-cpus", "2"]);
    assert!(wait_until(Duration::from_secs(20), || sb
        .nodes_in_state("alive")
        .len()
        == 2));
    let (ok, out) =
        Job::spawn("spread", &sb.driver_envs(&head, &head)).finish(Duration::from_secs(300));
    assert!(ok && out.contains("ALL OK"), "{out}");
    println!("{out}");
}

#[test]
fn pipeline_a_killed_stage_restarts_every_stage_from_the_checkpoint() {
    // On a cluster that encrypts at rest: its checkpoints are sealed.
    let sealed = [("PRISM_ENCRYPT_AT_REST", "true")];
    let out = run_role_with("fault", &sealed, Duration::from_secs(300));
    println!("{out}");
}

#[test]
fn pipeline_a_preempted_run_saves_where_it_stopped_and_the_next_run_resumes_there() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().display().to_string();
    let saved = |s: &str| prism_ml::train::checkpoint::list(&dir.path().join(s));
    let both = || ["stage-0", "stage-1"].iter().all(|s| !saved(s).is_empty());
    let step = common::preempt_role("preempt", &ckpt, both);
    for s in ["stage-0", "stage-1"] {
        assert!(
            saved(s).iter().any(|(at, _)| *at == step),
            "{s} has no checkpoint of step {step}"
        );
    }
    let again = [("PRISM_TEST_CKPT", ckpt.as_str()), ("PRISM_PREEMPTED", "1")];
    let out = run_role_with("preempt", &again, Duration::from_secs(300));
    println!("{out}");
    assert!(
        out.contains(&format!("resuming from the checkpoint of step {step}"))
            && out.contains("FINISHED"),
        "{out}"
    );
}
