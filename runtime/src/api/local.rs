//! `prism::init()`: in a worker, the worker loop; with `PRISM_ADDRESS`, a
//! connection to that cluster's raylet on this machine; otherwise an
//! embedded single-machine cluster (head and raylet in this process,
//! workers as subprocesses) that stops when the [`Cluster`] is dropped.

use super::connect::connect;
use super::core::{self, Core};
use super::error::{Error, Result};
use crate::config::Config;
use crate::ids::{JobId, NodeId};
use crate::node::{run_head_node, HeadNodeOptions};
use crate::proto::task::{JobSpec, LocalRequest};
use crate::proto::PROTOCOL_VERSION;
use crate::raylet::resources::ResourceOverrides;
use crate::raylet::workers::{file_hash, vars};
use crate::session::{ClusterInfo, ReadyInfo, SessionDir};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Options for [`InitOptions::init`] (the embedded cluster's resources).
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    resources: ResourceOverrides,
    labels: Vec<(String, String)>,
}

impl InitOptions {
    /// Defaults: detect everything.
    pub fn new() -> InitOptions {
        InitOptions::default()
    }

    /// CPUs of the embedded node.
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.resources.num_cpus = Some(n);
        self
    }

    /// GPUs of the embedded node.
    pub fn num_gpus(mut self, n: u32) -> Self {
        self.resources.num_gpus = Some(n);
        self
    }

    /// A custom resource on the embedded node.
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.resources.custom.insert(name.to_string(), amount);
        self
    }

    /// Object store size of the embedded node, in bytes.
    pub fn object_store_memory(mut self, bytes: u64) -> Self {
        self.resources.object_store_memory = Some(bytes);
        self
    }

    /// A label of the embedded node (`region`, `in-south`): where it is,
    /// for label selectors and residency rules.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts or joins the cluster; see [`init`].
    pub fn init(self) -> Result<Cluster> {
        init_with(self)
    }
}

/// The running cluster, as this driver sees it. Dropping it disconnects,
/// and stops the embedded cluster if this driver started one.
#[derive(Debug)]
pub struct Cluster {
    head: Option<super::driver_link::DriverLink>,
    rt: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    node: Option<tokio::task::JoinHandle<()>>,
    session: Option<PathBuf>,
    node_id: NodeId,
    job_id: JobId,
    embedded: bool,
}

impl Cluster {
    /// The node this driver's raylet runs as.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// This driver's job.
    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    /// The embedded cluster's session directory (cluster.json, logs).
    pub fn session_dir(&self) -> Option<&std::path::Path> {
        self.session.as_deref()
    }

    /// Whether this driver started an embedded cluster.
    pub fn is_embedded(&self) -> bool {
        self.embedded
    }

    /// Disconnects and stops the embedded cluster (what `drop` does).
    pub fn shutdown(self) {}
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Ok(c) = core::current() {
            c.flush_metrics();
            // The owner is going: so are the copies of what it still owns.
            c.free_all_owned();
        }
        core::install(None);
        if let (Some(link), Some(rt)) = (self.head.take(), self.rt.as_ref()) {
            link.close(rt);
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let (Some(rt), Some(node)) = (self.rt.as_ref(), self.node.take()) {
            let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), node).await });
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
        if let Some(dir) = self.session.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Starts an embedded cluster, or joins `PRISM_ADDRESS`; in a worker
/// process, runs tasks and never returns.
pub fn init() -> Result<Cluster> {
    init_with(InitOptions::new())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("prism")
        .enable_all()
        .build()
        .map_err(|e| Error::Init(format!("cannot start the runtime: {e}")))
}

fn init_with(opts: InitOptions) -> Result<Cluster> {
    if let Ok(sock) = std::env::var(vars::WORKER_SOCKET) {
        run_worker(PathBuf::from(sock));
    }
    if core::current().is_ok() {
        return Err(Error::Init(
            "prism::init() was already called in this process".into(),
        ));
    }
    let config = Config::from_env().map_err(|e| Error::Init(e.to_string()))?;
    let rt = runtime()?;
    // A job submitted through the head already has its id and table row.
    let submitted: Option<JobId> = std::env::var("PRISM_JOB_ID")
        .ok()
        .and_then(|s| s.parse().ok());
    let job_id = submitted.unwrap_or_else(JobId::random);
    let mut head = None;
    let (socket, stop, node, session, embedded) = match std::env::var("PRISM_ADDRESS") {
        Ok(addr) if !addr.is_empty() => {
            let (socket, token) = find_raylet(&config, &addr)?;
            // A person's own token makes the job theirs.
            let user = std::env::var("PRISM_USER_TOKEN")
                .ok()
                .filter(|t| !t.is_empty());
            let token = user.or(std::env::var("PRISM_TOKEN").ok()).or(token);
            if submitted.is_none() {
                head = super::driver_link::DriverLink::register(&rt, &config, &addr, token, job_id)
                    .map_err(Error::Init)?;
            }
            (socket, None, None, None, false)
        }
        _ => {
            let (socket, stop, node, session) = start_embedded(&rt, config.clone(), opts)?;
            (socket, Some(stop), Some(node), Some(session), true)
        }
    };
    let job = job_spec(job_id, !embedded)?;
    let hello = LocalRequest::HelloDriver {
        version: PROTOCOL_VERSION,
        job,
    };
    let (core, _tasks) = connect(rt.handle(), &socket, hello, job_id)?;
    let node_id = core.node_id;
    {
        // A driver's metrics reach its raylet once a second.
        let core = Arc::downgrade(&core);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                match core.upgrade() {
                    Some(c) => c.flush_metrics(),
                    None => return,
                }
            }
        });
    }
    core::install(Some(core));
    Ok(Cluster {
        head,
        rt: Some(rt),
        stop,
        node,
        session,
        node_id,
        job_id,
        embedded,
    })
}

fn run_worker(socket: PathBuf) -> ! {
    let id: u64 = std::env::var(vars::WORKER_ID)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let job_id: JobId = std::env::var(vars::JOB_ID)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(JobId::random);
    let result: Result<std::convert::Infallible> = runtime().and_then(|rt| {
        let hello = LocalRequest::HelloWorker {
            version: PROTOCOL_VERSION,
            worker_id: id,
        };
        // Bound before the hello: the raylet may lease this worker as soon
        // as it is known, and the owner connects at once.
        let leases = super::direct_serve::bind_lease_socket(&socket, id);
        let (core, tasks) = connect(rt.handle(), &socket, hello, job_id)?;
        core::install(Some(core.clone()));
        if let Some(listener) = leases {
            core.serve_leases(listener);
        }
        // The loop never returns; the runtime lives until the process exits.
        let _keep: &'static tokio::runtime::Runtime = Box::leak(Box::new(rt));
        let core: Arc<Core> = core;
        super::worker::run(core, tasks)
    });
    let Err(e) = result;
    {
        eprintln!("prism worker {id}: {e}");
    }
    std::process::exit(1)
}

/// What the raylets need to start this job's workers: this binary, its
/// arguments, and the `PRISM_*`/`RUST_*` environment.
fn job_spec(job_id: JobId, hash: bool) -> Result<JobSpec> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Init(format!("cannot find this binary: {e}")))?;
    let binary_hash = if hash {
        file_hash(&exe).map_err(|e| Error::Init(format!("cannot hash {}: {e}", exe.display())))?
    } else {
        [0; 32]
    };
    let binary_len = std::fs::metadata(&exe).map(|m| m.len()).unwrap_or(0);
    let skip = [
        "PRISM_ADDRESS",
        "PRISM_TOKEN",
        vars::WORKER_SOCKET,
        vars::WORKER_ID,
    ];
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            (k.starts_with("PRISM_") || k.starts_with("RUST_")) && !skip.contains(&k.as_str())
        })
        .collect();
    let args: Vec<String> = std::env::args().skip(1).collect();
    env.push(("PRISM_WORKER_ARGS".into(), args.join("\u{1f}")));
    Ok(JobSpec {
        job_id,
        binary: exe.display().to_string(),
        binary_hash,
        binary_len,
        cwd: std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
        env,
        driver_node: None,
    })
}

type Embedded = (
    PathBuf,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
    PathBuf,
);

fn start_embedded(
    rt: &tokio::runtime::Runtime,
    config: Config,
    opts: InitOptions,
) -> Result<Embedded> {
    let session = SessionDir::create(&config.temp_dir).map_err(|e| Error::Init(e.to_string()))?;
    let path = session.path().to_path_buf();
    let start_timeout = Duration::from_millis(config.start_timeout_ms);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<PathBuf>();
    let node_opts = HeadNodeOptions {
        config,
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        head_only: false,
        resources: opts.resources,
        labels: opts.labels,
        persistence: crate::head::Persistence::Off,
        node_name: None,
        identity: None,
    };
    let node = rt.spawn(async move {
        let ready = |r: &crate::node::HeadReady| {
            if let Some(raylet) = &r.raylet {
                let _ = session.write_json(
                    "ready.json",
                    &ReadyInfo {
                        kind: "head".into(),
                        head_address: r.head_address.to_string(),
                        node_id: Some(raylet.node_id.to_string()),
                        node_address: Some(raylet.address.to_string()),
                        store_socket: Some(raylet.store_socket.display().to_string()),
                        recovered: None,
                        dashboard: None,
                    },
                );
                let _ = ready_tx.send(raylet.task_socket.clone());
            }
        };
        let stopped = async {
            let _ = stop_rx.await;
        };
        if let Err(e) = run_head_node(node_opts, &session, stopped, ready).await {
            eprintln!("prism: the embedded cluster stopped: {e}");
        }
    });
    let socket = ready_rx
        .recv_timeout(start_timeout)
        .map_err(|_| Error::Init("the embedded cluster did not start in time".into()))?;
    Ok((socket, stop_tx, node, path))
}

/// The task socket of the raylet on this machine that belongs to the
/// cluster at `address` (`PRISM_RAYLET_SOCKET` overrides the search).
fn find_raylet(config: &Config, address: &str) -> Result<(PathBuf, Option<String>)> {
    if let Ok(p) = std::env::var("PRISM_RAYLET_SOCKET") {
        let token = std::path::Path::new(&p)
            .parent()
            .and_then(|d| SessionDir::open(d).ok())
            .and_then(|s| s.read_json::<ClusterInfo>("cluster.json").ok().flatten())
            .map(|i| i.token);
        return Ok((PathBuf::from(p), token));
    }
    let want: Option<SocketAddr> = address.parse().ok();
    for s in SessionDir::list(&config.temp_dir) {
        let Ok(Some(info)) = s.read_json::<ClusterInfo>("cluster.json") else {
            continue;
        };
        let same = match want {
            Some(w) => info.head_address.parse::<SocketAddr>().ok() == Some(w),
            None => info.head_address == address,
        };
        let sock = crate::raylet::local_door::socket_path(s.path());
        // A raylet that was killed leaves its files: only a live one counts.
        if same
            && sock.exists()
            && matches!(s.read_json::<ReadyInfo>("ready.json"), Ok(Some(r)) if r.node_id.is_some())
            && s.is_live()
        {
            return Ok((sock, Some(info.token)));
        }
    }
    Err(Error::Init(format!(
        "no raylet of the cluster at {address} runs on this machine (looked in {}); start one with `prism start --address {address} --token ...`",
        config.temp_dir.display()
    )))
}
