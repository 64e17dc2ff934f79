//! The session directory: one per daemon started on this machine, holding
//! its keys, its join information, its pid file and its logs.
//!
//! ```text
//! <temp_dir>/session_<time>_<pid>_<rand>/
//!   ca.pem ca.key          the cluster CA (head only; the key is 0600)
//!   node.pem node.key      this node's certificate from the CA (0600 key)
//!   cluster.json           head address and join token (0600)
//!   daemon.json            pid, process start time and kind: what `prism stop` signals
//!   ready.json             written once the daemon serves
//!   logs/prism.log         the daemon's log
//! ```

use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// A session directory could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// File system failure, with the path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A JSON file is damaged.
    #[error("{path}: not valid session JSON: {why}")]
    Json {
        /// The path.
        path: PathBuf,
        /// Parser message.
        why: String,
    },
}

/// How to reach the cluster: written into every session directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterInfo {
    /// `HOST:PORT` of the head.
    pub head_address: String,
    /// The join token.
    pub token: String,
}

/// The running daemon, for `prism stop`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DaemonInfo {
    /// Process id.
    pub pid: u32,
    /// Process start time in clock ticks since boot (from /proc), so a reused
    /// pid is never signalled.
    pub start_time: u64,
    /// `head` or `raylet`.
    pub kind: String,
}

/// What a ready daemon serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReadyInfo {
    /// `head` or `raylet`.
    pub kind: String,
    /// The head's address.
    pub head_address: String,
    /// The local raylet's node id, if this daemon runs one.
    pub node_id: Option<String>,
    /// The local raylet's QUIC address.
    pub node_address: Option<String>,
    /// The local object store's Unix socket.
    #[serde(default)]
    pub store_socket: Option<String>,
    /// `c-… (N nodes, M actors, J jobs)` when this head recovered a cluster.
    #[serde(default)]
    pub recovered: Option<String>,
    /// The dashboard's URL, when this head serves one.
    #[serde(default)]
    pub dashboard: Option<String>,
}

/// One session directory.
#[derive(Debug, Clone)]
pub struct SessionDir {
    path: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SessionError + '_ {
    move |source| SessionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl SessionDir {
    /// Creates a fresh session directory under `root`.
    pub fn create(root: &Path) -> Result<SessionDir, SessionError> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let name = format!(
            "session_{stamp}_{}_{:04x}",
            std::process::id(),
            rand::random::<u16>()
        );
        let path = root.join(name);
        std::fs::create_dir_all(path.join("logs")).map_err(io_err(&path))?;
        Ok(SessionDir { path })
    }

    /// An existing directory.
    pub fn open(path: impl Into<PathBuf>) -> Result<SessionDir, SessionError> {
        let path = path.into();
        std::fs::create_dir_all(path.join("logs")).map_err(io_err(&path))?;
        Ok(SessionDir { path })
    }

    /// Every session directory under `root`, newest first.
    pub fn list(root: &Path) -> Vec<SessionDir> {
        let Ok(entries) = std::fs::read_dir(root) else {
            return Vec::new();
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("session_"))
            })
            .collect();
        dirs.sort();
        dirs.reverse();
        dirs.into_iter().map(|path| SessionDir { path }).collect()
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The daemon's log file.
    pub fn log_file(&self) -> PathBuf {
        self.path.join("logs").join("prism.log")
    }

    /// Writes a file readable only by its owner.
    pub fn write_secret(&self, name: &str, contents: &str) -> Result<(), SessionError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.file(name);
        let tmp = self.file(&format!(".{name}.tmp"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(contents.as_bytes()).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    /// Reads a text file, `None` when absent.
    pub fn read(&self, name: &str) -> Result<Option<String>, SessionError> {
        let path = self.file(name);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Writes a JSON file (owner-only), atomically.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), SessionError> {
        let text = serde_json::to_string_pretty(value).map_err(|e| SessionError::Json {
            path: self.file(name),
            why: e.to_string(),
        })?;
        self.write_secret(name, &text)
    }

    /// Reads a JSON file, `None` when absent.
    pub fn read_json<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<Option<T>, SessionError> {
        match self.read(name)? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| SessionError::Json {
                    path: self.file(name),
                    why: e.to_string(),
                }),
        }
    }

    /// Removes a file if present.
    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.file(name));
    }
}

/// Files a daemon serves from while it runs; a dead daemon's copies are
/// removed by [`SessionDir::clear_stale`] so nobody connects to them.
/// The folder of a head's session that holds run artifacts, named by
/// their SHA-256 (prism-ml writes them, `prism runs artifact` reads them).
pub const ARTIFACTS_DIR: &str = "artifacts";

const LIVE_FILES: [&str; 4] = ["ready.json", "daemon.json", "tasks.sock", "store.sock"];

impl SessionDir {
    /// The daemon recorded in `daemon.json`, if that process still runs
    /// (same pid and start time, not a zombie).
    pub fn live_daemon(&self) -> Option<DaemonInfo> {
        let d = self.read_json::<DaemonInfo>("daemon.json").ok()??;
        process_alive(d.pid, d.start_time).then_some(d)
    }

    /// Whether this session's node still serves: its daemon runs, or (an
    /// embedded cluster, which writes no `daemon.json`) its task socket
    /// accepts a connection. A session whose process was `kill -9`ed keeps
    /// its files but is not live.
    pub fn is_live(&self) -> bool {
        if self.file("daemon.json").exists() {
            return self.live_daemon().is_some();
        }
        let sock = self.file("tasks.sock");
        sock.exists() && std::os::unix::net::UnixStream::connect(&sock).is_ok()
    }

    /// Removes what a dead daemon left behind (`ready.json`, `daemon.json`
    /// and its sockets); logs and keys stay for the post-mortem. Returns
    /// whether anything was removed.
    pub fn clear_stale(&self) -> bool {
        let mut removed = false;
        for f in LIVE_FILES {
            removed |= std::fs::remove_file(self.file(f)).is_ok();
        }
        removed
    }
}

/// True while process `pid`, started at `start_time` (clock ticks since
/// boot), runs: a reused pid or a zombie is not it.
pub fn process_alive(pid: u32, start_time: u64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    process_start_time(pid) == Some(start_time) && !matches!(state, Some("Z") | Some("X") | None)
}

/// This process's start time in clock ticks since boot, from `/proc/<pid>/stat`.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_owner_only_and_json_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let s = SessionDir::create(root.path()).unwrap();
        s.write_secret("ca.key", "k").unwrap();
        let mode = std::fs::metadata(s.file("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let info = ClusterInfo {
            head_address: "127.0.0.1:1".into(),
            token: "t".into(),
        };
        s.write_json("cluster.json", &info).unwrap();
        assert_eq!(
            s.read_json::<ClusterInfo>("cluster.json").unwrap(),
            Some(info)
        );
        assert_eq!(SessionDir::list(root.path()).len(), 1);
        assert!(process_start_time(std::process::id()).is_some());
    }

    #[test]
    fn a_session_is_live_only_while_its_daemon_or_socket_answers() {
        let root = tempfile::tempdir().unwrap();
        let s = SessionDir::create(root.path()).unwrap();
        // Nothing recorded: not live.
        assert!(!s.is_live());
        // This process as the daemon: live.
        let me = std::process::id();
        let start = process_start_time(me).unwrap();
        let d = |pid, start_time| DaemonInfo {
            pid,
            start_time,
            kind: "raylet".into(),
        };
        s.write_json("daemon.json", &d(me, start)).unwrap();
        assert!(s.is_live());
        // Same pid, another start time (a reused pid): not live.
        s.write_json("daemon.json", &d(me, start + 1)).unwrap();
        assert!(!s.is_live());
        // An embedded session: live while its socket accepts.
        s.remove("daemon.json");
        let listener = std::os::unix::net::UnixListener::bind(s.file("tasks.sock")).unwrap();
        assert!(s.is_live());
        drop(listener);
        assert!(!s.is_live(), "a socket file nobody listens on is dead");
        s.write_json("ready.json", &"x").unwrap();
        assert!(s.clear_stale());
        assert!(!s.file("tasks.sock").exists() && !s.file("ready.json").exists());
        assert!(s.file("logs").exists(), "logs stay");
    }
}
