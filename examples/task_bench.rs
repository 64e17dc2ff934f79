//! Task figures on the embedded cluster (or `PRISM_ADDRESS`): cold start to
//! the first result, sync round trip p50/p99, async no-op throughput, and
//! 10,000 tasks submitted then gathered. `cargo run --release --example task_bench`.

use std::time::{Duration, Instant};

#[prism::remote]
fn noop(x: u64) -> u64 {
    x
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let t0 = Instant::now();
    let cluster = prism::init()?;
    let first = noop::remote(1u64)?.get()?;
    let cold = t0.elapsed();
    println!(
        "cold start to first result: {:.1} ms ({} cluster, result {first})",
        cold.as_secs_f64() * 1e3,
        if cluster.is_embedded() {
            "embedded"
        } else {
            "joined"
        }
    );

    // Warm the pool.
    let warm: Vec<_> = (0..200u64)
        .map(noop::remote)
        .collect::<prism::Result<_>>()?;
    prism::get_all(&warm)?;

    let mut lat = Vec::with_capacity(n / 5);
    for i in 0..(n / 5) as u64 {
        let t = Instant::now();
        noop::remote(i)?.get()?;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "sync task round trip: p50 {:.0} µs, p99 {:.0} µs ({} calls)",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.len()
    );

    for round in 0..3 {
        let t = Instant::now();
        let refs: Vec<_> = (0..n as u64)
            .map(noop::remote)
            .collect::<prism::Result<_>>()?;
        let submitted = t.elapsed();
        prism::get_all(&refs)?;
        let all = t.elapsed();
        println!(
            "round {round}: {n} no-op tasks submitted in {:.0} ms, gathered: {:.0} tasks/s",
            submitted.as_secs_f64() * 1e3,
            n as f64 / all.as_secs_f64()
        );
    }
    Ok(())
}
