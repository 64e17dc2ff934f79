//! The cluster launcher: `prism up | down | exec | attach cluster.yaml`.
//! [`config`] reads the file, [`plan`] decides (pure), [`local`] carries it
//! out on this machine. The ssh provider parses but is not built yet: `up`
//! says so and starts nothing.

pub mod autoscale;
pub mod config;
mod local;
pub mod plan;
mod scaler_loop;

pub use scaler_loop::{run as autoscale, AutoscaleArgs};

use anyhow::{bail, Context};
use config::{ClusterConfig, Provider};
use local::ClusterDir;
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

fn ssh_not_built(c: &ClusterConfig) -> anyhow::Result<()> {
    if matches!(c.provider, Provider::Ssh { .. }) {
        bail!(
            "the ssh provider is not built yet (issue 17): nothing was started; use `provider: {{type: local}}`, \
             or run `prism start --address … --token …` on each machine"
        );
    }
    Ok(())
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
    let (_, dir) = cluster(path, temp)?;
    dir.head_info()
}

/// `prism up`.
pub fn up(args: UpArgs) -> anyhow::Result<()> {
    let (c, dir) = cluster(&args.config, &args.temp)?;
    ssh_not_built(&c)?;
    let lock = dir.lock()?;
    let mut state = dir.state()?;
    let running: std::collections::BTreeMap<_, _> = state
        .nodes
        .iter()
        .filter(|(k, _)| dir.live(k))
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
        return print_connect(&args.config, &dir);
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
    local::setup(&c.setup_commands, &c.env)?;
    local::mount(&c.file_mounts)?;
    let began = std::time::Instant::now();
    state.config = args.config.display().to_string();
    // Stops first (workers before the head), then the head, then workers.
    for s in &steps {
        match s {
            Step::Stop(k) | Step::Restart(k, _) if k != "head" => {
                dir.stop(k);
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
        dir.stop("head");
        let (key, took, result) = local::start(&dir, "head", &spec, None)?.wait();
        match result {
            Ok(()) => println!("  {key:<12} started in {:.2} s", took.as_secs_f64()),
            Err(e) => bail!("the head did not start: {e}"),
        }
        state.nodes.insert("head".into(), spec);
        dir.save(&state)?;
    }
    let head = dir.head_info()?;
    let mut starting = Vec::new();
    for s in &steps {
        match s {
            Step::Start(k, spec) | Step::Restart(k, spec) if k != "head" => {
                starting.push((spec.clone(), local::start(&dir, k, spec, Some(&head))?));
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
    print_connect(&args.config, &dir)
}

/// Groups that may grow get an autoscaler.
fn autoscaler(c: &ClusterConfig, args: &UpArgs, dir: &ClusterDir) -> anyhow::Result<()> {
    if c.worker_groups.iter().any(|g| g.max > g.min) {
        scaler_loop::ensure_running(&args.config, dir, &args.temp.temp_dir)?;
    }
    Ok(())
}

fn print_connect(config: &Path, dir: &ClusterDir) -> anyhow::Result<()> {
    let head = dir.head_info()?;
    println!("Head: {}", head.head_address);
    if let Some(url) = dir.dashboard() {
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
    // The autoscaler first, so it starts nothing while nodes go.
    scaler_loop::stop(&dir);
    let _lock = dir.lock()?;
    // Every node directory, recorded or not (a launcher that crashed after
    // starting a node had not recorded it yet).
    let mut keys = dir.node_keys();
    keys.sort_by_key(|k| k == "head");
    let live: Vec<&String> = keys.iter().filter(|k| dir.live(k)).collect();
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
    let mut stopped = 0;
    for k in live {
        stopped += dir.stop(k);
        println!("  {k:<12} stopped");
    }
    dir.forget();
    println!(
        "Cluster {} is down ({stopped} daemon(s) stopped).",
        c.cluster_name
    );
    Ok(())
}

fn head_env(dir: &ClusterDir) -> anyhow::Result<Vec<(String, String)>> {
    let head = dir.head_info()?;
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

/// `prism exec`: runs a command on the head node (here) with the cluster's
/// address and token in its environment; exits with its status.
pub fn exec(args: ExecArgs) -> anyhow::Result<i32> {
    let (c, dir) = cluster(&args.config, &args.temp)?;
    ssh_not_built(&c)?;
    let Some((prog, rest)) = args.command.split_first() else {
        bail!(
            "prism exec {} -- COMMAND [ARGS...]: no command given",
            args.config.display()
        );
    };
    let status = std::process::Command::new(prog)
        .args(rest)
        .envs(head_env(&dir)?)
        .status()
        .with_context(|| format!("cannot run {prog}"))?;
    Ok(status.code().unwrap_or(1))
}

/// `prism attach`: a shell on the head node (here), connected to the cluster.
pub fn attach(args: DownArgs) -> anyhow::Result<i32> {
    let (c, dir) = cluster(&args.config, &args.temp)?;
    ssh_not_built(&c)?;
    let shell = std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into());
    println!(
        "A shell connected to cluster {} (exit to leave).",
        c.cluster_name
    );
    let status = std::process::Command::new(&shell)
        .envs(head_env(&dir)?)
        .status()
        .with_context(|| format!("cannot run {shell}"))?;
    Ok(status.code().unwrap_or(1))
}
