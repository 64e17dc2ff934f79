//! What several of prism-ml's integration tests share: a small synthetic
//! data set, and the one-process reference a distributed run must equal.

#![allow(dead_code)]

use prism_ml::data::Dataset;
use prism_ml::recipes::{self, MlpConfig};
use prism_ml::train::Sgd;
use tch::nn::{Module, VarStore};
use tch::{Kind, Tensor};

/// A small synthetic problem: 3 classes in 8 dimensions, 4 × 64 rows.
pub fn synthetic() -> Dataset {
    tch::manual_seed(7);
    let x = Tensor::randn([256, 8], (Kind::Float, tch::Device::Cpu));
    let y = x
        .sum_dim_intlist(1, false, Kind::Float)
        .gt(0.0)
        .to_kind(Kind::Int64)
        + x.select(1, 0).gt(1.0).to_kind(Kind::Int64);
    Dataset::from_tch(&x, Some(&y), 64).unwrap()
}

/// One process at the global batch: step k of each epoch trains on every
/// shard's batch k together; `steps` per epoch.
pub fn one_process(cfg: &MlpConfig, shards: &[Dataset], steps: usize) -> VarStore {
    one_process_of(cfg, recipes::build(cfg), shards, steps)
}

/// [`one_process`] for a given model (`cfg` gives the optimizer, the batch
/// and the epochs).
pub fn one_process_of(
    cfg: &MlpConfig,
    (vs, net): (VarStore, tch::nn::Sequential),
    shards: &[Dataset],
    steps: usize,
) -> VarStore {
    let mut opt = Sgd::new(cfg.lr, cfg.momentum, 0.0);
    for _ in 0..cfg.epochs {
        let mut iters: Vec<_> = shards
            .iter()
            .map(|s| s.iter_batches(cfg.batch_size))
            .collect();
        for _ in 0..steps {
            let parts: Vec<_> = iters
                .iter_mut()
                .map(|i| i.next().unwrap().unwrap())
                .collect();
            let x = Tensor::cat(&parts.iter().map(|p| &p.features).collect::<Vec<_>>(), 0);
            let y = Tensor::cat(
                &parts
                    .iter()
                    .map(|p| p.labels.as_ref().unwrap())
                    .collect::<Vec<_>>(),
                0,
            );
            let loss = net.forward(&x).cross_entropy_for_logits(&y);
            opt.zero_grad(&vs);
            loss.backward();
            opt.step(&vs).unwrap();
        }
    }
    vs
}

/// The largest difference between two models' weights.
pub fn largest_difference(a: &VarStore, b: &VarStore) -> f64 {
    a.trainable_variables()
        .iter()
        .zip(b.trainable_variables())
        .map(|(x, y)| (x - &y).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

/// The digits (128 rows a block), shuffled and split 80/20 — train, test.
pub fn digits() -> (Dataset, Dataset) {
    prism_ml::data::digits(128)
        .unwrap()
        .shuffle(2024)
        .unwrap()
        .train_test_split(0.2, 7)
        .unwrap()
}

/// An MLP for the digits: batch 32, momentum 0.9, seed 1, on the CPU.
pub fn digits_mlp(layers: Vec<i64>, epochs: u64, lr: f64) -> MlpConfig {
    MlpConfig {
        layers,
        epochs,
        batch_size: 32,
        lr,
        momentum: 0.9,
        weight_decay: 0.0,
        seed: 1,
        cuda: false,
    }
}

/// Kills (SIGKILL), from a thread, the process whose pid `pid_file` holds
/// as soon as `ready()` — unless the run ends first.
pub struct Killer {
    finished: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<i32>>,
}

impl Killer {
    /// Starts watching.
    pub fn when(ready: impl Fn() -> bool + Send + 'static, pid_file: std::path::PathBuf) -> Killer {
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = finished.clone();
        let thread = std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                if ready() {
                    let pid: i32 = std::fs::read_to_string(&pid_file)
                        .ok()?
                        .trim()
                        .parse()
                        .ok()?;
                    // SAFETY: kill(2) on a process the run under test started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return Some(pid);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            None
        });
        Killer { finished, thread }
    }

    /// The run ended: stop watching; the pid killed, if any.
    pub fn stop(self) -> Option<i32> {
        self.finished
            .store(true, std::sync::atomic::Ordering::Release);
        self.thread.join().unwrap()
    }
}

/// Starts driver role `role` with `PRISM_TEST_CKPT=ckpt`, sends it SIGTERM
/// (a preemption notice) once `saved()` holds, and returns the step it
/// says it stopped at after saving a checkpoint there.
pub fn preempt_role(role: &str, ckpt: &str, saved: impl Fn() -> bool) -> u64 {
    use prism_test_support::{wait_until, Job};
    let mut job = Job::spawn(role, &[("PRISM_TEST_CKPT", ckpt)]);
    assert!(
        wait_until(std::time::Duration::from_secs(120), saved),
        "no checkpoints: {}",
        job.stdout()
    );
    // SAFETY: kill only sends a signal to the child this test started.
    unsafe { libc::kill(job.pid() as i32, libc::SIGTERM) };
    let (ok, out) = job.finish(std::time::Duration::from_secs(120));
    assert!(ok && out.contains("ALL OK"), "{out}");
    out.lines()
        .find_map(|l| l.strip_prefix("PREEMPTED "))
        .and_then(|l| l.strip_suffix(" true"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not preempted after a checkpoint: {out}"))
}
