//! The cluster launcher: `prism up | down | exec | attach cluster.yaml`.
//! [`config`] reads the file, [`plan`] decides (pure), `machines` carries
//! it out on this machine (`local`) or over SSH (`ssh`); [`mod@autoscale`]
//! decides (pure) what `prism autoscale` (`scaler_loop`) starts and stops.

pub mod autoscale;
pub mod config;
pub mod kubernetes;
mod local;
mod machines;
pub mod plan;
mod scaler_loop;
mod slurm;
mod ssh;
mod ssh_pool;

pub use scaler_loop::{run as autoscale, AutoscaleArgs};

use anyhow::{bail, Context};
use config::{ClusterConfig, Provider};
use local::ClusterDir;
use machines::Machines;
use plan::Step;
use prism::session::ClusterInfo;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// The cluster's file.
    config: PathBuf,
    /// Do not ask before starting or stopping nodes.
    #[arg(short = 'y', long)]
    yes: bool,
    /// Leave running nodes whose settings changed as they are.
    #[arg(long)]
    no_restart: bool,
    #[command(flatten)]
    temp: crate::TempDirArg,
}

#[derive(clap::Args, Debug)]
pub struct DownArgs {
    /// The cluster's file.
    config: PathBuf,
    /// Do not ask.
    #[arg(short = 'y', long)]
    yes: bool,
    #[command(flatten)]
    temp: crate::TempDirArg,
}

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// The cluster's file.
    config: PathBuf,
    /// The command and its arguments, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
    #[command(flatten)]
    temp: crate::TempDirArg,
}

fn cluster(path: &Path, temp: &crate::TempDirArg) -> anyhow::Result<(ClusterConfig, ClusterDir)> {
    let c = ClusterConfig::load(path)?;
    let dir = ClusterDir::new(&temp.temp_dir, &c.cluster_name);
    Ok((c, dir))
}

fn confirm(what: &str, yes: bool) -> anyhow::Result<bool> {
    if yes || !std::io::stdin().is_terminal() {
        return Ok(true);
    }
    print!("{what} Proceed? [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// The head of the cluster `path` describes, for `--cluster` on other commands.
pub fn head_info(path: &Path, temp: &crate::TempDirArg) -> anyhow::Result<ClusterInfo> {
    let (c, dir) = cluster(path, temp)?;
    Machines::of(&c, &dir).head_info(&dir)
}

/// `prism up`.
pub fn up(args: UpArgs) -> anyhow::Result<()> {
    let (c, dir) = cluster(&args.config, &args.temp)?;
    if matches!(c.provider, Provider::Slurm { .. }) {
        let _lock = dir.lock()?;
        slurm::up(&c, &dir, plan::desired(&c).len())?;
        let m = Machines::Local;
        return print_connect(&args.config, &m, &dir);
    }
    let m = Machines::of(&c, &dir);
    let lock = dir.lock()?;
    let mut state = dir.state()?;
    let running: std::collections::BTreeMap<_, _> = state
        .nodes
        .iter()
        .filter(|(k, _)| m.live(&dir, k))
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    let steps = plan::plan(&c, &running, args.no_restart);
    let changes = steps
        .iter()
        .filter(|s| !matches!(s, Step::Keep(_) | Step::Differs(_)))
        .count();
    if changes == 0 {
        for s in &steps {
            if let Step::Differs(k) = s {
                println!("  {k:<12} settings changed; left running (--no-restart)");
            }
        }
        println!(
            "Cluster {} is already up: {} node(s) as {} asks; nothing to do.",
            c.cluster_name,
            steps.len(),
            args.config.display()
        );
        drop(lock);
        autoscaler(&c, &args, &dir)?;
        return print_connect(&args.config, &m, &dir);
    }
    if !confirm(
        &format!(
            "{changes} node(s) of cluster {} will be started, restarted or stopped.",
            c.cluster_name
        ),
        args.yes,
    )? {
        bail!("cancelled; nothing was changed");
    }
    m.prepare(&c)?;
    let began = std::time::Instant::now();
    state.config = args.config.display().to_string();
    // Stops first (workers before the head), then the head, then workers.
    for s in &steps {
        match s {
            Step::Stop(k) | Step::Restart(k, _) if k != "head" => {
                m.stop(&dir, k);
                state.nodes.remove(k);
                if matches!(s, Step::Stop(_)) {
                    println!("  {k:<12} stopped");
                }
            }
            _ => {}
        }
    }
    let head_step = steps.iter().find_map(|s| match s {
        Step::Start(k, spec) | Step::Restart(k, spec) if k == "head" => Some(spec.clone()),
        _ => None,
    });
    if let Some(spec) = head_step {
        m.stop(&dir, "head");
        let (key, took, result) = m.start(&dir, "head", &spec, None)?.wait();
        match result {
            Ok(()) => println!("  {key:<12} started in {:.2} s", took.as_secs_f64()),
            Err(e) => bail!("the head did not start: {e}"),
        }
        state.nodes.insert("head".into(), spec);
        dir.save(&state)?;
    }
    let head = m.head_info(&dir)?;
    let mut starting = Vec::new();
    for s in &steps {
        match s {
            Step::Start(k, spec) | Step::Restart(k, spec) if k != "head" => {
                starting.push((spec.clone(), m.start(&dir, k, spec, Some(&head))?));
            }
            Step::Keep(k) => println!("  {k:<12} already running"),
            Step::Differs(k) => println!("  {k:<12} settings changed; left running (--no-restart)"),
            _ => {}
        }
    }
    let mut failed = Vec::new();
    for (spec, s) in starting {
        let (key, took, result) = s.wait();
        match result {
            Ok(()) => {
                println!("  {key:<12} started in {:.2} s", took.as_secs_f64());
                state.nodes.insert(key, spec);
            }
            Err(e) => failed.push(format!("{key}: {e}")),
        }
    }
    dir.save(&state)?;
    drop(lock);
    if !failed.is_empty() {
        bail!(
            "{} node(s) did not start:\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
    autoscaler(&c, &args, &dir)?;
    println!(
        "Cluster {} is up ({} node(s), {:.2} s).",
        c.cluster_name,
        state.nodes.len(),
        began.elapsed().as_secs_f64()
    );
    let target = format!(
        "cluster {} from {}: {changes} node(s) started, restarted or stopped",
        c.cluster_name,
        args.config.display()
    );
    crate::access::note(&m.head_info(&dir)?, "cluster.up", target);
    print_connect(&args.config, &m, &dir)
}

/// Groups that may grow get an autoscaler.
fn autoscaler(c: &ClusterConfig, args: &UpArgs, dir: &ClusterDir) -> anyhow::Result<()> {
    if !c.worker_groups.iter().any(|g| g.max > g.min) {
        return Ok(());
    }
    match Machines::of(c, dir) {
        Machines::Local if matches!(c.provider, Provider::Local) => {
            scaler_loop::ensure_running(&args.config, dir, &args.temp.temp_dir)?
        }
        Machines::Ssh(s) if s.has_pool() => {
            scaler_loop::ensure_running(&args.config, dir, &args.temp.temp_dir)?
        }
        Machines::Ssh(_) => println!(
            "  (no idle hosts in provider.worker_ips beyond the groups' min: groups stay at min)"
        ),
        Machines::Local => {
            println!("  (the autoscaler does not run with this provider: groups stay at min)")
        }
    }
    Ok(())
}

fn print_connect(config: &Path, m: &Machines, dir: &ClusterDir) -> anyhow::Result<()> {
    let head = m.head_info(dir)?;
    println!("Head: {}", head.head_address);
    if let Some(url) = m.dashboard(dir) {
        println!("Dashboard: {url}");
    }
    let c = config.display();
    println!("See it:      prism status --cluster {c}");
    println!("Run a job:   prism submit --cluster {c} -- ./my_job");
    println!("A command:   prism exec {c} -- prism list nodes");
    println!("Stop it:     prism down {c}");
    Ok(())
}

/// `prism down`.
pub fn down(args: DownArgs) -> anyhow::Result<()> {
    let (c, dir) = cluster(&args.config, &args.temp)?;
    if matches!(c.provider, Provider::Slurm { .. }) {
        let _lock = dir.lock()?;
        return slurm::down(&c, &dir);
    }
    let m = Machines::of(&c, &dir);
    // The autoscaler first, so it starts nothing while nodes go.
    scaler_loop::stop(&dir);
    let _lock = dir.lock()?;
    // Every node directory, recorded or not (a launcher that crashed after
    // starting a node had not recorded it yet).
    let mut keys = m.node_keys(&dir);
    keys.extend(dir.state()?.nodes.into_keys());
    keys.sort();
    keys.dedup();
    keys.sort_by_key(|k| k == "head");
    let live: Vec<&String> = keys.iter().filter(|k| m.live(&dir, k)).collect();
    if live.is_empty() {
        dir.forget();
        println!(
            "Cluster {} is not running; nothing to stop.",
            c.cluster_name
        );
        return Ok(());
    }
    if !confirm(
        &format!(
            "{} node(s) of cluster {} will be stopped.",
            live.len(),
            c.cluster_name
        ),
        args.yes,
    )? {
        bail!("cancelled; nothing was stopped");
    }
    // Into the trail before the head goes (the trail outlives it, AU-3).
    if let Ok(head) = m.head_info(&dir) {
        let target = format!("cluster {} from {}", c.cluster_name, args.config.display());
        crate::access::note(&head, "cluster.down", target);
    }
    let mut stopped = 0;
    for k in live {
        stopped += m.stop(&dir, k);
        println!("  {k:<12} stopped");
    }
    dir.forget();
    println!(
        "Cluster {} is down ({stopped} daemon(s) stopped).",
        c.cluster_name
    );
    Ok(())
}

fn head_env(m: &Machines, dir: &ClusterDir) -> anyhow::Result<Vec<(String, String)>> {
    let head = m.head_info(dir)?;
    Ok(vec![
        ("PRISM_ADDRESS".into(), head.head_address),
        ("PRISM_TOKEN".into(), head.token),
        // Drivers find the head node's raylet through its session.
        (
            "PRISM_TEMP_DIR".into(),
            dir.node_dir("head").display().to_string(),
        ),
    ])
}

/// `prism exec`: runs a command on the head node (here, or over ssh) with
/// the cluster's address in its environment; exits with its status.
pub fn exec(args: ExecArgs) -> anyhow::Result<i32> {
    let (c, dir) = cluster(&args.config, &args.temp)?;
    let m = Machines::of(&c, &dir);
    if args.command.is_empty() {
        bail!(
            "prism exec {} -- COMMAND [ARGS...]: no command given",
            args.config.display()
        );
    }
    let status = match &m {
        Machines::Local => std::process::Command::new(&args.command[0])
            .args(&args.command[1..])
            .envs(head_env(&m, &dir)?)
            .status()
            .with_context(|| format!("cannot run {}", args.command[0]))?,
        Machines::Ssh(s) => s.exec_on_head(&args.command, false)?,
    };
    Ok(status.code().unwrap_or(1))
}

/// `prism attach`: a shell on the head node, connected to the cluster.
pub fn attach(args: DownArgs) -> anyhow::Result<i32> {
    let (c, dir) = cluster(&args.config, &args.temp)?;
    let m = Machines::of(&c, &dir);
    println!(
        "A shell connected to cluster {} (exit to leave).",
        c.cluster_name
    );
    let status = match &m {
        Machines::Local => {
            let shell = std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into());
            std::process::Command::new(&shell)
                .envs(head_env(&m, &dir)?)
                .status()
                .with_context(|| format!("cannot run {shell}"))?
        }
        Machines::Ssh(s) => s.exec_on_head(&[], true)?,
    };
    Ok(status.code().unwrap_or(1))
}

/// `prism session-info --temp-dir D`: `{"live", "cluster", "dashboard"}` of
/// the live daemon there, as JSON on stdout.
pub fn session_info(temp: &Path, shell: bool) -> anyhow::Result<()> {
    let live = prism::session::SessionDir::list(temp)
        .into_iter()
        .find(|s| s.live_daemon().is_some());
    let cluster = live
        .as_ref()
        .and_then(|s| s.read_json::<ClusterInfo>("cluster.json").ok().flatten());
    let dashboard = live
        .as_ref()
        .and_then(|s| {
            s.read_json::<prism::session::ReadyInfo>("ready.json")
                .ok()
                .flatten()
        })
        .and_then(|r| r.dashboard);
    if shell {
        // For `eval` in the Slurm provider's script: quoted, and nothing
        // printed while the head is not up yet.
        if let Some(c) = cluster {
            println!("PRISM_ADDRESS='{}'", c.head_address.replace('\'', ""));
            println!("PRISM_TOKEN='{}'", c.token.to_string().replace('\'', ""));
        }
        return Ok(());
    }
    println!(
        "{}",
        serde_json::json!({"live": live.is_some(), "cluster": cluster, "dashboard": dashboard})
    );
    Ok(())
}
