//! Actor figures on the embedded cluster (or `PRISM_ADDRESS`; set
//! `PRISM_BENCH_RESOURCE=name` to place the actors on the node that has that
//! resource): sync call p50/p99, pipelined calls/s from one caller, n:n, and
//! actor creation rate. `cargo run --release --example actor_bench`.

use std::time::{Duration, Instant};

#[prism::actor]
struct Echo {
    calls: u64,
}

#[prism::actor]
impl Echo {
    fn new() -> Self {
        Echo { calls: 0 }
    }
    fn ping(&mut self, x: u64) -> u64 {
        self.calls += 1;
        x
    }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e6
}

fn options() -> __PrismOptions_Echo {
    match std::env::var("PRISM_BENCH_RESOURCE") {
        Ok(r) => Echo::options().resource(&r, 0.001),
        Err(_) => Echo::options(),
    }
}

fn main() -> anyhow::Result<()> {
    let _cluster = prism::init()?;
    let a = options().spawn()?;
    a.ready()?;
    for i in 0..500u64 {
        a.ping(i)?.get()?;
    }
    let mut lat = Vec::new();
    for i in 0..3_000u64 {
        let t = Instant::now();
        a.ping(i)?.get()?;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "sync actor call: p50 {:.0} µs, p99 {:.0} µs",
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    for round in 0..3 {
        let n = 20_000u64;
        let t = Instant::now();
        let refs: Vec<_> = (0..n).map(|i| a.ping(i)).collect::<prism::Result<_>>()?;
        prism::get_all(&refs)?;
        println!(
            "round {round}: pipelined calls from one caller: {:.0}/s",
            n as f64 / t.elapsed().as_secs_f64()
        );
    }
    let actors: Vec<_> = (0..2)
        .map(|_| options().spawn())
        .collect::<prism::Result<_>>()?;
    let t = Instant::now();
    let per = 10_000u64;
    std::thread::scope(|s| {
        for _ in 0..2 {
            let actors = actors.clone();
            s.spawn(move || {
                let refs: Vec<_> = (0..per)
                    .map(|i| actors[(i % 2) as usize].ping(i).unwrap())
                    .collect();
                prism::get_all(&refs).unwrap();
            });
        }
    });
    println!(
        "n:n (2 callers x 2 actors): {:.0} calls/s",
        2.0 * per as f64 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let many: Vec<_> = (0..20)
        .map(|_| options().spawn())
        .collect::<prism::Result<_>>()?;
    for h in &many {
        h.ready()?;
    }
    println!(
        "actor creation: {:.0} actors/s until ready (20 actors, a process each)",
        20.0 / t.elapsed().as_secs_f64()
    );
    Ok(())
}
