//! `TrainContext::all_reduce_tensors` on real worker actors: CPU tensors of
//! every layout through the ring, and (feature `cuda`, on a GPU machine)
//! CUDA tensors through NCCL, which is skipped with the reason elsewhere.

use prism_ml::recipes::{self, MlpConfig};
use prism_ml::train::{DdpTrainer, ScalingConfig, TrainContext};
use prism_test_support::*;
use std::time::Duration;
use tch::{Device, Kind, Tensor};

/// Rank r's tensors: a large contiguous f32 (reduced in place), a small
/// f32, an f64 and a non-contiguous (transposed) f32, all on `device`.
fn tensors(rank: usize, device: Device) -> Vec<Tensor> {
    let r = rank as f64;
    let big = Tensor::arange(300_000, (Kind::Float, device)) + r;
    let small = Tensor::full([7], r + 0.5, (Kind::Float, device));
    let wide = Tensor::full([3, 5], r * 1e-9 + 1.0, (Kind::Double, device));
    let strided = (Tensor::arange(12, (Kind::Float, device)).view([3, 4]) * (r + 1.0)).tr();
    vec![big, small, wide, strided]
}

/// Config: "cuda", "cpu", or "cpu@NODE" to also count the ranks on NODE.
fn tensors_loop(ctx: &mut TrainContext) -> Result<(), String> {
    let config = String::from_utf8_lossy(ctx.config()).into_owned();
    let (kind, node) = config.split_once('@').unwrap_or((config.as_str(), ""));
    let device = match kind {
        "cuda" => Device::Cuda(0),
        _ => Device::Cpu,
    };
    let n = ctx.world_size();
    let mine = tensors(ctx.rank(), device);
    let refs: Vec<&Tensor> = mine.iter().collect();
    ctx.all_reduce_tensors(&refs, false)
        .map_err(|e| e.to_string())?;
    let all: Vec<Vec<Tensor>> = (0..n).map(|r| tensors(r, device)).collect();
    for (i, got) in mine.iter().enumerate() {
        let want = all
            .iter()
            .map(|t| t[i].shallow_clone())
            .reduce(|a, b| a + b)
            .unwrap();
        let err = (got - &want).abs().max().double_value(&[]);
        if got.size() != want.size() || got.kind() != want.kind() || err > 1e-12 {
            return Err(format!("tensor {i} on {device:?}: off by {err}"));
        }
    }
    let mut here = [f64::from(u8::from(
        prism::node_id().map_err(|e| e.to_string())?.to_string() == node,
    ))];
    ctx.all_reduce(&mut here, false)
        .map_err(|e| e.to_string())?;
    ctx.set_output(
        format!(
            "{n} ranks, 4 tensors exact on {device:?}, {} on {node}",
            here[0]
        )
        .into_bytes(),
    );
    Ok(())
}
prism_ml::train_loop!(tensors_loop);

fn role_cpu() {
    let _c = prism::InitOptions::new().num_cpus(3.0).init().unwrap();
    for n in [1, 3] {
        let out = DdpTrainer::new("tensors_loop", ScalingConfig::new(n))
            .unwrap()
            .config(b"cpu".to_vec())
            .fit()
            .unwrap();
        println!("{}", String::from_utf8_lossy(&out.output));
        check(
            String::from_utf8_lossy(&out.output).starts_with(&format!("{n} ranks")),
            &format!("{n} ranks: sums exact for every layout"),
        );
    }
    println!("ALL OK");
}

/// A driver joined to a head and a second raylet (real `prism start`
/// daemons): the ring spans two nodes, so chunks go through each node's
/// store and are pulled over QUIC.
fn role_two_nodes() {
    let _c = prism::init().unwrap();
    // The driver's raylet is the head's node; the ranks there are counted.
    let head_node = prism::node_id().unwrap().to_string();
    let config = format!("cpu@{head_node}").into_bytes();
    let mut scaling = ScalingConfig::new(2);
    scaling.strategy = prism::PlacementStrategy::StrictSpread;
    let out = DdpTrainer::new("tensors_loop", scaling)
        .unwrap()
        .config(config.clone())
        .fit()
        .unwrap();
    let said = String::from_utf8_lossy(&out.output).into_owned();
    check(
        said.starts_with("2 ranks") && said.ends_with(&format!(", 1 on {head_node}")),
        "2 ranks on 2 nodes (STRICT_SPREAD): chunks through the stores and QUIC, sums exact",
    );
    // 4 ranks packed 2 + 2 on the two nodes: links inside a node are
    // channels, the two links between the nodes go through the stores.
    let out = DdpTrainer::new("tensors_loop", ScalingConfig::new(4))
        .unwrap()
        .config(config)
        .fit()
        .unwrap();
    let said = String::from_utf8_lossy(&out.output).into_owned();
    check(
        said.starts_with("4 ranks") && said.ends_with(&format!(", 2 on {head_node}")),
        "4 ranks on 2 nodes (PACK, 2 + 2): channel and store links mixed, sums exact",
    );
    // DDP training across the two nodes: shards and gradients cross QUIC.
    let (train, test) = prism_ml::data::digits(128)
        .unwrap()
        .shuffle(3)
        .unwrap()
        .train_test_split(0.2, 7)
        .unwrap();
    let cfg = MlpConfig {
        layers: vec![64, 64, 10],
        epochs: 6,
        batch_size: 32,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 0.0,
        seed: 1,
        cuda: false,
    };
    let mut scaling = ScalingConfig::new(2);
    scaling.strategy = prism::PlacementStrategy::StrictSpread;
    let result = DdpTrainer::new("mlp_classifier", scaling)
        .unwrap()
        .config(cfg.to_bytes())
        .dataset(train)
        .fit()
        .unwrap();
    let (_, net) = recipes::load_flat(&cfg, &result.output).unwrap();
    let acc = recipes::accuracy(&net, &test).unwrap();
    check(
        acc >= 0.85,
        &format!("DDP on 2 nodes learns the digits: test accuracy {acc:.3}"),
    );
    println!("ALL OK");
}

#[cfg(feature = "cuda")]
fn role_cuda() {
    let gpus = tch::Cuda::device_count().max(0) as usize;
    let n = gpus.min(2);
    let _c = prism::InitOptions::new().num_cpus(n as f64).init().unwrap();
    let mut scaling = ScalingConfig::new(n);
    scaling.gpus_per_worker = 1.0;
    let out = DdpTrainer::new("tensors_loop", scaling)
        .unwrap()
        .config(b"cuda".to_vec())
        .fit()
        .unwrap();
    let what = if n >= 2 {
        format!("{n} ranks on {n} GPUs: NCCL sums exact")
    } else {
        // NCCL wants a GPU per rank: one GPU only smoke-tests the path.
        "1 rank on 1 GPU: the NCCL path runs (a cross-rank sum needs 2 GPUs)".to_string()
    };
    check(
        String::from_utf8_lossy(&out.output).starts_with(&format!("{n} ranks")),
        &what,
    );
    println!("ALL OK");
}

#[test]
#[ignore = "a driver role, run by the tests in this file"]
fn child_role() {
    match std::env::var("PRISM_TEST_ROLE").unwrap().as_str() {
        "cpu" => role_cpu(),
        "two_nodes" => role_two_nodes(),
        #[cfg(feature = "cuda")]
        "cuda" => role_cuda(),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn cpu_tensors_of_every_layout_all_reduce_exactly() {
    run_role("cpu", Duration::from_secs(300));
}

#[test]
fn a_ring_across_two_nodes_goes_through_the_stores() {
    if find_prism_bin().is_none() {
        eprintln!(
            "SKIPPED: no prism binary beside this test (cargo test --workspace builds it; \
             cargo build -p prism-cli first when testing prism-ml alone)"
        );
        return;
    }
    let sb = Sandbox::new();
    let head = sb.start_head(&["--num-cpus", "2"]);
    let far = sb.start_raylet("far", &head, &["--num-cpus", "2"]);
    let envs = sb.driver_envs(&head, &head);
    let (ok, out) = Job::spawn("two_nodes", &envs).finish(Duration::from_secs(180));
    println!("{out}");
    assert!(
        ok && out.contains("ALL OK"),
        "role two_nodes:\n{out}\n--- head:\n{}\n--- far raylet:\n{}",
        head.log(),
        far.log()
    );
}

#[test]
#[cfg_attr(
    not(feature = "cuda"),
    ignore = "needs the `cuda` feature and a GPU: cargo test -p prism-ml --features cuda"
)]
fn cuda_tensors_all_reduce_through_nccl() {
    #[cfg(feature = "cuda")]
    {
        if let Some(why) = prism_ml::train::nccl::unavailable() {
            eprintln!("SKIPPED: {why}");
            return;
        }
        run_role("cuda", Duration::from_secs(300));
    }
}
