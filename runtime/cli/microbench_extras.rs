//! Microbenchmark extras that need more than the embedded cluster: an
//! object pulled across nodes (a second raylet process joins the embedded
//! head) and the idle memory of a `prism start --head` daemon.

use anyhow::{bail, Context};
use prism::session::{ClusterInfo, DaemonInfo, SessionDir};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The length of a byte vector (run on the far node: the argument is pulled).
#[prism::remote]
fn byte_len(v: Vec<u8>) -> u64 {
    v.len() as u64
}

/// A daemon process and its temp dir, stopped and removed on drop.
struct Daemon {
    child: Option<Child>,
    temp: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let exe = std::env::current_exe().unwrap_or_else(|_| "prism".into());
        let _ = Command::new(exe)
            .arg("stop")
            .env("PRISM_TEMP_DIR", &self.temp)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.temp);
    }
}

fn start(args: &[&str]) -> anyhow::Result<Daemon> {
    let temp =
        std::env::temp_dir().join(format!("prism-mb-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&temp)?;
    let child = Command::new(std::env::current_exe()?)
        .arg("start")
        .args(args)
        .env("PRISM_TEMP_DIR", &temp)
        .env_remove("PRISM_ADDRESS")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut d = Daemon {
        child: Some(child),
        temp,
    };
    // `prism start` returns once its daemon is ready.
    let status = d
        .child
        .take()
        .map(|mut c| c.wait())
        .transpose()?
        .context("no child")?;
    if !status.success() {
        bail!("prism start {args:?} failed ({status})");
    }
    Ok(d)
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

fn read_json<T: serde::de::DeserializeOwned>(dir: &SessionDir, name: &str) -> anyhow::Result<T> {
    dir.read_json(name)?
        .with_context(|| format!("no {name} in {}", dir.path().display()))
}

/// GB/s of one `mb`-MiB object pulled from this (embedded) node by a task
/// on a second raylet process.
pub fn cross_node_gbps(cluster: &prism::Cluster, mb: usize) -> anyhow::Result<f64> {
    let session = cluster
        .session_dir()
        .context("cross-node transfer needs the embedded cluster")?;
    let info: ClusterInfo = read_json(&SessionDir::open(session)?, "cluster.json")?;
    let _far = start(&[
        "--address",
        &info.head_address,
        "--token",
        &info.token,
        "--num-cpus",
        "1",
        "--resources",
        r#"{"microbenchmark_far_node": 1}"#,
    ])?;
    // The driver's raylet learns of the new node from the head's status.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let probe = byte_len::options()
            .resource("microbenchmark_far_node", 1.0)
            .remote(Vec::<u8>::new())?
            .get();
        if probe.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the second raylet never took a task: {probe:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let data = prism::put(&vec![1u8; mb << 20])?;
    let t = Instant::now();
    let n = byte_len::options()
        .resource("microbenchmark_far_node", 1.0)
        .remote(&data)?
        .get()?;
    let secs = t.elapsed().as_secs_f64();
    if n != (mb << 20) as u64 {
        bail!("the far task saw {n} bytes");
    }
    Ok(n as f64 / secs / 1e9)
}

/// Resident memory (MB) of an idle `prism start --head` daemon (head and
/// raylet with its object store in one process) after it settles.
pub fn idle_memory_mb() -> anyhow::Result<f64> {
    let head = start(&["--head", "--port", "0", "--num-cpus", "1"])?;
    std::thread::sleep(Duration::from_secs(2));
    let session = SessionDir::list(&head.temp)
        .pop()
        .context("no session directory")?;
    let daemon: DaemonInfo = read_json(&session, "daemon.json")?;
    let rss = proc_bytes(&format!("/proc/{}/status", daemon.pid), "VmRSS:").context("no VmRSS")?;
    Ok(rss / (1u64 << 20) as f64)
}

/// A `kB` field of a `/proc` file (`/proc/<pid>/status`, `/proc/meminfo`),
/// in bytes.
pub fn proc_bytes(file: &str, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(file).ok()?;
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024.0)
}
