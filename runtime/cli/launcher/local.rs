//! The local provider: every node a `prism start` daemon on this machine,
//! each in its own directory (`<temp>/clusters/<name>/nodes/<key>/`), so
//! the launcher finds, checks and stops exactly its own nodes. What it
//! started is in `state.json` beside them; a launcher that crashed leaves
//! the directories, which `down` still finds.

use super::plan::NodeSpec;
use prism::session::{ClusterInfo, SessionDir};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the launcher started.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// The file it was started from.
    pub config: String,
    /// Each node's spec, by key.
    pub nodes: BTreeMap<String, NodeSpec>,
}

/// A cluster's launcher directory.
#[derive(Debug, Clone)]
pub struct ClusterDir {
    root: PathBuf,
    name: String,
}

impl ClusterDir {
    /// The directory of cluster `name` under `temp`.
    pub fn new(temp: &Path, name: &str) -> ClusterDir {
        ClusterDir {
            root: temp.join("clusters").join(name),
            name: name.to_string(),
        }
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where node `key` lives.
    pub fn node_dir(&self, key: &str) -> PathBuf {
        self.root.join("nodes").join(key)
    }

    fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// A file in the cluster's directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Holds the cluster's lock (launcher and autoscaler change its nodes
    /// and state one at a time) until the guard is dropped.
    pub fn lock(&self) -> anyhow::Result<std::fs::File> {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(&self.root)?;
        let f = std::fs::File::create(self.root.join("lock"))?;
        // SAFETY: flock(2) on a descriptor this function owns; the lock is
        // released when the returned file is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            anyhow::bail!(
                "cannot lock {}: {}",
                self.root.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(f)
    }

    /// The recorded state (empty if none).
    pub fn state(&self) -> anyhow::Result<State> {
        match std::fs::read_to_string(self.state_file()) {
            Ok(s) => Ok(serde_json::from_str(&s)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Records `state`.
    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.root)?;
        let tmp = self.root.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
        std::fs::rename(tmp, self.state_file())?;
        Ok(())
    }

    /// Forgets the state.
    pub fn forget(&self) {
        let _ = std::fs::remove_file(self.state_file());
    }

    /// Every node directory there is, recorded or not.
    pub fn node_keys(&self) -> Vec<String> {
        std::fs::read_dir(self.root.join("nodes"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether node `key`'s daemon runs.
    pub fn live(&self, key: &str) -> bool {
        SessionDir::list(&self.node_dir(key))
            .iter()
            .any(|s| s.live_daemon().is_some())
    }

    /// The head's address and token, from its session.
    pub fn head_info(&self) -> anyhow::Result<ClusterInfo> {
        for s in SessionDir::list(&self.node_dir("head")) {
            if s.live_daemon().is_none() {
                continue;
            }
            if let Some(info) = s.read_json::<ClusterInfo>("cluster.json")? {
                return Ok(info);
            }
        }
        anyhow::bail!(
            "the cluster's head is not running (no live session in {}); start it with `prism up`",
            self.node_dir("head").display()
        )
    }

    /// The dashboard's URL, if the head serves one.
    pub fn dashboard(&self) -> Option<String> {
        SessionDir::list(&self.node_dir("head"))
            .into_iter()
            .filter(|s| s.live_daemon().is_some())
            .find_map(|s| {
                s.read_json::<prism::session::ReadyInfo>("ready.json")
                    .ok()
                    .flatten()?
                    .dashboard
            })
    }

    /// Stops node `key`'s daemon.
    pub fn stop(&self, key: &str) -> usize {
        crate::stop::stop_in(&self.node_dir(key), false, Duration::from_secs(10)).stopped
    }
}

/// A node being started.
pub struct Starting {
    key: String,
    child: std::process::Child,
    began: Instant,
}

/// Starts node `key` (`prism start`, which returns once it is ready); the
/// token goes in the environment, never on the command line.
pub fn start(
    dir: &ClusterDir,
    key: &str,
    spec: &NodeSpec,
    head: Option<&ClusterInfo>,
) -> anyhow::Result<Starting> {
    let node_dir = dir.node_dir(key);
    std::fs::create_dir_all(&node_dir)?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("start")
        .args(&spec.args)
        .arg("--temp-dir")
        .arg(&node_dir)
        .arg("--node-name")
        .arg(format!("{}/{key}", dir.name()))
        .envs(&spec.env)
        .env_remove("PRISM_ADDRESS")
        .env_remove("PRISM_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(h) = head {
        cmd.args(["--address", &h.head_address])
            .env("PRISM_TOKEN", &h.token);
    }
    Ok(Starting {
        key: key.to_string(),
        child: cmd.spawn()?,
        began: Instant::now(),
    })
}

impl Starting {
    /// A node being started by `child`.
    pub fn new(key: &str, child: std::process::Child) -> Starting {
        Starting {
            key: key.to_string(),
            child,
            began: Instant::now(),
        }
    }

    /// Waits for the node to be ready; `Err` carries `prism start`'s own
    /// message.
    pub fn wait(self) -> (String, Duration, Result<(), String>) {
        let out = self.child.wait_with_output();
        let took = self.began.elapsed();
        let result = match out {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Err(e.to_string()),
        };
        (self.key, took, result)
    }
}

/// Runs `setup_commands` here, in order; the first that fails stops `up`.
pub fn setup(commands: &[String], env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    for c in commands {
        let status = Command::new("sh").arg("-c").arg(c).envs(env).status()?;
        if !status.success() {
            anyhow::bail!("setup command {c:?} failed ({status}); nothing was started");
        }
    }
    Ok(())
}

/// Copies `file_mounts` (local provider: source to destination on this machine).
pub fn mount(mounts: &BTreeMap<String, String>) -> anyhow::Result<()> {
    for (from, to) in mounts {
        if Path::new(from) == Path::new(to) {
            continue;
        }
        if let Some(parent) = Path::new(to).parent() {
            std::fs::create_dir_all(parent)?;
        }
        let status = Command::new("cp").args(["-a", from, to]).status()?;
        if !status.success() {
            anyhow::bail!("file_mounts: cannot copy {from} to {to} ({status})");
        }
    }
    Ok(())
}
