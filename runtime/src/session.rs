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
}
