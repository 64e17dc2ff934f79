//! The ssh provider's pool: hosts of `provider.worker_ips` beyond those the
//! groups' `min` nodes take, on which the autoscaler starts more nodes. Which
//! node runs on which pool host is kept in the cluster's directory
//! (`pool.json`), changed under the cluster's lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Node key → index into `provider.worker_ips`.
#[derive(Debug, Clone)]
pub struct Pool {
    file: PathBuf,
}

impl Pool {
    /// The pool recorded in `state_dir`.
    pub fn new(state_dir: &Path) -> Pool {
        Pool {
            file: state_dir.join("pool.json"),
        }
    }

    fn read(&self) -> BTreeMap<String, usize> {
        std::fs::read(&self.file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn write(&self, m: &BTreeMap<String, usize>) {
        if let Ok(b) = serde_json::to_vec(m) {
            let _ = std::fs::write(&self.file, b);
        }
    }

    /// The host index node `key` runs on, if it was given one.
    pub fn host_index(&self, key: &str) -> Option<usize> {
        self.read().get(key).copied()
    }

    /// Gives node `key` the first pool host free: indices `fixed..total`
    /// (those below `fixed` belong to the groups' `min` nodes).
    pub fn assign(&self, key: &str, fixed: usize, total: usize) -> Option<usize> {
        let mut m = self.read();
        if let Some(i) = m.get(key) {
            return Some(*i);
        }
        let free = (fixed..total).find(|i| !m.values().any(|v| v == i))?;
        m.insert(key.to_string(), free);
        self.write(&m);
        Some(free)
    }

    /// Node `key` is gone: its host is free again.
    pub fn release(&self, key: &str) {
        let mut m = self.read();
        if m.remove(key).is_some() {
            self.write(&m);
        }
    }

    /// Every node on a pool host.
    pub fn keys(&self) -> Vec<String> {
        self.read().into_keys().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_hosts_are_given_once_and_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = Pool::new(dir.path());
        // 1 min worker on host 0; hosts 1 and 2 are the pool.
        assert_eq!(p.assign("accel-0", 1, 3), Some(1));
        assert_eq!(
            p.assign("accel-0", 1, 3),
            Some(1),
            "the same node, the same host"
        );
        assert_eq!(p.assign("accel-1", 1, 3), Some(2));
        assert_eq!(p.assign("accel-2", 1, 3), None, "no host left");
        p.release("accel-0");
        assert_eq!(p.assign("accel-2", 1, 3), Some(1));
        assert_eq!(p.keys(), vec!["accel-1".to_string(), "accel-2".to_string()]);
    }
}
