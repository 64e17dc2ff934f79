//! The scale envelope, rows of `prism microbenchmark --filter scale` only
//! (they take minutes and gigabytes): many objects alive at once, a million
//! tasks queued by one driver, as many actors as this machine holds. Each
//! row gives time and memory: the embedded cluster's head, raylet, store
//! and the driver share this process, so their memory is its RSS.
//! Sizes: `PRISM_SCALE_OBJECTS` (100,000), `PRISM_SCALE_TASKS` (1,000,000),
//! `PRISM_SCALE_ACTORS` (1,000).

use std::time::{Duration, Instant};

#[prism::remote]
fn scale_noop() -> u8 {
    1
}

#[prism::actor]
pub struct ScaleProbe {}

#[prism::actor]
impl ScaleProbe {
    fn new() -> Self {
        ScaleProbe {}
    }
    fn ping(&self) -> u8 {
        1
    }
}

/// A row: name, value, unit.
pub type Row = (String, f64, &'static str);

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A `/proc` field in bytes (0 where it cannot be read).
fn proc_field(file: &str, field: &str) -> f64 {
    super::microbench_extras::proc_bytes(file, field).unwrap_or(0.0)
}

fn rss() -> f64 {
    proc_field("/proc/self/status", "VmRSS:")
}

/// Every scale row.
pub fn run() -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    objects(&mut rows)?;
    tasks(&mut rows)?;
    actors(&mut rows)?;
    Ok(rows)
}

/// Small objects (kept by their owner) and shared-memory store objects
/// (over 100 KiB) alive at once.
fn objects(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let n = size("PRISM_SCALE_OBJECTS", 100_000);
    let before = rss();
    let t = Instant::now();
    let small: Vec<_> = (0..n as u64)
        .map(|i| prism::put(&i))
        .collect::<Result<_, _>>()?;
    let secs = t.elapsed().as_secs_f64();
    let label = |what: &str| format!("scale: {n} small objects alive, {what}");
    rows.push((label("puts/s"), n as f64 / secs, "per second"));
    rows.push((
        label("bytes of RSS per object"),
        (rss() - before) / n as f64,
        "bytes",
    ));
    drop(small);
    // Store objects: a fifth as many, of 101 KiB (2 GB at the default n).
    let m = (n / 5).max(1);
    let payload = vec![7u8; 101 << 10];
    let before = rss();
    let t = Instant::now();
    let big: Vec<_> = (0..m)
        .map(|_| prism::put(&payload))
        .collect::<Result<_, _>>()?;
    let secs = t.elapsed().as_secs_f64();
    let label = |what: &str| format!("scale: {m} store objects (101 KiB) alive, {what}");
    rows.push((label("puts/s"), m as f64 / secs, "per second"));
    // (RSS counts the shared-memory pages this process wrote: the payload.)
    let per = (rss() - before) / m as f64;
    rows.push((
        label("bytes of RSS per object (103,424 of payload)"),
        per,
        "bytes",
    ));
    drop(big);
    Ok(())
}

/// One driver submits every task before it gathers any.
fn tasks(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let n = size("PRISM_SCALE_TASKS", 1_000_000);
    let before = rss();
    let t = Instant::now();
    let refs: Vec<_> = (0..n)
        .map(|_| scale_noop::remote())
        .collect::<Result<_, _>>()?;
    let submitted = t.elapsed().as_secs_f64();
    let queued = rss();
    let got = prism::get_all(&refs)?;
    let total = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        got.len() == n && got.iter().all(|v| *v == 1),
        "wrong results"
    );
    let label = |what: &str| format!("scale: {n} tasks from one driver, {what}");
    rows.push((label("submitted/s"), n as f64 / submitted, "per second"));
    rows.push((label("run and gathered/s"), n as f64 / total, "per second"));
    rows.push((
        label("bytes of RSS per queued task"),
        (queued - before) / n as f64,
        "bytes",
    ));
    Ok(())
}

/// Actors (each a worker process, holding no CPU) until the asked number,
/// a failure, or less than 2 GiB of memory left on this machine.
fn actors(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let want = size("PRISM_SCALE_ACTORS", 1_000);
    let floor = 2.0 * (1u64 << 30) as f64;
    let free_before = proc_field("/proc/meminfo", "MemAvailable:");
    let t = Instant::now();
    let mut held = Vec::new();
    let mut stopped = format!("all {want} started");
    while held.len() < want {
        if proc_field("/proc/meminfo", "MemAvailable:") < floor {
            stopped = "less than 2 GiB of memory was left".into();
            break;
        }
        let a = match ScaleProbe::options().num_cpus(0.0).spawn() {
            Ok(a) => a,
            Err(e) => {
                stopped = format!("actor {} failed: {e}", held.len() + 1);
                break;
            }
        };
        // Each is running before the next starts.
        match a.ping() {
            Ok(r) if r.get_timeout(Duration::from_secs(60)).is_ok() => held.push(a),
            _ => {
                stopped = format!("actor {} never answered", held.len() + 1);
                break;
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let used = free_before - proc_field("/proc/meminfo", "MemAvailable:");
    eprintln!("scale: {} actors running ({stopped})", held.len());
    rows.push((
        "scale: actors running at once".into(),
        held.len() as f64,
        "actors",
    ));
    rows.push((
        "scale: actors started/s (each a process)".into(),
        held.len() as f64 / secs,
        "per second",
    ));
    rows.push((
        "scale: machine memory per running actor (MemAvailable drop)".into(),
        used / held.len().max(1) as f64 / (1u64 << 20) as f64,
        "MiB",
    ));
    drop(held);
    Ok(())
}
