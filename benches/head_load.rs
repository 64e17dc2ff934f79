//! The head's CPU and memory under many simulated nodes heartbeating once a
//! second, and the idle memory of a head node (head + its raylet).
//!
//! Run: `cargo bench --bench head_load` (1,000 nodes for 20 s; override with
//! PRISM_BENCH_NODES and PRISM_BENCH_SECONDS). `-- --test` runs a tiny
//! version so CI keeps it compiling and working.
//!
//! The simulated nodes are light clients in this process: one join, then one
//! mutually-authenticated QUIC connection per node, each registering and
//! heartbeating like a raylet. The head is a real `prism` process.

use prism::client::HeadClient;
use prism::proto::common::Resources;
use prism::proto::head::{HeadRequest, HeadResponse, PeerRole};
use prism::token::JoinToken;
use prism::transport::quic::QuicEndpoint;
use prism::transport::tls::{ClientTrust, NodeIdentity};
use prism::Config;
use prism_scheduler::{Quantity, ResourceSet, CPU};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(temp: &Path, name: &str, args: &[&str], heartbeat_ms: u64) -> Daemon {
    let session = temp.join(format!("session_{name}"));
    std::fs::create_dir_all(&session).unwrap();
    let log = std::fs::File::create(session.join("out.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args(["start", "--head", "--block", "--port", "0", "--temp-dir"])
        .arg(temp)
        .arg("--session-dir")
        .arg(&session)
        .args(args)
        .env("PRISM_HEARTBEAT_INTERVAL_MS", heartbeat_ms.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let d = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !session.join("ready.json").exists() {
        assert!(Instant::now() < deadline, "{name} not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    d
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = &stat[stat.rfind(')').map(|i| i + 2).unwrap_or(0)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
}

fn env_or(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; anything else (cargo test, `-- --test`) is a quick check.
    let test_mode =
        !std::env::args().any(|a| a == "--bench") || std::env::args().any(|a| a == "--test");
    let (nodes, secs) = if test_mode {
        (10, 1)
    } else {
        (
            env_or("PRISM_BENCH_NODES", 1000),
            env_or("PRISM_BENCH_SECONDS", 20),
        )
    };
    let temp = tempfile::tempdir().unwrap();

    // 1. Idle memory of a head node: the head and a raylet (one process).
    let idle = start(temp.path(), "idle", &["--num-cpus", "2"], 500);
    std::thread::sleep(Duration::from_millis(if test_mode { 200 } else { 3000 }));
    let idle_kib = rss_kib(idle.0.id());
    drop(idle);
    println!("idle head+raylet RSS: {:.1} MB", idle_kib as f64 / 1024.0);

    // 2. A head alone under simulated nodes heartbeating every second.
    let head = start(temp.path(), "load", &["--head-only"], 1000);
    let pid = head.0.id();
    let cluster: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(temp.path().join("session_load/cluster.json")).unwrap(),
    )
    .unwrap();
    let addr = cluster["head_address"].as_str().unwrap().parse().unwrap();
    let token: JoinToken = cluster["token"].as_str().unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acks = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let (cpu_pct, rss) = rt.block_on(async {
        let config = Config::default();
        let ep = Arc::new(QuicEndpoint::client([127, 0, 0, 1].into()).unwrap());
        let pinned = ClientTrust::Pinned {
            ca_fingerprint: token.ca_fingerprint.clone(),
        };
        let joiner =
            HeadClient::connect(&*ep, addr, &pinned, Some(&token), PeerRole::Raylet, &config)
                .await
                .unwrap();
        let HeadResponse::Joined {
            ca_pem,
            cert_pem,
            key_pem,
        } = joiner
            .request(&HeadRequest::Join {
                node_name: "sim".into(),
            })
            .await
            .unwrap()
        else {
            panic!("join failed")
        };
        let trust = ClientTrust::Mutual(Arc::new(NodeIdentity {
            ca_pem,
            cert_pem,
            key_pem,
        }));
        let total = ResourceSet::new().with(CPU, Quantity::whole(8));
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..nodes {
            let c = HeadClient::connect(&*ep, addr, &trust, None, PeerRole::Raylet, &config)
                .await
                .unwrap();
            let reg = prism::proto::head::RegisterNode {
                node_name: format!("sim-{i}"),
                address: format!("127.0.0.1:{}", 20000 + i),
                resources: Resources::from(&total),
                labels: vec![],
                gpus: vec![],
                is_head: false,
                pid: 0,
            };
            let HeadResponse::Registered { node_id, .. } =
                c.request(&HeadRequest::Register(reg)).await.unwrap()
            else {
                panic!("register failed")
            };
            let (acks, failures, total) = (acks.clone(), failures.clone(), total.clone());
            let offset = Duration::from_millis(1000 * i / nodes.max(1));
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let beat = HeadRequest::Heartbeat {
                        node_id,
                        available: Resources::from(&total),
                        demand: Vec::new(),
                    };
                    match c.request(&beat).await {
                        Ok(HeadResponse::HeartbeatAck) => acks.fetch_add(1, Ordering::Relaxed),
                        _ => failures.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        println!(
            "{nodes} simulated nodes registered in {:.2} s",
            t0.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (c0, w0) = (cpu_ticks(pid), Instant::now());
        acks.store(0, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (c1, wall) = (cpu_ticks(pid), w0.elapsed().as_secs_f64());
        // SAFETY: sysconf only reads a system constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let pct = (c1 - c0) as f64 / hz / wall * 100.0;
        tasks.iter().for_each(|t| t.abort());
        (pct, rss_kib(pid))
    });
    let got = acks.load(Ordering::Relaxed);
    println!(
        "head under {nodes} nodes x 1 heartbeat/s for {secs} s: CPU {cpu_pct:.1}% of one core, RSS {:.1} MB, {:.0} heartbeats/s acked, {} failed",
        rss as f64 / 1024.0,
        got as f64 / secs as f64,
        failures.load(Ordering::Relaxed)
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "heartbeats failed under load"
    );
    drop(head);
}
