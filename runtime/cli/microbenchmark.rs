//! `prism microbenchmark`: Ray's `ray microbenchmark` workloads, with the
//! same names and definitions (`python/ray/_private/ray_perf.py`), on the
//! embedded cluster or `PRISM_ADDRESS`; each row is the mean ± standard
//! deviation of `--trials` timed runs after a warm-up, like Ray's `timeit`.
//! Extras Ray does not print follow (latency percentiles, 1 GB get).
//!
//! This binary is itself the job: workers are `prism` started with the same
//! arguments, and `prism::init()` never returns in them.

use prism::{ActorHandle, ObjectRef};
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct MicrobenchmarkArgs {
    /// Only workloads whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Seconds per timed trial (Ray: 2).
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Timed trials per workload (Ray: 4).
    #[arg(long, default_value_t = 4)]
    trials: usize,
}

#[prism::remote]
fn small_value() -> Vec<u8> {
    b"ok".to_vec()
}

#[prism::remote]
fn do_put_small() -> u32 {
    for _ in 0..100 {
        drop(prism::put(&0u64).expect("put"));
    }
    0
}

#[prism::remote]
fn do_put() -> u32 {
    for _ in 0..10 {
        drop(prism::put(&vec![0i64; 10 * 1024 * 1024]).expect("put"));
    }
    0
}

#[prism::remote]
fn create_object_containing_ref() -> Vec<ObjectRef<u64>> {
    (0..10_000)
        .map(|_| prism::put(&1u64).expect("put"))
        .collect()
}

#[prism::remote]
fn work(actors: Vec<ActorHandle<Actor>>, n: u64) -> u32 {
    let k = actors.len() as u64;
    let refs: Vec<_> = (0..n)
        .map(|i| actors[(i % k) as usize].small_value().expect("call"))
        .collect();
    prism::get_all(&refs).expect("results");
    0
}

#[prism::remote]
fn async_actor_work(actors: Vec<ActorHandle<AsyncActor>>, n: u64) -> u32 {
    let k = actors.len() as u64;
    let refs: Vec<_> = (0..n)
        .map(|i| actors[(i % k) as usize].small_value().expect("call"))
        .collect();
    prism::get_all(&refs).expect("results");
    0
}

#[prism::actor]
pub struct Actor {}

#[prism::actor]
impl Actor {
    fn new() -> Self {
        Actor {}
    }
    fn small_value(&self) -> Vec<u8> {
        b"ok".to_vec()
    }
    fn small_value_arg(&self, _x: u64) -> Vec<u8> {
        b"ok".to_vec()
    }
    fn small_value_batch(&self, n: u64) -> u32 {
        let refs: Vec<_> = (0..n)
            .map(|_| small_value::remote().expect("submit"))
            .collect();
        prism::get_all(&refs).expect("results");
        0
    }
}

#[prism::actor]
pub struct AsyncActor {}

#[prism::actor]
impl AsyncActor {
    fn new() -> Self {
        AsyncActor {}
    }
    async fn small_value(&self) -> Vec<u8> {
        b"ok".to_vec()
    }
    async fn small_value_with_arg(&self, _x: u64) -> Vec<u8> {
        b"ok".to_vec()
    }
}

#[prism::actor]
pub struct Client {
    servers: Vec<ActorHandle<Actor>>,
    async_servers: Vec<ActorHandle<AsyncActor>>,
}

#[prism::actor]
impl Client {
    fn new(servers: Vec<ActorHandle<Actor>>, async_servers: Vec<ActorHandle<AsyncActor>>) -> Self {
        Client {
            servers,
            async_servers,
        }
    }
    fn small_value_batch(&self, n: u64) -> u32 {
        let mut refs = Vec::new();
        for s in &self.servers {
            refs.extend((0..n).map(|_| s.small_value().expect("call")));
        }
        for s in &self.async_servers {
            refs.extend((0..n).map(|_| s.small_value().expect("call")));
        }
        prism::get_all(&refs).expect("results");
        0
    }
    fn small_value_batch_arg(&self, n: u64) -> u32 {
        let x = prism::put(&0u64).expect("put");
        let mut refs = Vec::new();
        for s in &self.servers {
            refs.extend((0..n).map(|_| s.small_value_arg(&x).expect("call")));
        }
        prism::get_all(&refs).expect("results");
        0
    }
}

struct Row {
    name: String,
    mean: f64,
    std: f64,
    unit: &'static str,
}

struct Bench {
    args: MicrobenchmarkArgs,
    rows: Vec<Row>,
    index: usize,
}

impl Bench {
    fn wanted(&self, name: &str) -> bool {
        self.args.filter.as_deref().is_none_or(|f| name.contains(f))
    }

    /// Ray's `timeit`: a 1 s warm-up sizes a step, then `trials` runs of
    /// `duration` seconds each; rate = multiplier × calls / seconds.
    fn timeit(&mut self, name: &str, multiplier: f64, mut f: impl FnMut()) {
        if !self.wanted(name) {
            return;
        }
        self.index += 1;
        eprint!("[{}] {name} ...", self.index);
        let warm = Instant::now();
        let mut count = 0u64;
        while warm.elapsed().as_secs_f64() < self.args.duration.min(1.0) {
            f();
            count += 1;
        }
        let step = count / 10 + 1;
        let mut stats = Vec::new();
        for _ in 0..self.args.trials {
            let start = Instant::now();
            let mut n = 0;
            while start.elapsed().as_secs_f64() < self.args.duration {
                for _ in 0..step {
                    f();
                }
                n += step;
            }
            stats.push(multiplier * n as f64 / start.elapsed().as_secs_f64());
            eprint!(".");
        }
        let mean = stats.iter().sum::<f64>() / stats.len() as f64;
        let std =
            (stats.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / stats.len() as f64).sqrt();
        eprintln!(" {mean:.2} ± {std:.2} per second");
        self.rows.push(Row {
            name: name.into(),
            mean,
            std,
            unit: "per second",
        });
    }

    fn extra(&mut self, name: &str, value: f64, unit: &'static str) {
        if self.wanted(name) {
            eprintln!("[extra] {name}: {value:.2} {unit}");
            self.rows.push(Row {
                name: name.into(),
                mean: value,
                std: 0.0,
                unit,
            });
        }
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub fn run(args: MicrobenchmarkArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let cluster = prism::init()?;
    small_value::remote()?.get()?;
    let cold = t0.elapsed().as_secs_f64() * 1e3;
    let json_out = args.json;
    let mut b = Bench {
        args,
        rows: Vec::new(),
        index: 0,
    };
    b.extra("cold start to first task result (ms)", cold, "ms");

    let value = prism::put(&0u64)?;
    b.timeit("single client get calls (Plasma Store)", 1.0, || {
        value.get().expect("get");
    });
    b.timeit("single client put calls (Plasma Store)", 1.0, || {
        drop(prism::put(&0u64).expect("put"));
    });
    b.timeit("multi client put calls (Plasma Store)", 1000.0, || {
        let refs: Vec<_> = (0..10)
            .map(|_| do_put_small::remote().expect("submit"))
            .collect();
        prism::get_all(&refs).expect("results");
    });
    if b.wanted("single client put gigabytes") {
        let arr = vec![0i64; 100 * 1024 * 1024];
        b.timeit("single client put gigabytes", 8.0 * 0.1, || {
            drop(prism::put(&arr).expect("put"));
        });
    }
    b.timeit("single client tasks and get batch", 1.0, || {
        let refs: Vec<_> = (0..1000)
            .map(|_| small_value::remote().expect("submit"))
            .collect();
        prism::get_all(&refs).expect("results");
    });
    b.timeit("multi client put gigabytes", 10.0 * 8.0 * 0.1, || {
        let refs: Vec<_> = (0..10).map(|_| do_put::remote().expect("submit")).collect();
        prism::get_all(&refs).expect("results");
    });
    if b.wanted("single client get object containing 10k refs") {
        let obj = create_object_containing_ref::remote()?;
        b.timeit("single client get object containing 10k refs", 1.0, || {
            obj.get().expect("get");
        });
    }
    b.timeit("single client wait 1k refs", 1.0, || {
        let mut not_ready: Vec<_> = (0..1000)
            .map(|_| small_value::remote().expect("submit"))
            .collect();
        while !not_ready.is_empty() {
            not_ready = prism::wait(&not_ready, 1, None).expect("wait").1;
        }
    });
    b.timeit("single client tasks sync", 1.0, || {
        small_value::remote().expect("submit").get().expect("get");
    });
    b.timeit("single client tasks async", 1000.0, || {
        let refs: Vec<_> = (0..1000)
            .map(|_| small_value::remote().expect("submit"))
            .collect();
        prism::get_all(&refs).expect("results");
    });
    let n_cpu = (std::thread::available_parallelism().map_or(2, |n| n.get()) / 2).max(1);
    if b.wanted("multi client tasks async") {
        let (n, m) = (10_000u64, 4);
        let actors: Vec<_> = (0..m)
            .map(|_| Actor::options().spawn())
            .collect::<prism::Result<_>>()?;
        b.timeit("multi client tasks async", (n * m as u64) as f64, || {
            let refs: Vec<_> = actors
                .iter()
                .map(|a| a.small_value_batch(n).expect("call"))
                .collect();
            prism::get_all(&refs).expect("results");
        });
    }
    let a = Actor::options().spawn()?;
    b.timeit("1:1 actor calls sync", 1.0, || {
        a.small_value().expect("call").get().expect("get");
    });
    b.timeit("1:1 actor calls async", 1000.0, || {
        let refs: Vec<_> = (0..1000).map(|_| a.small_value().expect("call")).collect();
        prism::get_all(&refs).expect("results");
    });
    if b.wanted("1:1 actor calls concurrent") {
        let c = Actor::options().max_concurrency(16).spawn()?;
        b.timeit("1:1 actor calls concurrent", 1000.0, || {
            let refs: Vec<_> = (0..1000).map(|_| c.small_value().expect("call")).collect();
            prism::get_all(&refs).expect("results");
        });
    }
    if b.wanted("1:n actor calls async") {
        let n = 5000u64;
        let servers: Vec<_> = (0..n_cpu)
            .map(|_| Actor::options().spawn())
            .collect::<prism::Result<_>>()?;
        let client = Client::options().spawn(servers, Vec::<ActorHandle<AsyncActor>>::new())?;
        b.timeit("1:n actor calls async", (n * n_cpu as u64) as f64, || {
            client
                .small_value_batch(n)
                .expect("call")
                .get()
                .expect("get");
        });
    }
    if b.wanted("n:n actor calls async") {
        let (n, m) = (5000u64, 4);
        let actors: Vec<_> = (0..n_cpu)
            .map(|_| Actor::options().spawn())
            .collect::<prism::Result<_>>()?;
        b.timeit("n:n actor calls async", (m as u64 * n) as f64, || {
            let refs: Vec<_> = (0..m)
                .map(|_| work::remote(actors.clone(), n).expect("submit"))
                .collect();
            prism::get_all(&refs).expect("results");
        });
    }
    if b.wanted("n:n actor calls with arg async") {
        let n = 1000u64;
        let clients: Vec<_> = (0..n_cpu)
            .map(|_| {
                Client::options().spawn(
                    vec![Actor::options().spawn()?],
                    Vec::<ActorHandle<AsyncActor>>::new(),
                )
            })
            .collect::<prism::Result<_>>()?;
        b.timeit(
            "n:n actor calls with arg async",
            (n * clients.len() as u64) as f64,
            || {
                let refs: Vec<_> = clients
                    .iter()
                    .map(|c| c.small_value_batch_arg(n).expect("call"))
                    .collect();
                prism::get_all(&refs).expect("results");
            },
        );
    }
    // Ray's async actors default to 1,000 concurrent calls.
    let aa = AsyncActor::options().max_concurrency(1000).spawn()?;
    b.timeit("1:1 async-actor calls sync", 1.0, || {
        aa.small_value().expect("call").get().expect("get");
    });
    b.timeit("1:1 async-actor calls async", 1000.0, || {
        let refs: Vec<_> = (0..1000).map(|_| aa.small_value().expect("call")).collect();
        prism::get_all(&refs).expect("results");
    });
    b.timeit("1:1 async-actor calls with args async", 1000.0, || {
        let refs: Vec<_> = (0..1000u64)
            .map(|i| aa.small_value_with_arg(i).expect("call"))
            .collect();
        prism::get_all(&refs).expect("results");
    });
    if b.wanted("1:n async-actor calls async") {
        let n = 5000u64;
        let servers: Vec<_> = (0..n_cpu)
            .map(|_| AsyncActor::options().max_concurrency(1000).spawn())
            .collect::<prism::Result<_>>()?;
        let client = Client::options().spawn(Vec::<ActorHandle<Actor>>::new(), servers)?;
        b.timeit(
            "1:n async-actor calls async",
            (n * n_cpu as u64) as f64,
            || {
                client
                    .small_value_batch(n)
                    .expect("call")
                    .get()
                    .expect("get");
            },
        );
    }
    if b.wanted("n:n async-actor calls async") {
        let (n, m) = (5000u64, 4);
        let actors: Vec<_> = (0..n_cpu)
            .map(|_| AsyncActor::options().max_concurrency(1000).spawn())
            .collect::<prism::Result<_>>()?;
        b.timeit("n:n async-actor calls async", (m as u64 * n) as f64, || {
            let refs: Vec<_> = (0..m)
                .map(|_| async_actor_work::remote(actors.clone(), n).expect("submit"))
                .collect();
            prism::get_all(&refs).expect("results");
        });
    }
    if b.wanted("placement group create/removal") {
        // Ray's: 100 groups of one tiny bundle created, waited for, removed.
        // (Ray's bundle is {"custom": 0.001}; ours {"CPU": 0.001}, as a
        // joined cluster need not have a custom resource.)
        let num_pgs = 100;
        b.timeit("placement group create/removal", num_pgs as f64, || {
            let pgs: Vec<_> = (0..num_pgs)
                .map(|_| {
                    prism::PlacementGroup::create(
                        vec![prism::Bundle::new().cpus(0.001)],
                        prism::PlacementStrategy::Pack,
                    )
                    .expect("create")
                })
                .collect();
            for pg in &pgs {
                pg.ready(Duration::from_secs(30)).expect("ready");
            }
            for pg in &pgs {
                pg.remove().expect("remove");
            }
        });
    }
    // Extras: latency percentiles and a 1 GB get.
    if b.wanted("sync task latency") {
        let mut v: Vec<f64> = (0..2000)
            .map(|_| {
                let t = Instant::now();
                small_value::remote().expect("submit").get().expect("get");
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        b.extra("sync task latency p50 (us)", pct(&mut v, 0.5), "us");
        b.extra("sync task latency p99 (us)", pct(&mut v, 0.99), "us");
    }
    if b.wanted("sync actor call latency") {
        let mut v: Vec<f64> = (0..2000)
            .map(|_| {
                let t = Instant::now();
                a.small_value().expect("call").get().expect("get");
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        b.extra("sync actor call latency p50 (us)", pct(&mut v, 0.5), "us");
        b.extra("sync actor call latency p99 (us)", pct(&mut v, 0.99), "us");
    }
    if b.wanted("1 GB get latency") {
        let big = prism::put(&vec![0u8; 1 << 30])?;
        let t = Instant::now();
        let got = big.get()?;
        b.extra(
            "1 GB get latency (ms, into an owned Vec)",
            t.elapsed().as_secs_f64() * 1e3,
            "ms",
        );
        drop(got);
    }
    if b.wanted("cross-node transfer") {
        match super::microbench_extras::cross_node_gbps(&cluster, 256) {
            Ok(v) => b.extra("cross-node transfer of 256 MiB (GB/s)", v, "GB/s"),
            Err(e) => eprintln!("[skip] cross-node transfer: {e:#}"),
        }
    }
    if b.wanted("idle memory") {
        match super::microbench_extras::idle_memory_mb() {
            Ok(v) => b.extra("idle memory, head + raylet daemon (MB RSS)", v, "MB"),
            Err(e) => eprintln!("[skip] idle memory: {e:#}"),
        }
    }
    // The scale envelope: only when asked for by name (minutes, gigabytes).
    if b.args
        .filter
        .as_deref()
        .is_some_and(|f| f.contains("scale"))
    {
        for (name, value, unit) in super::microbench_scale::run()? {
            b.extra(&name, value, unit);
        }
    }
    drop(cluster);
    if json_out {
        let rows: Vec<_> = b
            .rows
            .iter()
            .map(|r| json!({"name": r.name, "mean": r.mean, "std": r.std, "unit": r.unit}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<52} {:>16} {:>12}  UNIT", "WORKLOAD", "MEAN", "STD");
        for r in &b.rows {
            println!(
                "{:<52} {:>16.2} {:>12.2}  {}",
                r.name, r.mean, r.std, r.unit
            );
        }
    }
    Ok(())
}
