//! Prism's ML figures: ring all-reduce bus bandwidth (2 and 4 workers,
//! 1/16/128 MiB of f32), DDP step times for two MLPs next to one process at
//! the global batch, and pipeline step times (GPipe and 1F1B, 2 stages, 4
//! micro-batches; and 1F1B with 2 data-parallel replicas) for 8 blocks of
//! Linear(1024, 1024) + ReLU and a Linear(1024, 10) at batch 64 next to one
//! process; the parameter server in each mode beside DDP (time to a target
//! loss on the digits); and masking personal columns (per cell in one
//! thread, and a whole dataset in tasks). `benches/vs_torch/run.sh` puts PyTorch's
//! (gloo) numbers beside these.
//!
//!     cargo run --release -p prism-ml --example ml_bench [-- --json] [--quick]

use prism_ml::data::{Dataset, Mask};
use prism_ml::recipes::{self, MlpConfig};
use prism_ml::train::{collective, DdpTrainer, ScalingConfig, Sgd};
use std::time::Instant;
use tch::nn::Module;
use tch::{Kind, Tensor};

struct Row {
    name: String,
    value: f64,
    unit: &'static str,
}

fn busbw(workers: usize, mib: usize, repeat: u32) -> anyhow::Result<f64> {
    let len = mib * (1 << 20) / 4;
    let inputs: Vec<Vec<f32>> = (0..workers).map(|r| vec![r as f32; len]).collect();
    // Each rank's first all-reduce is untimed (warm-up and alignment).
    let (_, secs) = collective::all_reduce(inputs, false, 25 << 20, repeat)?;
    let per_op = secs / repeat as f64;
    let algbw = (len * 4) as f64 / per_op / 1e9;
    Ok(algbw * 2.0 * (workers - 1) as f64 / workers as f64)
}

fn synthetic(rows: i64, inputs: i64, classes: i64) -> anyhow::Result<Dataset> {
    tch::manual_seed(0);
    let x = Tensor::randn([rows, inputs], (Kind::Float, tch::Device::Cpu));
    let y = Tensor::randint(classes, [rows], (Kind::Int64, tch::Device::Cpu));
    Ok(Dataset::from_tch(&x, Some(&y), (rows / 8).max(1) as u64)?)
}

fn mlp_cfg(layers: Vec<i64>, batch: usize) -> MlpConfig {
    MlpConfig {
        layers,
        epochs: 1,
        batch_size: batch,
        lr: 0.01,
        momentum: 0.9,
        weight_decay: 0.0,
        seed: 0,
        cuda: false,
    }
}

/// Median ms per step of DDP with 2 workers at `batch` each, over `timed`
/// steps after `warmup` (rank 0's step times; the ranks move in lock step).
fn ddp_step(layers: &[i64], batch: usize, warmup: usize, timed: usize) -> anyhow::Result<f64> {
    let steps = (warmup + timed) as i64;
    let ds = synthetic(
        2 * batch as i64 * steps,
        layers[0],
        *layers.last().unwrap_or(&2),
    )?;
    let cfg = mlp_cfg(layers.to_vec(), batch);
    let r = DdpTrainer::new("mlp_classifier", ScalingConfig::new(2))?
        .config(cfg.to_bytes())
        .dataset(ds)
        .threads(1)
        .fit()?;
    let ends: Vec<f64> = r.metrics.iter().map(|m| m.seconds).collect();
    let mut times: Vec<f64> = ends
        .windows(2)
        .skip(warmup.saturating_sub(1))
        .map(|w| (w[1] - w[0]) * 1e3)
        .collect();
    anyhow::ensure!(!times.is_empty(), "no timed steps");
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Median ms per step in this process at `batch` (one libtorch thread),
/// over `steps` after `warmup`.
fn single_step(layers: &[i64], batch: i64, warmup: usize, steps: usize) -> f64 {
    tch::set_num_threads(1);
    let cfg = mlp_cfg(layers.to_vec(), batch as usize);
    let (vs, net) = recipes::build(&cfg);
    let mut opt = Sgd::new(0.01, 0.9, 0.0);
    let x = Tensor::randn([batch, layers[0]], (Kind::Float, tch::Device::Cpu));
    let y = Tensor::randint(
        *layers.last().unwrap_or(&2),
        [batch],
        (Kind::Int64, tch::Device::Cpu),
    );
    let mut times: Vec<f64> = (0..steps + warmup)
        .map(|_| {
            let t = Instant::now();
            let loss = net.forward(&x).cross_entropy_for_logits(&y);
            opt.zero_grad(&vs);
            loss.backward();
            opt.step(&vs).expect("step");
            t.elapsed().as_secs_f64() * 1e3
        })
        .skip(warmup)
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Median ms per step of `dp` replicas of a `p`-stage pipeline with `m`
/// micro-batches (each replica a batch of `batch`), and the most bytes of
/// activations any stage held.
#[allow(clippy::too_many_arguments)]
fn pipeline_step(
    layers: &[i64],
    batch: usize,
    p: u32,
    m: u32,
    dp: u32,
    schedule: prism_ml::pipeline::Schedule,
    steps: usize,
) -> anyhow::Result<(f64, u64, f64)> {
    let ds = synthetic(
        (batch * steps * dp as usize) as i64,
        layers[0],
        *layers.last().unwrap_or(&2),
    )?;
    let cfg = mlp_cfg(layers.to_vec(), batch);
    let r = prism_ml::pipeline::PipelineTrainer::new(cfg, p, m, schedule)
        .threads(1)
        .replicas(dp)
        .dataset(ds)
        .fit()?;
    let mut times: Vec<f64> = r.step_ms.iter().skip(2).copied().collect();
    anyhow::ensure!(!times.is_empty(), "no timed steps");
    times.sort_by(f64::total_cmp);
    let peak = r.peak_bytes.iter().flatten().max().copied().unwrap_or(0);
    // Each step's share of its time the stages, on average, did not
    // compute (waiting for a neighbour, passing tensors, the driver).
    let mut idle: Vec<f64> = (r.step_ms.iter().zip(&r.busy_ms))
        .skip(2)
        .map(|(ms, busy)| 1.0 - busy.iter().sum::<f64>() / (busy.len().max(1) as f64 * ms))
        .collect();
    idle.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], peak, idle[idle.len() / 2]))
}

/// The first step at which the mean of the last `window` losses is at
/// most `target`.
fn first_below(losses: &[f64], window: usize, target: f64) -> Option<usize> {
    (window..=losses.len()).find_map(|end| {
        let mean = losses[end - window..end].iter().sum::<f64>() / window as f64;
        (mean <= target).then_some(end - 1)
    })
}

/// The digits MLP (64-64-10, batches of 32 a worker, 15 epochs) on 2
/// workers, DDP beside the parameter server (2 shards) in each mode:
/// steps and seconds until rank 0's loss, averaged over 20 steps, is at
/// most `target`, and each shard's updates a second. DDP's seconds are its
/// loop's (after the workers started); the parameter server's workers
/// report losses, not times, so its seconds are the whole run's (actor and
/// task start included) scaled by the share of steps: compare steps.
fn time_to_loss(target: f64) -> anyhow::Result<Vec<(String, f64, &'static str)>> {
    use prism_ml::ps::{Mode, ParameterServer};
    let (train, _) = prism_ml::data::digits(128)?
        .shuffle(2024)?
        .train_test_split(0.2, 7)?;
    let mut cfg = mlp_cfg(vec![64, 64, 10], 32);
    cfg.epochs = 15;
    cfg.lr = 0.05;
    let mut rows = Vec::new();
    let r = DdpTrainer::new("mlp_classifier", ScalingConfig::new(2))?
        .config(cfg.to_bytes())
        .dataset(train.clone())
        .threads(1)
        .fit()?;
    let losses: Vec<f64> = r
        .metrics
        .iter()
        .filter_map(|m| m.values.iter().find(|(n, _)| n == "loss").map(|(_, v)| *v))
        .collect();
    let at = first_below(&losses, 20, target)
        .ok_or_else(|| anyhow::anyhow!("DDP never reached {target}"))?;
    eprintln!("ddp: loss {target} at step {at} of {}", losses.len());
    let steps = |at: usize| (at + 1) as f64;
    rows.push((format!("steps to loss {target} ddp"), steps(at), "steps"));
    rows.push((
        format!("time to loss {target} ddp 2 workers"),
        r.metrics[at].seconds,
        "s",
    ));
    for (mode, name) in [
        (Mode::Sync, "sync"),
        (Mode::Async, "async"),
        (Mode::Stale(4), "stale4"),
    ] {
        let r = ParameterServer::new(cfg.clone(), 2, 2, mode)
            .dataset(train.clone())
            .fit()?;
        let losses = &r.losses[0];
        let at = first_below(losses, 20, target)
            .ok_or_else(|| anyhow::anyhow!("the {name} parameter server never reached {target}"))?;
        eprintln!("ps {name}: loss {target} at step {at} of {}", losses.len());
        let secs = r.seconds * steps(at) / losses.len() as f64;
        rows.push((
            format!("steps to loss {target} ps {name}"),
            steps(at),
            "steps",
        ));
        rows.push((
            format!("time to loss {target} ps {name} 2 workers"),
            secs,
            "s",
        ));
        rows.push((
            format!("ps {name} updates/s per shard"),
            r.updates as f64 / 2.0 / r.seconds,
            "/s",
        ));
    }
    Ok(rows)
}

/// Million cells a second masked by `method` in one thread: `n` distinct
/// `i64`s (no value repeats, so nothing is worked out once for many).
fn mask_cells(method: Mask, n: usize) -> anyhow::Result<f64> {
    let keys = prism_ml::data::mask::MaskKeys::new(&[7; 32]);
    let mut bytes: Vec<u8> = (0..n as i64)
        .flat_map(|i| (i * 7_919).to_le_bytes())
        .collect();
    let t = Instant::now();
    prism_ml::data::mask::mask(&mut bytes, prism::DType::I64, 1, &[0], method, Some(&keys))
        .map_err(anyhow::Error::msg)?;
    Ok(n as f64 / t.elapsed().as_secs_f64() / 1e6)
}

/// Milliseconds for `Dataset::mask` of one column of `rows` distinct ids
/// (`[rows, 4]` i64, 8 blocks, one task each, key from the head).
fn mask_dataset(method: Mask, rows: u64) -> anyhow::Result<f64> {
    let flat: Vec<i64> = (0..rows as i64 * 4).collect();
    let f = prism::Tensor::from_slice(&[rows, 4], &flat)?;
    let ds = Dataset::from_tensors(&f, None, rows / 8)?;
    ds.mask(&[0], method)?; // warm: workers started, code paged in
    let t = Instant::now();
    ds.mask(&[0], method)?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

fn main() -> anyhow::Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    let quick = std::env::args().any(|a| a == "--quick");
    // `--filter TEXT`: only the rows whose name contains TEXT.
    let args: Vec<String> = std::env::args().collect();
    let filter = args
        .iter()
        .position(|a| a == "--filter")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_default();
    let wanted = |name: &str| name.contains(filter.as_str());
    let _c = prism::InitOptions::new().num_cpus(4.0).init()?;
    let mut rows = Vec::new();
    let mut push = |name: String, value: f64, unit: &'static str| {
        eprintln!("{name}: {value:.3} {unit}");
        rows.push(Row { name, value, unit });
    };
    for workers in [2usize, 4] {
        for (mib, repeat) in [(1usize, 50u32), (16, 10), (128, 3)] {
            let repeat = if quick { 1 } else { repeat };
            let name = format!("allreduce busbw {workers} workers {mib} MiB");
            if !wanted(&name) {
                continue;
            }
            let bw = busbw(workers, mib, repeat)?;
            push(name, bw, "GB/s");
        }
    }
    let small = [64i64, 256, 256, 10];
    let large = [1024i64, 4096, 4096, 1024];
    // (warm-up, timed) steps, as in benches/vs_torch/torch_bench.py.
    let (ss, ls) = if quick {
        ((3, 10), (1, 3))
    } else {
        ((50, 500), (3, 15))
    };
    if wanted("ddp step small mlp 2x64") {
        push(
            "ddp step small mlp 2x64".into(),
            ddp_step(&small, 64, ss.0, ss.1)?,
            "ms",
        );
    }
    if wanted("single step small mlp 128") {
        let v = single_step(&small, 128, ss.0, ss.1);
        push("single step small mlp 128".into(), v, "ms");
    }
    if wanted("ddp step large mlp 2x32") {
        push(
            "ddp step large mlp 2x32".into(),
            ddp_step(&large, 32, ls.0, ls.1)?,
            "ms",
        );
    }
    if wanted("single step large mlp 64") {
        let v = single_step(&large, 64, ls.0, ls.1);
        push("single step large mlp 64".into(), v, "ms");
    }
    // The model torch.distributed.pipelining was measured on (issue 18),
    // p stages × m micro-batches under both schedules, beside one process.
    let deep: Vec<i64> = std::iter::repeat_n(1024, 9).chain([10]).collect();
    let psteps = if quick { 5 } else { 20 };
    let schedules = [
        (prism_ml::pipeline::Schedule::GPipe, "gpipe"),
        (prism_ml::pipeline::Schedule::OneFOneB, "1f1b"),
    ];
    let sweep: Vec<(u32, u32, _, &str)> = [2u32, 4]
        .into_iter()
        .flat_map(|p| [2u32, 4, 8, 16].into_iter().map(move |m| (p, m)))
        .flat_map(|(p, m)| schedules.map(|(s, name)| (p, m, s, name)))
        .filter(|(p, m, _, name)| wanted(&format!("pipeline step 8x1024 p={p} m={m} {name}")))
        .collect();
    let single = (wanted("single step 8x1024 64") || !sweep.is_empty())
        .then(|| single_step(&deep, 64, 3, psteps));
    if let Some(v) = single {
        push("single step 8x1024 64".into(), v, "ms");
    }
    for (p, m, schedule, name) in sweep {
        let (ms, peak, idle_stages) = pipeline_step(&deep, 64, p, m, 1, schedule, psteps)?;
        push(format!("pipeline step 8x1024 p={p} m={m} {name}"), ms, "ms");
        // 1 - (one process's step / p) / the pipeline's: the share of the
        // step its stages are not computing (torch_bench.py's definition).
        let single = single.unwrap_or(f64::NAN);
        let idle = 1.0 - single / (f64::from(p) * ms);
        push(
            format!("pipeline bubble+overhead p={p} m={m} {name}"),
            idle,
            "fraction",
        );
        // The stages' own clocks: the share of the step they were not
        // computing (the bubble as the schedule makes it, with what passing
        // tensors costs), apart from how much slower small micro-batches
        // compute.
        push(
            format!("pipeline stage idle p={p} m={m} {name}"),
            idle_stages,
            "fraction",
        );
        let mb = peak as f64 / 1e6;
        push(
            format!("pipeline peak activations p={p} m={m} {name}"),
            mb,
            "MB",
        );
    }
    // Two replicas of it: every stage's 16.8 MB of gradients averaged
    // through its replicas' ring each step.
    let label = "pipeline step 8x1024 dp=2 p=2 m=4 1f1b";
    if wanted(label) {
        let one_f_one_b = prism_ml::pipeline::Schedule::OneFOneB;
        let (v, _, _) = pipeline_step(&deep, 64, 2, 4, 2, one_f_one_b, psteps)?;
        push(label.into(), v, "ms");
    }
    // The parameter server beside DDP: time to a target loss.
    if wanted("to loss") || wanted("updates/s") {
        for (name, value, unit) in time_to_loss(0.3)? {
            push(name, value, unit);
        }
    }
    // Masking personal columns: per cell, and a whole dataset in tasks.
    let cells = if quick { 100_000 } else { 1_000_000 };
    for method in [Mask::Redact, Mask::Hash, Mask::Tokenize] {
        let label = format!("mask {} cells", method.name());
        if wanted(&label) {
            push(label, mask_cells(method, cells)?, "Mcells/s");
        }
        let label = format!("dataset mask {} {}k rows", method.name(), cells / 1000);
        if wanted(&label) {
            push(label, mask_dataset(method, cells as u64)?, "ms");
        }
    }
    if json {
        let out: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "  {{\"name\": \"{}\", \"value\": {}, \"unit\": \"{}\"}}",
                    r.name, r.value, r.unit
                )
            })
            .collect();
        println!("[\n{}\n]", out.join(",\n"));
    } else {
        for r in &rows {
            println!("{:<36} {:>10.3} {}", r.name, r.value, r.unit);
        }
    }
    Ok(())
}
