//! Every setting, declared once: its doc, default and `PRISM_*` variable.
//! The CLI's flags and (later) `cluster.yaml` map onto these fields.

use std::path::PathBuf;

/// A `PRISM_*` variable holds a value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {var}={value:?} is not a valid {ty}")]
pub struct ConfigError {
    /// The variable.
    pub var: &'static str,
    /// Its value.
    pub value: String,
    /// The expected type.
    pub ty: &'static str,
}

macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $name:ident : $ty:ty = $default:expr, $env:literal; )*) => {
        /// Runtime settings. Build with [`Config::from_env`] and override fields.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $name: $ty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $name: $default, )* }
            }
        }

        impl Config {
            /// Every setting: `(field, variable, doc)`.
            pub const SETTINGS: &'static [(&'static str, &'static str, &'static str)] =
                &[$( (stringify!($name), $env, concat!($($doc),+)), )*];

            /// Defaults overridden by any `PRISM_*` variables that are set.
            pub fn from_env() -> Result<Config, ConfigError> {
                let mut c = Config::default();
                $(
                    if let Ok(value) = std::env::var($env) {
                        c.$name = value.parse().map_err(|_| ConfigError {
                            var: $env,
                            value: value.clone(),
                            ty: stringify!($ty),
                        })?;
                    }
                )*
                Ok(c)
            }
        }
    };
}

settings! {
    /// With `prism start --head`: seal every raylet's spilled objects with
    /// AES-256-GCM under a key the head keeps and hands to raylets.
    encrypt_at_rest: bool = false, "PRISM_ENCRYPT_AT_REST";
    /// With `prism start --head`: a head stopped by a signal or `prism
    /// stop` is recovered by the next start, as one that died is (for a
    /// head whose pod Kubernetes replaces); `--fresh` still begins anew.
    recover_after_stop: bool = false, "PRISM_RECOVER_AFTER_STOP";
    /// How often a raylet heartbeats to the head, in milliseconds.
    heartbeat_interval_ms: u64 = 500, "PRISM_HEARTBEAT_INTERVAL_MS";
    /// Missed heartbeats after which a node is reported as suspect (slow).
    suspect_after_missed: u32 = 3, "PRISM_SUSPECT_AFTER_MISSED";
    /// Missed heartbeats after which a node is declared dead.
    dead_after_missed: u32 = 10, "PRISM_DEAD_AFTER_MISSED";
    /// Largest frame any peer may send, in bytes; larger ones drop the connection.
    max_frame_bytes: usize = 64 << 20, "PRISM_MAX_FRAME_BYTES";
    /// Where session directories (keys, logs, pid files) are created.
    temp_dir: PathBuf = PathBuf::from("/tmp/prism"), "PRISM_TEMP_DIR";
    /// How long to wait for a connection to the head, in milliseconds.
    connect_timeout_ms: u64 = 10_000, "PRISM_CONNECT_TIMEOUT_MS";
    /// A QUIC connection with no traffic for this long is closed, in milliseconds.
    idle_timeout_ms: u64 = 30_000, "PRISM_IDLE_TIMEOUT_MS";
    /// Allocate and map every page of a raylet's object store at start, so
    /// that no put or pull later waits for the kernel to zero a page at its
    /// first touch. Commits the store's whole size at once and slows start-up
    /// (about a second per few GB); like Ray's `preallocate_plasma_memory`.
    object_store_prefault: bool = false, "PRISM_OBJECT_STORE_PREFAULT";
    /// Start workers with glibc's `glibc.malloc.hugetlb=1` tunable: malloc
    /// advises its own mappings of 2 MiB and more (and its heap's growth)
    /// as transparent huge pages, as numpy does for its arrays, so a fresh
    /// 80 MB buffer is filled with 40 page faults instead of 20,000 (4x on
    /// `multi client put gigabytes`). Needs glibc 2.35 or later and
    /// transparent huge pages in `madvise` mode (in `always` mode the
    /// kernel does it anyway; elsewhere it changes nothing). A job may set
    /// it for its own workers; a `GLIBC_TUNABLES` in the raylet's
    /// environment that already names the tunable is left as it is.
    worker_malloc_hugepages: bool = true, "PRISM_WORKER_MALLOC_HUGEPAGES";
    /// Let callers on an actor's machine call it straight through its
    /// worker's Unix socket, without the raylet in between (one round trip
    /// instead of two). Off: every call goes through the raylet.
    direct_calls: bool = true, "PRISM_DIRECT_CALLS";
    /// How long a process keeps a worker leased for its tasks while it has
    /// none to push, in milliseconds (with direct calls on, tasks of the
    /// default placement and no GPU go straight to leased workers).
    lease_idle_ms: u64 = 10, "PRISM_LEASE_IDLE_MS";
    /// A transfer chunk (8 MiB) that makes no progress for this long abandons
    /// its source, in milliseconds.
    transfer_chunk_timeout_ms: u64 = 10_000, "PRISM_TRANSFER_CHUNK_TIMEOUT_MS";
    /// How long the head waits for a raylet to answer one request (bundle
    /// operations, a state listing, handing over an actor's restart), in
    /// milliseconds.
    raylet_rpc_timeout_ms: u64 = 5_000, "PRISM_RAYLET_RPC_TIMEOUT_MS";
    /// How long a raylet or driver keeps trying an unreachable head (while
    /// it restarts) before a call that needs the head fails, in milliseconds.
    head_wait_ms: u64 = 60_000, "PRISM_HEAD_WAIT_MS";
    /// How long a recovered head waits for the nodes it knew to heartbeat
    /// again before declaring them dead, in milliseconds (at least the dead
    /// timeout).
    recovery_grace_ms: u64 = 10_000, "PRISM_RECOVERY_GRACE_MS";
    /// How long `prism start` waits for its daemon to be ready, in milliseconds.
    start_timeout_ms: u64 = 30_000, "PRISM_START_TIMEOUT_MS";
    /// How long a task or actor that no node can run waits for one to join
    /// before it fails with `Infeasible`, in milliseconds (0: fail at once).
    infeasible_timeout_ms: u64 = 60_000, "PRISM_INFEASIBLE_TIMEOUT_MS";
    /// How long a started worker process has to connect to its raylet before
    /// it is killed and its task fails with `WorkerStartFailed`, in milliseconds.
    worker_start_timeout_ms: u64 = 30_000, "PRISM_WORKER_START_TIMEOUT_MS";
    /// Most local processes (drivers and workers) one raylet's object store
    /// serves at once; more are refused with a clear error.
    max_local_clients: usize = 4096, "PRISM_MAX_LOCAL_CLIENTS";
    /// Finished tasks each raylet remembers for `prism list tasks`, the
    /// dashboard and `prism timeline` (0: none).
    task_history: usize = 20_000, "PRISM_TASK_HISTORY";
    /// A file whose appearance is a preemption notice: the raylet drains
    /// its node (reason `preemption`; deadline: the seconds the file holds,
    /// else 30). Empty: none.
    preemption_file: String = String::new(), "PRISM_PREEMPTION_FILE";
}

impl Config {
    /// The heartbeat interval.
    pub fn heartbeat_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.heartbeat_interval_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_has_a_prism_variable_and_a_doc() {
        for (field, var, doc) in Config::SETTINGS {
            assert!(var.starts_with("PRISM_"), "{field}");
            assert!(!doc.trim().is_empty(), "{field}");
        }
    }
}
