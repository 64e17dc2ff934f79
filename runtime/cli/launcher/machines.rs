//! Where a cluster's nodes run: this machine ([`super::local`]) or
//! machines over SSH ([`super::ssh`]); the launcher's commands go through
//! here and do not care which.

use super::config::ClusterConfig;
use super::local::{self, ClusterDir, Starting};
use super::plan::NodeSpec;
use super::ssh::Ssh;
use prism::session::ClusterInfo;

/// A provider, ready to act.
pub enum Machines {
    /// Daemons on this machine.
    Local,
    /// Daemons on machines over SSH.
    Ssh(Box<Ssh>),
}

impl Machines {
    /// The provider of `c`.
    pub fn of(c: &ClusterConfig, dir: &ClusterDir) -> Machines {
        // ssh keeps its known_hosts there.
        let _ = std::fs::create_dir_all(dir.file(""));
        match Ssh::of(c, &dir.file("")) {
            Some(s) => Machines::Ssh(Box::new(s)),
            None => Machines::Local,
        }
    }

    /// Whether node `key` runs.
    pub fn live(&self, dir: &ClusterDir, key: &str) -> bool {
        match self {
            Machines::Local => dir.live(key),
            Machines::Ssh(s) => s.live(key),
        }
    }

    /// Starts node `key`.
    pub fn start(
        &self,
        dir: &ClusterDir,
        key: &str,
        spec: &NodeSpec,
        head: Option<&ClusterInfo>,
    ) -> anyhow::Result<Starting> {
        match self {
            Machines::Local => local::start(dir, key, spec, head),
            Machines::Ssh(s) => s.start(key, spec, head),
        }
    }

    /// Stops node `key`; how many daemons stopped.
    pub fn stop(&self, dir: &ClusterDir, key: &str) -> usize {
        match self {
            Machines::Local => dir.stop(key),
            Machines::Ssh(s) => s.stop(key),
        }
    }

    /// The head's address and token.
    pub fn head_info(&self, dir: &ClusterDir) -> anyhow::Result<ClusterInfo> {
        match self {
            Machines::Local => dir.head_info(),
            Machines::Ssh(s) => s.head_info(),
        }
    }

    /// The dashboard's URL.
    pub fn dashboard(&self, dir: &ClusterDir) -> Option<String> {
        match self {
            Machines::Local => dir.dashboard(),
            Machines::Ssh(s) => s.dashboard(),
        }
    }

    /// Setup commands and file mounts, before any node starts.
    pub fn prepare(&self, c: &ClusterConfig) -> anyhow::Result<()> {
        match self {
            Machines::Local => {
                local::setup(&c.setup_commands, &c.env)?;
                local::mount(&c.file_mounts)
            }
            Machines::Ssh(s) => s.prepare(c),
        }
    }

    /// Every node key that may run.
    pub fn node_keys(&self, dir: &ClusterDir) -> Vec<String> {
        match self {
            Machines::Local => dir.node_keys(),
            Machines::Ssh(s) => s.node_keys(),
        }
    }
}
