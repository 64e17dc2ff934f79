//! `prism start`: runs a node in the foreground (`--block`) or as a daemon
//! that this command starts, waits for, and leaves running.

mod daemon;

use crate::TempDirArg;
use anyhow::{anyhow, bail, Context};
use prism::head::identity::ClusterIdentity;
use prism::head::Persistence;
use prism::node::{default_node_name, run_head_node, run_worker_node, HeadNodeOptions};
use prism::raylet::resources::ResourceOverrides;
use prism::raylet::RayletOptions;
use prism::session::{process_start_time, ClusterInfo, DaemonInfo, ReadyInfo, SessionDir};
use prism::token::JoinToken;
use prism::Config;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct StartArgs {
    /// Start the head node (the head and a raylet for this machine).
    #[arg(long, conflicts_with = "address")]
    head: bool,
    /// With --head: run the head alone, without a raylet beside it.
    #[arg(long, requires = "head")]
    head_only: bool,
    /// With --head: start a new cluster even if a head on this machine died
    /// without `prism stop` (by default that cluster is recovered, on the
    /// same address, from its session's head.db).
    #[arg(long, requires = "head")]
    fresh: bool,
    /// With --head: keep the head's state in memory only (a head that dies
    /// takes its cluster with it, as Ray's GCS does without Redis).
    #[arg(long, requires = "head", conflicts_with = "fresh")]
    in_memory: bool,
    /// With --head: seal every raylet's spilled objects with AES-256-GCM
    /// under a key the head keeps (in head.db) and hands each raylet.
    #[arg(long, requires = "head")]
    encrypt_at_rest: bool,
    /// With --head: a stop (a signal, `prism stop`) leaves the cluster to
    /// be recovered by the next start, as a head that died does (a head
    /// pod that Kubernetes replaces).
    #[arg(long, requires = "head")]
    recover_after_stop: bool,
    /// With --head: a new cluster takes its CA and join token from this
    /// directory (`ca.pem`, `ca.key`, `token`, as `prism k8s secret` makes
    /// them, e.g. a mounted Kubernetes Secret) instead of drawing new ones,
    /// so that nodes can be given the token before the head starts.
    #[arg(long, env = "PRISM_IDENTITY_DIR", requires = "head")]
    identity: Option<PathBuf>,
    /// The head to join, HOST:PORT.
    #[arg(long, env = "PRISM_ADDRESS", required_unless_present = "head")]
    address: Option<String>,
    /// The join token printed by `prism start --head`.
    #[arg(long, env = "PRISM_TOKEN")]
    token: Option<String>,
    /// UDP port for this node (0 picks a free one). Default: 6379 for the head, 0 for others.
    #[arg(long)]
    port: Option<u16>,
    /// The IP address this node binds and advertises.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip_address: IpAddr,
    /// CPUs to offer (default: all this process may use).
    #[arg(long)]
    num_cpus: Option<f64>,
    /// GPUs to offer (default: detected; more than detected simulates GPUs).
    #[arg(long)]
    num_gpus: Option<u32>,
    /// Memory to offer, in bytes or with a K/M/G/T suffix (default: physical memory).
    #[arg(long, value_parser = parse_bytes)]
    memory: Option<u64>,
    /// Object store size, in bytes or with a K/M/G/T suffix (default: 30% of memory).
    #[arg(long, value_parser = parse_bytes)]
    object_store_memory: Option<u64>,
    /// Custom resources as JSON, e.g. '{"accel": 4}'.
    #[arg(long)]
    resources: Option<String>,
    /// Labels, e.g. zone=a,disk=ssd.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// This node's name in `prism status` (default: host/session).
    #[arg(long)]
    node_name: Option<String>,
    /// A file whose appearance is a preemption notice: this node drains
    /// itself (reason `preemption`; deadline: the seconds the file holds,
    /// else 30).
    #[arg(long, env = "PRISM_PREEMPTION_FILE")]
    preemption_file: Option<std::path::PathBuf>,
    /// Stay in the foreground until interrupted.
    #[arg(long)]
    block: bool,
    #[command(flatten)]
    temp: TempDirArg,
    #[command(flatten)]
    dashboard: crate::dashboard::DashboardArgs,
    /// The session directory to use (set by `prism start` for its daemon).
    #[arg(long, hide = true)]
    session_dir: Option<PathBuf>,
}

pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some(c @ ('K' | 'k' | 'M' | 'm' | 'G' | 'g' | 'T' | 't')) => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                _ => 40,
            };
            (&s[..s.len() - 1], 1u64 << shift)
        }
        _ => (s, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 4G or 1073741824"))?;
    if !(n.is_finite() && n >= 0.0) {
        return Err(format!("{s:?} is not a positive size"));
    }
    Ok((n * mult as f64) as u64)
}

impl StartArgs {
    fn overrides(&self) -> anyhow::Result<ResourceOverrides> {
        let custom: BTreeMap<String, f64> = match &self.resources {
            Some(json) => serde_json::from_str(json)
                .with_context(|| format!("--resources {json:?} must be a JSON object of numbers, e.g. '{{\"accel\": 4}}'"))?,
            None => BTreeMap::new(),
        };
        Ok(ResourceOverrides {
            num_cpus: self.num_cpus,
            num_gpus: self.num_gpus,
            memory: self.memory,
            custom,
            object_store_memory: self.object_store_memory,
        })
    }

    fn labels(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.labels
            .iter()
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    Ok((k.trim().to_string(), v.trim().to_string()))
                }
                _ => bail!("--labels {l:?}: expected key=value"),
            })
            .collect()
    }

    fn identity(&self) -> anyhow::Result<Option<ClusterIdentity>> {
        Ok(self
            .identity
            .as_deref()
            .map(ClusterIdentity::from_dir)
            .transpose()?)
    }

    fn kind(&self) -> &'static str {
        if self.head {
            "head"
        } else {
            "raylet"
        }
    }
}

pub fn run(args: StartArgs) -> anyhow::Result<()> {
    // Check the arguments here, so a typo fails before any daemon starts.
    args.overrides()?;
    args.labels()?;
    if args.head {
        args.identity()?;
    }
    if !args.head {
        let token = args.token.as_deref().ok_or_else(|| {
            anyhow!("joining a cluster needs --token (printed by `prism start --head`)")
        })?;
        token.parse::<JoinToken>()?;
    }
    warn_shared_machine(&args);
    if args.block {
        foreground(args)
    } else {
        daemon::daemonize(args)
    }
}

/// Several nodes on one machine each offer all of its memory unless told
/// otherwise: say so, with the flags that split it.
fn warn_shared_machine(args: &StartArgs) {
    // (The daemon `prism start` re-runs has a session dir: it was warned.)
    if args.session_dir.is_some() || (args.memory.is_some() && args.object_store_memory.is_some()) {
        return;
    }
    let others = SessionDir::list(&args.temp.temp_dir)
        .into_iter()
        .filter(|s| s.live_daemon().is_some())
        .count();
    if others > 0 {
        eprintln!(
            "warning: {others} other Prism node(s) already run on this machine, and each offers all of its memory \
             (and 30% of it for its object store) unless told otherwise; pass --memory and --object-store-memory \
             to split it, e.g. --memory 8G --object-store-memory 2G"
        );
    }
}

fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("cannot resolve head address {addr:?}"))?
        .next()
        .ok_or_else(|| anyhow!("head address {addr:?} resolves to nothing"))
}

/// Runs the node in this process until SIGINT or SIGTERM.
fn foreground(args: StartArgs) -> anyhow::Result<()> {
    let mut config = Config::from_env()?;
    config.encrypt_at_rest |= args.encrypt_at_rest;
    config.recover_after_stop |= args.recover_after_stop;
    let keep_daemon_file = args.head && config.recover_after_stop;
    if let Some(p) = &args.preemption_file {
        config.preemption_file = std::path::absolute(p)?.display().to_string();
    }
    let session = match &args.session_dir {
        Some(p) => SessionDir::open(p)?,
        // A head in the foreground (a container's) recovers the cluster of
        // a head that died here, as the daemon does.
        None => session_for(&args)?.0,
    };
    let pid = std::process::id();
    session.write_json(
        "daemon.json",
        &DaemonInfo {
            pid,
            start_time: process_start_time(pid).unwrap_or(0),
            kind: args.kind().into(),
        },
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(serve(args.clone(), config, &session));
    if !keep_daemon_file {
        // (Kept, it marks the session as a head to recover.)
        session.remove("daemon.json");
    }
    session.remove("ready.json");
    result
}

/// Installs the SIGINT/SIGTERM handlers now (not at first poll: a signal
/// that arrives between "ready" and the node's first await must still stop
/// the node cleanly) and returns a future that resolves on either.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = wait(term) => {}
            _ = wait(int) => {}
        }
        tracing::info!("stop signal received");
    }
}

async fn serve(args: StartArgs, config: Config, session: &SessionDir) -> anyhow::Result<()> {
    let overrides = args.overrides()?;
    let labels = args.labels()?;
    let write_ready = |ready: ReadyInfo| {
        if let Err(e) = session.write_json("ready.json", &ready) {
            tracing::error!("cannot write ready.json: {e}");
        }
    };
    if args.head {
        let opts = HeadNodeOptions {
            config,
            bind: SocketAddr::new(args.node_ip_address, head_port(&args, session)),
            head_only: args.head_only,
            resources: overrides,
            labels,
            persistence: if args.in_memory {
                Persistence::Off
            } else if args.fresh {
                Persistence::Fresh
            } else {
                Persistence::Recover
            },
            node_name: args.node_name.clone(),
            identity: args.identity()?,
        };
        args.dashboard.check()?;
        run_head_node(opts, session, stop_signal(), |r| {
            let dashboard =
                match crate::dashboard::start(&args.dashboard, r.head_address, &r.token, session) {
                    Ok(url) => url,
                    Err(e) => {
                        tracing::error!("the dashboard did not start: {e:#}");
                        None
                    }
                };
            write_ready(ReadyInfo {
                dashboard: dashboard.clone(),
                kind: "head".into(),
                head_address: r.head_address.to_string(),
                node_id: r.raylet.as_ref().map(|n| n.node_id.to_string()),
                node_address: r.raylet.as_ref().map(|n| n.address.to_string()),
                store_socket: r
                    .raylet
                    .as_ref()
                    .map(|n| n.store_socket.display().to_string()),
                recovered: r.recovered.clone(),
            });
            if args.session_dir.is_none() {
                if let Some(what) = &r.recovered {
                    println!(
                        "Recovered cluster {what} from {}.",
                        session.file("head.db").display()
                    );
                }
                print_head_banner(
                    &r.head_address.to_string(),
                    &r.token.to_string(),
                    dashboard.as_deref(),
                    session,
                );
            }
        })
        .await?;
    } else {
        let address = args.address.clone().unwrap_or_default();
        let head = resolve(&address)?;
        let token: JoinToken = args.token.as_deref().unwrap_or_default().parse()?;
        let opts = RayletOptions {
            config,
            head,
            token,
            bind: SocketAddr::new(args.node_ip_address, args.port.unwrap_or(0)),
            node_name: args
                .node_name
                .clone()
                .unwrap_or_else(|| default_node_name(session)),
            resources: overrides,
            labels,
            is_head: false,
        };
        run_worker_node(opts, session, stop_signal(), |r| {
            write_ready(ReadyInfo {
                kind: "raylet".into(),
                head_address: head.to_string(),
                node_id: Some(r.node_id.to_string()),
                node_address: Some(r.address.to_string()),
                store_socket: Some(r.store_socket.display().to_string()),
                recovered: None,
                dashboard: None,
            });
            if args.session_dir.is_none() {
                println!(
                    "Prism raylet {} joined the cluster at {head}; address {}.",
                    r.node_id.short(),
                    r.address
                );
            }
        })
        .await?;
    }
    Ok(())
}

fn print_head_banner(head: &str, token: &str, dashboard: Option<&str>, session: &SessionDir) {
    println!("Prism head started at {head}.");
    println!("Session directory: {}", session.path().display());
    println!("Logs: {}", session.log_file().display());
    if let Some(url) = dashboard {
        println!("{}", crate::dashboard::banner(url, session));
    }
    println!();
    println!("To add a node to this cluster, run on that machine:");
    println!("  prism start --address {head} --token {token}");
    println!();
    println!("To see the cluster:  prism status");
    println!("To stop this machine's daemons:  prism stop");
}

/// A head session on this machine whose head died without `prism stop`
/// (it left its `head.db`, `cluster.json` and `daemon.json`, and nothing
/// runs there now): the cluster to recover.
fn recoverable_head(temp: &std::path::Path) -> Option<SessionDir> {
    SessionDir::list(temp).into_iter().find(|s| {
        let head =
            matches!(s.read_json::<DaemonInfo>("daemon.json"), Ok(Some(d)) if d.kind == "head");
        head && !s.is_live()
            && s.file("head.db").exists()
            && matches!(s.read_json::<ClusterInfo>("cluster.json"), Ok(Some(_)))
    })
}

/// The session a `prism start` runs in: the dead head's it recovers (its
/// stale files cleared) and `true`, unless told `--fresh` or
/// `--in-memory`; else a new one and `false`.
fn session_for(args: &StartArgs) -> anyhow::Result<(SessionDir, bool)> {
    let dead = (args.head && !args.fresh && !args.in_memory)
        .then(|| recoverable_head(&args.temp.temp_dir))
        .flatten();
    Ok(match dead {
        Some(s) => {
            // Its files (ready.json, sockets) describe the dead daemon.
            s.clear_stale();
            (s, true)
        }
        None => (SessionDir::create(&args.temp.temp_dir)?, false),
    })
}

/// The head's port: the one asked for; else (none, or 0) the one of the
/// cluster it recovers, so that its raylets find it again; else 6379 (0
/// when 0 was asked).
fn head_port(args: &StartArgs, session: &SessionDir) -> u16 {
    let recovering = !args.fresh && !args.in_memory && session.file("head.db").exists();
    let old = recovering
        .then(|| {
            session
                .read_json::<ClusterInfo>("cluster.json")
                .ok()
                .flatten()
        })
        .flatten()
        .and_then(|i| i.head_address.rsplit(':').next()?.parse::<u16>().ok());
    match (args.port, old) {
        (Some(p), _) if p != 0 => p,
        (_, Some(old)) => old,
        (asked, None) => asked.unwrap_or(6379),
    }
}
