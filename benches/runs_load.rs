//! Tracking on a durable head (`prism start --head`, SQLite in WAL mode):
//! how many metric points per second a driver's runs get into the store
//! (sent one step per message, as trainers do; counted once the head
//! answers with every step), and how long `prism runs list` takes with
//! 10,000 runs (the CLI process start, the QUIC connection and the table
//! included).
//!
//! Run: `cargo bench --bench runs_load`; `cargo test` runs a tiny version
//! so it keeps working.

use prism::proto::runs::RunPoint;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Head(Child);

impl Drop for Head {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prism(temp: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_prism"));
    c.env("PRISM_TEMP_DIR", temp)
        .env("PRISM_DASHBOARD_PORT", "0")
        .env("RUST_LOG", "warn");
    c
}

fn runs_json(temp: &Path, extra: &[&str]) -> (Vec<serde_json::Value>, f64) {
    let t = Instant::now();
    let out = prism(temp)
        .args(["runs", "list", "--json"])
        .args(extra)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    (serde_json::from_slice(&out.stdout).unwrap_or_default(), ms)
}

fn main() {
    // Workers of this job re-enter here and never return.
    if std::env::var_os("PRISM_WORKER_SOCKET").is_some() {
        let _ = prism::init();
    }
    let test_mode =
        !std::env::args().any(|a| a == "--bench") || std::env::args().any(|a| a == "--test");
    let (runs, point_runs, steps) = if test_mode {
        (50, 2, 100)
    } else {
        (10_000, 10, 10_000)
    };
    let temp = tempfile::tempdir().unwrap();
    let session = temp.path().join("session_head");
    std::fs::create_dir_all(&session).unwrap();
    let log = std::fs::File::create(session.join("out.log")).unwrap();
    let _head = Head(
        prism(temp.path())
            .args([
                "start",
                "--head",
                "--block",
                "--port",
                "0",
                "--num-cpus",
                "1",
                "--session-dir",
            ])
            .arg(&session)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !session.join("ready.json").exists() {
        assert!(Instant::now() < deadline, "head not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let cluster: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(session.join("cluster.json")).unwrap())
            .unwrap();
    std::env::set_var("PRISM_ADDRESS", cluster["head_address"].as_str().unwrap());
    std::env::set_var("PRISM_TOKEN", cluster["token"].as_str().unwrap());
    std::env::set_var("PRISM_TEMP_DIR", temp.path());
    let _c = prism::init().unwrap();

    // Points: `point_runs` runs of `steps` steps, one message per step.
    let t = Instant::now();
    for s in 0..steps {
        for r in 0..point_runs {
            let p = RunPoint {
                step: s,
                values: vec![
                    ("loss".into(), 1.0 / (s as f64 + 1.0)),
                    ("acc".into(), s as f64),
                ],
                seconds: s as f64,
            };
            prism::report_run(&format!("points-{r}"), "bench", vec![p]).unwrap();
        }
    }
    let all_in = || {
        let (list, _) = runs_json(
            temp.path(),
            &["--filter", "name = bench", "--limit", "100000"],
        );
        list.len() as u64 == point_runs && list.iter().all(|r| r["last_step"] == steps - 1)
    };
    while !all_in() {
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "points not in after 600 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let points_per_s = (point_runs * steps) as f64 / t.elapsed().as_secs_f64();

    // Runs: `runs` runs with 5 params and 1 point each.
    let t = Instant::now();
    for i in 0..runs {
        let id = format!("run-{i:05}");
        let params = (0..5)
            .map(|k| (format!("p{k}"), format!("{}", i * k)))
            .collect();
        prism::log_run_params(&id, "sweep", params, Vec::new()).unwrap();
        let p = RunPoint {
            step: 1,
            values: vec![("loss".into(), 1.0 / (i as f64 + 1.0))],
            seconds: 1.0,
        };
        prism::report_run(&id, "sweep", vec![p]).unwrap();
    }
    // Polled once a second: every poll lists every run.
    while runs_json(
        temp.path(),
        &["--filter", "name = sweep", "--limit", "100000"],
    )
    .0
    .len()
        < runs
    {
        assert!(
            t.elapsed() < Duration::from_secs(900),
            "runs not in after 900 s"
        );
        std::thread::sleep(Duration::from_millis(1000));
    }
    let runs_per_s = runs as f64 / t.elapsed().as_secs_f64();
    let median = |extra: &[&str]| {
        let mut ms: Vec<f64> = (0..5).map(|_| runs_json(temp.path(), extra).1).collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        ms[2]
    };
    let list_100 = median(&[]);
    let list_all = median(&["--limit", "100000"]);
    let filtered = median(&[
        "--filter",
        "metrics.loss < 0.001",
        "--sort",
        "metrics.loss",
        "--limit",
        "100000",
    ]);
    let db = std::fs::metadata(session.join("head.db"))
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::metadata(session.join("head.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!("| tracking on a durable head | value |");
    println!("|---|---|");
    println!(
        "| metric points into the store ({point_runs} runs × {steps} steps, one message a step) | {points_per_s:.0} points/s |"
    );
    println!("| new runs into the store (5 params and a point each: 2 messages a run) | {runs_per_s:.0} runs/s |");
    println!(
        "| `prism runs list` with {} runs (100 rows shown) | {list_100:.0} ms |",
        runs + point_runs as usize
    );
    println!("| `prism runs list --limit 100000` (every run) | {list_all:.0} ms |");
    println!("| `prism runs list --filter 'metrics.loss < 0.001' --sort metrics.loss` | {filtered:.0} ms |");
    println!(
        "| head.db (+ WAL) after it all | {:.1} MB |",
        db as f64 / 1e6
    );
}
