//! Worker processes: the job's own binary started in worker mode. A worker
//! dies with its raylet (`PR_SET_PDEATHSIG`, and it exits when its task
//! socket closes) and with its job (the raylet kills a job's workers when the
//! driver's connection closes, `kill -9` included).

use super::store_door;
use super::store_server::StoreServer;
use crate::proto::task::JobSpec;
use prism_objectstore::ObjectId;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// Environment variables a worker process reads in `prism::init()`.
pub mod vars {
    /// The raylet's task socket; its presence makes `init()` a worker.
    pub const WORKER_SOCKET: &str = "PRISM_WORKER_SOCKET";
    /// The worker's id at its raylet.
    pub const WORKER_ID: &str = "PRISM_WORKER_ID";
    /// The job.
    pub const JOB_ID: &str = "PRISM_JOB_ID";
    /// The raylet's object store socket.
    pub const STORE_SOCKET: &str = "PRISM_STORE_SOCKET";
    /// The node the worker runs on.
    pub const NODE_ID: &str = "PRISM_NODE_ID";
    /// Its raylet's session directory (on the head's node, the head's too).
    pub const SESSION_DIR: &str = "PRISM_SESSION_DIR";
    /// GPU indices given to the worker (what `prism::gpu_ids()` returns).
    pub const GPU_IDS: &str = "PRISM_GPU_IDS";
    /// A submitted job's namespace: where its driver names actors unless told.
    pub const NAMESPACE: &str = "PRISM_NAMESPACE";
    /// `1` on the run of a submitted job that follows its preemption (its
    /// trainers resume from their checkpoints).
    pub const PREEMPTED: &str = "PRISM_PREEMPTED";
    /// The node's labels, one `key=value` a line (a resident actor checks
    /// that its node is inside its rule before it is built).
    pub const NODE_LABELS: &str = "PRISM_NODE_LABELS";
}

/// What every worker of this raylet is started with.
#[derive(Debug, Clone)]
pub struct WorkerEnv {
    /// The task socket.
    pub task_socket: PathBuf,
    /// The object store socket.
    pub store_socket: PathBuf,
    /// Cache of shipped job binaries, by content hash.
    pub binaries: PathBuf,
    /// This raylet's QUIC address (where peers send actor calls).
    pub node_address: String,
    /// How long a started worker has to say hello before it is killed.
    pub hello_timeout: Duration,
    /// This node's labels, as `key=value` lines.
    pub labels: String,
    /// Whether workers' malloc advises huge pages (`worker_malloc_hugepages`).
    pub malloc_hugepages: bool,
}

/// glibc's tunable that makes malloc advise its own mappings as
/// transparent huge pages.
const HUGETLB: &str = "glibc.malloc.hugetlb";

/// `GLIBC_TUNABLES` for a worker, from the one it would inherit: the
/// huge-page tunable added unless it is set already (tunables are
/// `name=value` pairs joined by `:`).
pub fn tunables_with_hugepages(inherited: Option<&str>) -> String {
    match inherited
        .map(|t| t.trim_matches(':'))
        .filter(|t| !t.is_empty())
    {
        None => format!("{HUGETLB}=1"),
        Some(t) if t.split(':').any(|kv| kv.split('=').next() == Some(HUGETLB)) => t.into(),
        Some(t) => format!("{t}:{HUGETLB}=1"),
    }
}

/// SHA-256 of bytes.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut h = [0u8; 32];
    h.copy_from_slice(d.as_ref());
    h
}

/// SHA-256 of a file, cached by (path, length, mtime).
pub fn file_hash(path: &Path) -> std::io::Result<[u8; 32]> {
    type Key = (PathBuf, u64, SystemTime);
    static CACHE: OnceLock<Mutex<HashMap<Key, [u8; 32]>>> = OnceLock::new();
    let meta = std::fs::metadata(path)?;
    let key = (path.to_path_buf(), meta.len(), meta.modified()?);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(h) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(*h);
    }
    let h = sha256(&std::fs::read(path)?);
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, h);
    Ok(h)
}

/// Lower-case hex of bytes (how hashes are shown and named).
pub fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// The object id a job binary is shipped under.
pub fn binary_object(job: &JobSpec) -> ObjectId {
    let mut id = [0u8; 16];
    id.copy_from_slice(&job.binary_hash[..16]);
    ObjectId(id)
}

/// Puts the job's binary in the local store so peers can pull it by hash.
pub async fn publish_binary(store: &Arc<StoreServer>, job: &JobSpec) -> Result<(), String> {
    let id = binary_object(job);
    if store.contains(id) {
        return Ok(());
    }
    let store = store.clone();
    let path = job.binary.clone();
    tokio::task::spawn_blocking(move || {
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read job binary {path}: {e}"))?;
        store_door::put_local(&store, id, &bytes)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The binary to start for `job` on this node: the driver's own path when
/// the job started here (and the file is still there), else the same path if
/// its content hash matches, else a cached copy, else the bytes fetched by
/// hash from the object store (pulled from the driver's raylet).
pub async fn resolve_binary(
    env: &WorkerEnv,
    store: &Arc<StoreServer>,
    job: &JobSpec,
    local: bool,
) -> Result<PathBuf, String> {
    let path = PathBuf::from(&job.binary);
    let want = job.binary_hash;
    if (local && path.exists()) || want == [0; 32] {
        return Ok(path);
    }
    let same = !local && {
        let p = path.clone();
        tokio::task::spawn_blocking(move || file_hash(&p).ok() == Some(want))
            .await
            .unwrap_or(false)
    };
    if same {
        return Ok(path);
    }
    let cached = env.binaries.join(hex(&want));
    if cached.exists() {
        return Ok(cached);
    }
    let store = store.clone();
    let id = binary_object(job);
    let dir = env.binaries.clone();
    tokio::task::spawn_blocking(move || {
        let held = store_door::fetch(&store, id, Duration::from_secs(120))
            .map_err(|e| format!("cannot fetch job binary {id}: {e}"))?;
        let d = ring::digest::digest(&ring::digest::SHA256, held.bytes());
        if d.as_ref() != want {
            return Err("the shipped job binary does not match its hash".to_string());
        }
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        // A unique temporary name: several workers may fetch it at once.
        let tmp = dir.join(format!("{}.tmp{}", hex(&want), rand::random::<u64>()));
        std::fs::write(&tmp, held.bytes()).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        if let Err(e) = std::fs::rename(&tmp, &cached) {
            let _ = std::fs::remove_file(&tmp);
            if !cached.exists() {
                return Err(e.to_string());
            }
        }
        Ok(cached)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Starts a worker process on node `node` (this raylet's id now: it
/// changes when the raylet registers again after being declared dead).
pub fn spawn(
    env: &WorkerEnv,
    node: crate::ids::NodeId,
    binary: &Path,
    job: &JobSpec,
    worker: u64,
    gpus: &[u32],
) -> Result<tokio::process::Child, String> {
    let gpu_list = gpus
        .iter()
        .map(|g| g.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = tokio::process::Command::new(binary);
    // Workers get the driver's arguments, so a binary that parses its
    // command line before `prism::init()` parses the same line.
    if let Some((_, args)) = job.env.iter().find(|(k, _)| k == "PRISM_WORKER_ARGS") {
        cmd.args(args.split('\u{1f}').filter(|a| !a.is_empty()));
    }
    cmd.envs(job.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env(vars::WORKER_SOCKET, &env.task_socket)
        .env(vars::WORKER_ID, worker.to_string())
        .env(vars::JOB_ID, job.job_id.to_string())
        .env(vars::STORE_SOCKET, &env.store_socket)
        .env(vars::NODE_ID, node.to_string())
        .env(vars::NODE_LABELS, &env.labels)
        .env(
            vars::SESSION_DIR,
            env.task_socket.parent().unwrap_or(std::path::Path::new("")),
        )
        .env(vars::GPU_IDS, &gpu_list)
        .env("CUDA_VISIBLE_DEVICES", &gpu_list)
        .env_remove("PRISM_ADDRESS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if Path::new(&job.cwd).is_dir() {
        cmd.current_dir(&job.cwd);
    }
    // The job's own setting wins over the raylet's; GLIBC_TUNABLES is the
    // raylet's (a job's environment carries PRISM_* and RUST_* only).
    let hugepages = job
        .env
        .iter()
        .rfind(|(k, _)| k == "PRISM_WORKER_MALLOC_HUGEPAGES")
        .and_then(|(_, v)| v.parse::<bool>().ok())
        .unwrap_or(env.malloc_hugepages);
    if hugepages {
        let inherited = std::env::var("GLIBC_TUNABLES").ok();
        cmd.env(
            "GLIBC_TUNABLES",
            tunables_with_hugepages(inherited.as_deref()),
        );
    }
    // SAFETY: the closure runs in the forked child before exec and only
    // calls prctl and getppid, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("the raylet died during spawn"));
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))
}

/// SIGKILLs a worker.
pub fn kill(pid: u32) {
    // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// `exit code N` or `signal 9 (SIGKILL)`.
pub fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exit code {c}"),
            (None, Some(sig)) => format!("signal {sig} ({})", signal_name(sig)),
            _ => "unknown exit".into(),
        },
        Err(e) => format!("cannot wait for it: {e}"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGINT => "SIGINT",
        libc::SIGBUS => "SIGBUS",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::tunables_with_hugepages as with;

    #[test]
    fn the_huge_page_tunable_is_added_once_and_never_overrides() {
        assert_eq!(with(None), "glibc.malloc.hugetlb=1");
        assert_eq!(with(Some("")), "glibc.malloc.hugetlb=1");
        assert_eq!(
            with(Some("glibc.malloc.arena_max=2:")),
            "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
        );
        assert_eq!(
            with(Some("glibc.malloc.arena_max=2")),
            "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
        );
        // The user's own choice stands, even "off".
        let own = "glibc.malloc.hugetlb=0:glibc.malloc.arena_max=2";
        assert_eq!(with(Some(own)), own);
    }
}
