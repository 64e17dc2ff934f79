//! The object store through its real path: a client process talking to a
//! raylet process over the Unix socket and shared segment, and a 1 GB pull
//! between two raylets — over their TLS bulk channel, and over QUIC (the
//! source started with `PRISM_BULK_CHANNEL=off`) — compared with a plain
//! TCP copy on loopback, with the CPU both raylets spent per GB.
//!
//! Run: `cargo bench --bench object_ipc`. Without `--bench` (as in the test
//! command) it runs tiny sizes once, so it cannot rot.

use prism::object_store::StoreClient;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MB: usize = 1 << 20;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(temp: &Path, name: &str, args: &[&str]) -> (Daemon, serde_json::Value) {
    start_with(temp, name, args, &[])
}

fn start_with(
    temp: &Path,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Daemon, serde_json::Value) {
    let session = temp.join(format!("session_{name}"));
    std::fs::create_dir_all(&session).unwrap();
    let log = std::fs::File::create(session.join("out.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args(["start", "--block", "--temp-dir"])
        .arg(temp)
        .arg("--session-dir")
        .arg(&session)
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
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
    let ready = serde_json::from_str(&std::fs::read_to_string(session.join("ready.json")).unwrap())
        .unwrap();
    (d, ready)
}

fn cluster(temp: &Path, name: &str, head: &serde_json::Value) -> Vec<String> {
    let c: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(temp.join(format!("session_{name}/cluster.json"))).unwrap(),
    )
    .unwrap();
    let _ = head;
    vec![
        c["head_address"].as_str().unwrap().into(),
        c["token"].as_str().unwrap().into(),
    ]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p) as usize]
}

fn calls_per_sec(n: usize, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn tcp_copy_gbps(size: usize) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sender = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let buf = vec![7u8; 8 * MB];
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len());
            s.write_all(&buf[..n]).unwrap();
            left -= n;
        }
    });
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    // Pre-faulted destination: measure the socket, not first-touch page faults.
    let mut dst = vec![1u8; size];
    let t = Instant::now();
    c.read_exact(&mut dst).unwrap();
    let secs = t.elapsed().as_secs_f64();
    sender.join().unwrap();
    size as f64 / secs / 1e9
}

fn main() {
    let test_mode = !std::env::args().any(|a| a == "--bench");
    let (small_n, big, store) = if test_mode {
        (200, 8 * MB, "64M")
    } else {
        (20_000, 1024 * MB, "1200M")
    };
    // The loopback TCP baseline first, on a quiet machine.
    let tcp = tcp_copy_gbps(big);
    let temp = tempfile::tempdir().unwrap();
    let (head_daemon, head) = start(
        temp.path(),
        "head",
        &[
            "--head",
            "--port",
            "0",
            "--num-cpus",
            "1",
            "--object-store-memory",
            store,
        ],
    );
    let sock = PathBuf::from(head["store_socket"].as_str().unwrap());
    let client = StoreClient::connect(&sock).unwrap();

    let put_rate = calls_per_sec(small_n, || {
        let id = client.put(b"12345678").unwrap();
        client.unpin(id).unwrap();
    });
    let small = client.put(b"12345678").unwrap();
    let get_rate = calls_per_sec(small_n, || {
        drop(client.get(small, Duration::from_secs(1)).unwrap())
    });
    let info_rate = calls_per_sec(small_n, || {
        client.info(small).unwrap();
    });
    println!("small put (8 B, put+unpin) calls/s: {put_rate:.0}");
    println!("info round trips/s: {info_rate:.0}");
    println!("small get (8 B, get+release) calls/s: {get_rate:.0}");

    for size in [1 << 10, MB, big] {
        let id = client.put(&vec![1u8; size]).unwrap();
        let mut lat: Vec<f64> = (0..if test_mode { 20 } else { 2000 })
            .map(|_| {
                let t = Instant::now();
                let v = client.get(id, Duration::from_secs(1)).unwrap();
                let us = t.elapsed().as_secs_f64() * 1e6;
                drop(v);
                us
            })
            .collect();
        println!(
            "get latency {} bytes: p50 {:.1} us, p99 {:.1} us",
            size,
            percentile(&mut lat, 0.5),
            percentile(&mut lat, 0.99)
        );
        client.unpin(id).unwrap();
    }

    let data = vec![3u8; big];
    for size in [(100 * MB).min(big), big] {
        let mut best = 0f64;
        for _ in 0..3 {
            let t = Instant::now();
            let id = client.put(&data[..size]).unwrap();
            best = best.max(size as f64 / t.elapsed().as_secs_f64() / 1e9);
            client.unpin(id).unwrap();
        }
        println!(
            "put {} MB through the raylet: {best:.2} GB/s (best of 3)",
            size / MB
        );
    }

    drop(client);
    drop(head_daemon);
    // A second raylet pulls a big object from a first one: over the bulk
    // channel, then over QUIC (both paths run in test mode too).
    // The third run pre-faults the destination's store at start
    // (PRISM_OBJECT_STORE_PREFAULT): its "fresh" memory is already zeroed.
    let runs = [
        ("TLS bulk channel", "on", "false"),
        ("QUIC", "off", "false"),
        ("TLS bulk channel, pre-faulted store", "on", "true"),
    ];
    for (k, (tag, bulk, prefault)) in runs.into_iter().enumerate() {
        let run = Pull {
            name: format!("{k}-{bulk}"),
            bulk,
            prefault,
            store,
        };
        let (cold, warm, ready) = run.pull(temp.path(), &data);
        println!("pull destination raylet ({tag}) ready in {ready:.2} s");
        for ((gbps, cpu), into) in [(cold, "fresh"), (warm, "reused")] {
            println!(
                "pull {} MB between two raylets ({tag}, loopback, into {into} shared memory): {gbps:.2} GB/s, {cpu:.2} CPU-seconds per GB (both raylets); plain TCP copy: {tcp:.2} GB/s ({:.0}%)",
                big / MB,
                gbps / tcp * 100.0
            );
        }
    }
}

/// CPU seconds (user + system) process `pid` has used so far (`/proc`
/// counts in USER_HZ, 100 a second on Linux).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// One pull run: a cluster whose source raylet's bulk channel is `bulk`
/// (on or off) and whose destination pre-faults its store or not.
struct Pull<'a> {
    name: String,
    bulk: &'a str,
    prefault: &'a str,
    store: &'a str,
}

impl Pull<'_> {
    /// Pulls `data` twice between two raylets of a fresh cluster (a head
    /// without a raylet, so it takes no CPU from them): GB/s and both
    /// raylets' CPU-seconds per GB, into fresh and into reused shared
    /// memory, and how long the destination took to start.
    fn pull(&self, temp: &Path, data: &[u8]) -> ((f64, f64), (f64, f64), f64) {
        let head_name = format!("head-{}", self.name);
        let (_head, head) = start(temp, &head_name, &["--head", "--port", "0", "--head-only"]);
        let ct = cluster(temp, &head_name, &head);
        let raylet = |name: &str, env: &[(&str, &str)]| {
            let args = ["--address", &ct[0], "--token", &ct[1], "--num-cpus", "1"];
            let store = ["--object-store-memory", self.store];
            let all: Vec<&str> = args.iter().chain(&store).copied().collect();
            start_with(temp, &format!("{name}-{}", self.name), &all, env)
        };
        let (src, ready) = raylet("src", &[("PRISM_BULK_CHANNEL", self.bulk)]);
        let started = Instant::now();
        let (dst, b) = raylet("dst", &[("PRISM_OBJECT_STORE_PREFAULT", self.prefault)]);
        let dst_ready = started.elapsed().as_secs_f64();
        let ca = StoreClient::connect(Path::new(ready["store_socket"].as_str().unwrap())).unwrap();
        let cb = StoreClient::connect(Path::new(b["store_socket"].as_str().unwrap())).unwrap();
        let cpu = || cpu_secs(src.0.id()) + cpu_secs(dst.0.id());
        let timed = || {
            let id = ca.put(data).unwrap();
            let (before, t) = (cpu(), Instant::now());
            let v = cb.get(id, Duration::from_secs(120)).unwrap();
            let gbps = data.len() as f64 / t.elapsed().as_secs_f64() / 1e9;
            let spent = cpu() - before;
            assert_eq!(v.len(), data.len());
            drop(v);
            // Freed on both nodes before the next pull (bounded wait).
            ca.unpin(id).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while cb.info(id).unwrap().is_some() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            (gbps, spent / (data.len() as f64 / 1e9))
        };
        // The first pull writes into shared memory the destination never
        // touched (the kernel zeroes every page at first touch, unless the
        // store was pre-faulted); the second lands where the first was, as
        // pulls do in a running cluster.
        let cold = timed();
        (cold, timed(), dst_ready)
    }
}
