//! The job queue on the wire: namespaces' quotas and weights, and what
//! waits and why (`prism queue`). The decisions are `head::job_queue`'s.

use super::common::Resources;
use rkyv::{Archive, Deserialize, Serialize};

/// A namespace's quota, job limit and fair-share weight.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize,
)]
pub struct NamespaceQuota {
    /// The namespace.
    pub namespace: String,
    /// At most this much of each named resource its running jobs declare.
    pub quota: Resources,
    /// At most this many running jobs (0: no limit).
    pub max_jobs: u32,
    /// Its weight in fair sharing (at least 1).
    pub weight: u32,
}

/// A waiting job.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueuedRow {
    /// The job.
    pub job_id: crate::ids::JobId,
    /// Its namespace.
    pub namespace: String,
    /// Who submitted it.
    pub owner: String,
    /// Its priority (higher first).
    pub priority: i32,
    /// Whether it may be preempted.
    pub spot: bool,
    /// What it declared.
    pub demand: Resources,
    /// Its place in the queue, from 1.
    pub position: u32,
    /// Why it waits.
    pub reason: String,
}

/// A namespace's use of its quota.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct NamespaceUsage {
    /// Its quota, limit and weight (defaults when none was set).
    pub policy: NamespaceQuota,
    /// What its running jobs declared.
    pub used: Resources,
    /// How many run.
    pub running: u32,
    /// How many wait.
    pub waiting: u32,
}

/// A request about the queue.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum QueueRequest {
    /// What waits and why, and each namespace's use.
    Show,
    /// Set a namespace's quota, job limit and weight.
    SetQuota(NamespaceQuota),
    /// Seal (or stop sealing) the files its jobs keep at rest
    /// (`prism::at_rest`: checkpoints, parameter-server shards) with the
    /// namespace's own key.
    SetAtRest {
        /// The namespace.
        namespace: String,
        /// Seal from now on.
        seal: bool,
    },
}

/// The queue, as `prism queue` shows it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueueView {
    /// Waiting jobs, in the order they would start.
    pub waiting: Vec<QueuedRow>,
    /// Namespaces with a policy or jobs.
    pub namespaces: Vec<NamespaceUsage>,
    /// Namespaces whose files are sealed at rest with their own key.
    pub sealed: Vec<String>,
}
