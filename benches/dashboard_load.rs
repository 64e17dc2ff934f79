//! The dashboard under a loaded cluster: 10,000 finished tasks, 1,000
//! actors (created, then killed: their rows stay) and 100 placement groups
//! in the tables; then the p50/p95 latency of API pages of 100 rows and of
//! the HTML pages, with the listing cache off (every request asks the head,
//! which asks the raylets) and on (500 ms, the default); and the head
//! process' RSS and CPU with no dashboard, an idle one, and one browser
//! tab's polling (summary + a table every 2 s).
//!
//! Run: `cargo bench --bench dashboard_load` (PRISM_BENCH_TASKS,
//! PRISM_BENCH_ACTORS, PRISM_BENCH_GROUPS override the sizes); `cargo test`
//! runs a tiny version so it keeps working.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[prism::remote]
fn noop(i: u64) -> u64 {
    i
}

#[prism::actor]
struct Cell {
    v: u64,
}

#[prism::actor]
impl Cell {
    fn new() -> Self {
        Cell { v: 0 }
    }
    fn get(&mut self) -> u64 {
        self.v
    }
}

struct Head {
    child: Child,
    session: std::path::PathBuf,
}

impl Drop for Head {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_head(temp: &Path, name: &str, extra: &[&str], cache_ms: u64) -> Head {
    let session = temp.join(format!("session_{name}"));
    std::fs::create_dir_all(&session).unwrap();
    let log = std::fs::File::create(session.join("out.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args([
            "start",
            "--head",
            "--block",
            "--port",
            "0",
            "--num-cpus",
            "2",
            "--temp-dir",
        ])
        .arg(temp)
        .arg("--session-dir")
        .arg(&session)
        .args(extra)
        .env("PRISM_DASHBOARD_CACHE_MS", cache_ms.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !session.join("ready.json").exists() {
        assert!(Instant::now() < deadline, "head not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    Head { child, session }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn rss_mb(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = &stat[stat.rfind(')').map(|i| i + 2).unwrap_or(0)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn get(url: &str, token: &str) -> usize {
    let r = ureq::get(url)
        .set("Authorization", &format!("Bearer {token}"))
        .timeout(Duration::from_secs(60))
        .call()
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    r.into_string().map(|s| s.len()).unwrap_or(0)
}

/// p50 and p95 of `n` sequential requests, in ms.
fn latency(url: &str, token: &str, n: usize) -> (f64, f64, usize) {
    let mut ms = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        bytes = get(url, token);
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.95), bytes)
}

fn env_or(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // Workers of this job re-enter here and never return.
    if std::env::var_os("PRISM_WORKER_SOCKET").is_some() {
        let _ = prism::init();
    }
    let test_mode =
        !std::env::args().any(|a| a == "--bench") || std::env::args().any(|a| a == "--test");
    let (tasks, actors, groups, samples) = if test_mode {
        (50, 4, 2, 5)
    } else {
        (
            env_or("PRISM_BENCH_TASKS", 10_000),
            env_or("PRISM_BENCH_ACTORS", 1_000),
            env_or("PRISM_BENCH_GROUPS", 100),
            100,
        )
    };
    let temp = tempfile::tempdir().unwrap();

    // Head RSS and CPU with no dashboard, for the idle comparison.
    let bare = start_head(temp.path(), "bare", &["--no-dashboard"], 500);
    std::thread::sleep(Duration::from_secs(if test_mode { 0 } else { 5 }));
    let (bare_rss, c0) = (rss_mb(bare.child.id()), cpu_secs(bare.child.id()));
    std::thread::sleep(Duration::from_secs(if test_mode { 1 } else { 10 }));
    let bare_cpu = cpu_secs(bare.child.id()) - c0;
    drop(bare);

    let cache_ms = std::env::var("PRISM_BENCH_CACHE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let head = start_head(temp.path(), "load", &["--dashboard-port", "0"], cache_ms);
    let pid = head.child.id();
    std::thread::sleep(Duration::from_secs(if test_mode { 0 } else { 5 }));
    let (idle_rss, c0) = (rss_mb(pid), cpu_secs(pid));
    std::thread::sleep(Duration::from_secs(if test_mode { 1 } else { 10 }));
    let idle_cpu = cpu_secs(pid) - c0;
    let ready = json(&head.session.join("ready.json"));
    let cluster = json(&head.session.join("cluster.json"));
    let base = ready["dashboard"].as_str().unwrap().to_string();
    let token = std::fs::read_to_string(head.session.join("dashboard_token")).unwrap();
    let token = token.trim().to_string();
    // SAFETY: no other thread reads the environment yet.
    unsafe {
        std::env::set_var("PRISM_ADDRESS", cluster["head_address"].as_str().unwrap());
        std::env::set_var("PRISM_TOKEN", cluster["token"].as_str().unwrap());
        std::env::set_var("PRISM_TEMP_DIR", temp.path());
    }
    let cluster = prism::init().unwrap();

    let t = Instant::now();
    for chunk in (0..tasks as u64).collect::<Vec<_>>().chunks(1000) {
        let refs: Vec<_> = chunk.iter().map(|i| noop::remote(*i).unwrap()).collect();
        prism::get_all(&refs).unwrap();
    }
    for _ in 0..actors.div_ceil(50) {
        let hs: Vec<_> = (0..50.min(actors))
            .map(|_| Cell::options().num_cpus(0.0).spawn().unwrap())
            .collect();
        for h in &hs {
            h.get().unwrap().get().unwrap();
        }
        for h in &hs {
            prism::kill(h, true).unwrap();
        }
    }
    let mut pgs = Vec::new();
    for _ in 0..groups {
        let pg = prism::PlacementGroup::create(
            vec![prism::Bundle::new().cpus(0.01)],
            prism::PlacementStrategy::Pack,
        )
        .unwrap();
        pg.ready(Duration::from_secs(30)).unwrap();
        pgs.push(pg);
    }
    println!(
        "loaded {tasks} tasks, {actors} actors (killed), {groups} placement groups in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    println!("| request (cache {cache_ms} ms) | p50 ms | p95 ms | bytes |\n|---|---:|---:|---:|");
    for path in [
        "/api/v0/tasks?limit=100",
        "/api/v0/tasks?state=finished&sort=ended_us&order=desc&limit=100",
        "/api/v0/actors?limit=100",
        "/api/v0/placement_groups?limit=100",
        "/api/v0/nodes",
        "/api/v0/summary",
        "/metrics",
        "/",
        "/static/app.js",
    ] {
        let (p50, p95, bytes) = latency(&format!("{base}{path}"), &token, samples);
        println!("| `{path}` | {p50:.1} | {p95:.1} | {bytes} |");
    }

    // One tab: the overview polls the summary and the tasks page a table,
    // every 2 s.
    let (c0, w0) = (cpu_secs(pid), Instant::now());
    let secs = if test_mode { 2 } else { 20 };
    while w0.elapsed() < Duration::from_secs(secs) {
        get(&format!("{base}/api/v0/summary"), &token);
        get(&format!("{base}/api/v0/tasks?limit=100"), &token);
        std::thread::sleep(Duration::from_secs(2));
    }
    let tab_cpu = (cpu_secs(pid) - c0) / w0.elapsed().as_secs_f64() * 100.0;
    let idle_window = if test_mode { 1.0 } else { 10.0 };
    println!(
        "head process (head + raylet + dashboard): RSS {bare_rss:.1} MB without a dashboard, {idle_rss:.1} MB with one idle; \
         CPU {:.2}% / {:.2}% of a core idle (without / with), {tab_cpu:.2}% with one tab polling every 2 s \
         over {tasks} tasks, RSS now {:.1} MB",
        bare_cpu / idle_window * 100.0,
        idle_cpu / idle_window * 100.0,
        rss_mb(pid),
    );
    drop(pgs);
    drop(cluster);
}
