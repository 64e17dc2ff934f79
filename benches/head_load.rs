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
use prism::transport::backoff::Backoff;
use prism::transport::quic::QuicEndpoint;
use prism::transport::tls::{ClientTrust, NodeIdentity};
use prism::Config;
use prism_scheduler::{Quantity, ResourceSet, CPU};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Daemon {
    child: Option<Child>,
    temp: std::path::PathBuf,
    name: String,
    heartbeat_ms: u64,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again in the same session directory (recovering its state).
    fn restart(&mut self, args: &[&str], port: u16) {
        let mut again = start(&self.temp, &self.name, args, self.heartbeat_ms, port);
        self.child = again.child.take();
    }
}

fn start(temp: &Path, name: &str, args: &[&str], heartbeat_ms: u64, port: u16) -> Daemon {
    let session = temp.join(format!("session_{name}"));
    std::fs::create_dir_all(&session).unwrap();
    let _ = std::fs::remove_file(session.join("ready.json"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(session.join("out.log"))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args([
            "start",
            "--head",
            "--block",
            "--port",
            &port.to_string(),
            "--temp-dir",
        ])
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
    let d = Daemon {
        child: Some(child),
        temp: temp.to_path_buf(),
        name: name.to_string(),
        heartbeat_ms,
    };
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

/// How long every simulated node has to heartbeat again after a restart.
const RECOVERY_LIMIT: Duration = Duration::from_secs(180);

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
    let idle = start(temp.path(), "idle", &["--num-cpus", "2"], 500, 0);
    std::thread::sleep(Duration::from_millis(if test_mode { 200 } else { 3000 }));
    let idle_kib = rss_kib(idle.pid());
    drop(idle);
    println!("idle head+raylet RSS: {:.1} MB", idle_kib as f64 / 1024.0);

    // 2. A head alone under simulated nodes heartbeating every second.
    let mut head = start(temp.path(), "load", &["--head-only"], 1000, 0);
    let pid = head.pid();
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
    // Dials of the restarted head, and those that failed or timed out.
    let dials = Arc::new(AtomicU64::new(0));
    let failed_dials = Arc::new(AtomicU64::new(0));
    let told_again = Arc::new(AtomicU64::new(0));
    // Nodes heard from since the last reset (for the recovery phase).
    let back = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let result = rt.block_on(async {
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
        let connect = {
            let (ep, trust, config) = (ep.clone(), trust.clone(), config.clone());
            move || {
                let (ep, trust, config) = (ep.clone(), trust.clone(), config.clone());
                async move {
                    HeadClient::connect(&*ep, addr, &trust, None, PeerRole::Raylet, &config).await
                }
            }
        };
        for i in 0..nodes {
            let c = connect().await.unwrap();
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
            let (dials, failed_dials) = (dials.clone(), failed_dials.clone());
            let told_again = told_again.clone();
            let (back, connect) = (back.clone(), connect.clone());
            let offset = Duration::from_millis(1000 * i / nodes.max(1));
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let beat = Duration::from_secs(1);
                let mut tick = tokio::time::interval(beat);
                let mut c = Some(c);
                // As a raylet does: a lost head is dialled again with
                // jittered, growing waits, each try given 4 beats.
                let mut backoff = Backoff::randomized(beat, beat * 4);
                let mut dial_at = Instant::now();
                loop {
                    tick.tick().await;
                    let Some(client) = c.as_ref() else {
                        if Instant::now() >= dial_at {
                            dials.fetch_add(1, Ordering::Relaxed);
                            c = tokio::time::timeout(beat * 4, connect())
                                .await
                                .ok()
                                .and_then(Result::ok);
                            if c.is_none() {
                                failed_dials.fetch_add(1, Ordering::Relaxed);
                                dial_at = Instant::now() + backoff.failed();
                            }
                        }
                        continue;
                    };
                    let heartbeat = HeadRequest::Heartbeat {
                        node_id,
                        available: Resources::from(&total),
                        leased: Resources::default(),
                        demand: Vec::new(),
                    };
                    // Patience as a raylet's: 4 beats.
                    let answer = tokio::time::timeout(beat * 4, client.request(&heartbeat)).await;
                    match answer {
                        Ok(Ok(HeadResponse::HeartbeatAck)) => {
                            backoff.succeeded();
                            acks.fetch_add(1, Ordering::Relaxed);
                            back.lock().unwrap().insert(i);
                        }
                        Ok(Ok(HeadResponse::ReRegister { reason })) => {
                            // A node the head lost (declared dead): a
                            // raylet would register again under a new id.
                            if told_again.fetch_add(1, Ordering::Relaxed) < 3 {
                                println!("  sim-{i} told to register again: {reason}");
                            }
                            tokio::time::sleep(beat * 4).await;
                        }
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            client.close();
                            c = None;
                            dial_at = Instant::now() + backoff.failed();
                        }
                    }
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
        let acked = acks.load(Ordering::Relaxed);
        // SAFETY: sysconf only reads a system constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let pct = (c1 - c0) as f64 / hz / wall * 100.0;
        let rss = rss_kib(pid);
        let failed = failures.load(Ordering::Relaxed);
        // What a raylet fetches after every accepted heartbeat: the whole
        // cluster status (its size grows with the nodes, so all raylets
        // together cost the head O(nodes²) a second).
        let fetches = 20u32;
        let (c2, w2) = (cpu_ticks(pid), Instant::now());
        let mut status_bytes = 0;
        for _ in 0..fetches {
            let s = joiner.status().await.unwrap();
            status_bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&s).unwrap().len();
        }
        let fetch_wall = w2.elapsed() / fetches;
        // Less the heartbeats' own share of the head's CPU meanwhile.
        let fetch_cpu = ((cpu_ticks(pid) - c2) as f64 / hz
            - w2.elapsed().as_secs_f64() * pct / 100.0)
            .max(0.0)
            / fetches as f64;
        println!(
            "cluster status at {nodes} nodes: {:.0} KB, {:.1} ms a fetch, ~{:.1} ms of head CPU each (a raylet fetches it after every heartbeat)",
            status_bytes as f64 / 1024.0,
            fetch_wall.as_secs_f64() * 1e3,
            fetch_cpu * 1e3
        );
        // What a raylet fetches instead (NT-6): the nodes changed since its
        // last fetch. Here no node's free resources change (an idle
        // cluster); where all change every beat it is the whole status.
        let first = joiner.status_since(0, 0).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (mut cursor, mut delta_bytes, mut delta_rows) = ((first.epoch, first.version), 0, 0);
        let w3 = Instant::now();
        for _ in 0..fetches {
            let d = joiner.status_since(cursor.0, cursor.1).await.unwrap();
            cursor = (d.epoch, d.version);
            delta_rows = d.nodes.len();
            delta_bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&d).unwrap().len();
        }
        println!(
            "status changes since a fetch at {nodes} nodes: {delta_rows} rows, {:.1} KB, {:.2} ms a fetch (all nodes idle)",
            delta_bytes as f64 / 1024.0,
            (w3.elapsed() / fetches).as_secs_f64() * 1e3
        );
        // 3. Recovery: kill -9 the head, start it again in its session on
        // the same port, and time until every node heartbeats again.
        head.kill9();
        back.lock().unwrap().clear();
        let t0 = Instant::now();
        tokio::task::block_in_place(|| head.restart(&["--head-only"], addr.port()));
        let ready = t0.elapsed();
        let mut said = 0;
        let all_back = loop {
            let n = back.lock().unwrap().len() as u64;
            if n >= nodes {
                break Some(t0.elapsed());
            }
            let secs = t0.elapsed().as_secs();
            if secs >= said + 5 {
                said = secs;
                println!("  {secs} s after the restart began: {n} of {nodes} nodes back");
            }
            if t0.elapsed() > RECOVERY_LIMIT {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        tasks.iter().for_each(|t| t.abort());
        (pct, rss, failed, acked, ready, all_back)
    });
    let (cpu_pct, rss, failed, got, ready, all_back) = result;
    println!(
        "head under {nodes} nodes x 1 heartbeat/s for {secs} s: CPU {cpu_pct:.1}% of one core, RSS {:.1} MB, {:.0} heartbeats/s acked, {failed} failed",
        rss as f64 / 1024.0,
        got as f64 / secs as f64,
    );
    assert_eq!(failed, 0, "heartbeats failed under load");
    println!(
        "redials of the restarted head: {} ({} failed or timed out)",
        dials.load(Ordering::Relaxed),
        failed_dials.load(Ordering::Relaxed)
    );
    match all_back {
        Some(t) => println!(
            "head kill -9 and restart: ready in {:.2} s, all {nodes} nodes heartbeating again under their ids {:.2} s after the restart began",
            ready.as_secs_f64(),
            t.as_secs_f64()
        ),
        None => panic!(
            "not every node came back within {RECOVERY_LIMIT:?} after the head restarted"
        ),
    }
    drop(head);
}
