//! `prism`: start and stop nodes, and inspect the cluster.

mod access;
mod alerts;
mod credentials;
mod dashboard;
mod drain;
mod job;
mod k8s;
mod launcher;
mod list;
mod list_table;
mod logs;
mod microbench_extras;
mod microbench_scale;
mod microbenchmark;
mod models;
mod namespace;
mod queue;
mod reference;
mod runs;
mod runs_filter;
mod serve;
mod serve_rollout;
mod start;
mod status;
mod stop;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "prism",
    version,
    about = "Prism: an actor-based distributed runtime for Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a head node (`--head`) or join a cluster (`--address ... --token ...`).
    Start(start::StartArgs),
    /// Stop every Prism daemon started on this machine (found through the session directories).
    Stop(stop::StopArgs),
    /// Show each node with its state, resources and labels.
    Status(status::StatusArgs),
    /// Ship a job binary to the head by content hash, run it there as the
    /// driver, stream its output, and exit with its status.
    Submit(job::SubmitArgs),
    /// Ray's microbenchmark workloads (same names) on the embedded cluster or PRISM_ADDRESS.
    Microbenchmark(microbenchmark::MicrobenchmarkArgs),
    /// The state tables: nodes, jobs, actors, tasks, objects, placement
    /// groups, workers (with --state, --filter, --sort, --limit, --json).
    List(list::ListArgs),
    /// Workers' output: list the log files, or read one (--node/--pid,
    /// --actor, --task, --job), or follow it (-f).
    Logs(logs::LogsArgs),
    /// Write the tasks' runs as a Chrome trace (like `ray timeline`).
    Timeline(logs::TimelineArgs),
    /// List, follow or stop jobs.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Start (or update) the cluster a cluster.yaml describes: its head and
    /// each group's `min` workers. Idempotent.
    Up(launcher::UpArgs),
    /// Stop every node of a cluster.yaml's cluster.
    Down(launcher::DownArgs),
    /// Drain a node: no new work; it leaves once nothing there needs it or
    /// at the deadline, its work retried and its actors restarted elsewhere.
    Drain(drain::DrainArgs),
    /// The model registry: register versions from runs, move aliases,
    /// edit cards, list and show.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Training runs: list (with --filter/--sort), show one, compare several.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Model serving: deploy a serve.yaml, show status, delete an
    /// application, shut serving down, roll versions out, load-test.
    #[command(subcommand)]
    Serve(serve::ServeCommand),
    /// Serving alerts: the rules (error rate, p99 latency, drift), what
    /// fires now, the notices sent to webhooks.
    #[command(subcommand)]
    Alerts(alerts::AlertsCommand),
    /// The job queue: what waits, its position and why; `quota` sets a
    /// namespace's quota, job limit and fair-share weight.
    Queue(queue::QueueArgs),
    /// Namespaces' settings: `encrypt` seals the files their jobs keep at
    /// rest with the namespace's own key.
    #[command(subcommand)]
    Namespace(namespace::NamespaceCommand),
    /// People's accounts: add (prints their token), revoke, list, whoami.
    #[command(subcommand)]
    User(access::UserCommand),
    /// Roles: the built-in admin, developer and viewer, and custom ones.
    #[command(subcommand)]
    Role(access::RoleCommand),
    /// The audit trail of every change (--user, --action, --since, --json
    /// lines), and `verify` of its hash chain.
    Audit(access::AuditArgs),
    /// Save your user token (checked against the head) in a 0600
    /// credentials file that every command then uses.
    Login(access::LoginArgs),
    /// The cluster a cluster.yaml describes, on Kubernetes: `manifests`
    /// to apply, `secret` with its CA and join token.
    #[command(subcommand)]
    K8s(k8s::K8sCommand),
    /// Run a command on a cluster.yaml's head, connected to the cluster.
    Exec(launcher::ExecArgs),
    /// Open a shell on a cluster.yaml's head, connected to the cluster.
    Attach(launcher::DownArgs),
    /// The autoscaler's loop (`prism up` runs it as a daemon).
    #[command(hide = true)]
    Autoscale(launcher::AutoscaleArgs),
    /// Whether a daemon runs in a temp dir, and its cluster (JSON; the
    /// launcher asks remote machines this over ssh).
    #[command(hide = true)]
    SessionInfo(SessionInfoArgs),
    /// The guide's configuration page (every setting and flag) as Markdown.
    #[command(hide = true)]
    Reference,
}

/// `prism session-info`'s flags.
#[derive(clap::Args, Debug, Clone)]
struct SessionInfoArgs {
    /// Print `PRISM_ADDRESS=…` and `PRISM_TOKEN=…` for a shell's `eval`.
    #[arg(long)]
    shell: bool,
    #[command(flatten)]
    temp: TempDirArg,
}

/// Options shared by every command that touches local session directories.
#[derive(clap::Args, Debug, Clone)]
struct TempDirArg {
    /// Where session directories live.
    #[arg(long, env = "PRISM_TEMP_DIR", default_value = "/tmp/prism")]
    temp_dir: PathBuf,
}

/// Runs the command; a failure is one message on stderr and exit code 1,
/// never a backtrace (even with `RUST_BACKTRACE=1`): a user error is not a
/// crash.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Start(a) => start::run(a),
        Command::Stop(a) => stop::run(a),
        Command::Status(a) => status::run(a),
        Command::List(a) => list::run(a),
        Command::Logs(a) => logs::run(a),
        Command::Timeline(a) => logs::timeline(a),
        Command::Microbenchmark(a) => microbenchmark::run(a),
        Command::Submit(a) => std::process::exit(job::submit(a)?),
        Command::Job(c) => std::process::exit(job::run(c)?),
        Command::Up(a) => launcher::up(a),
        Command::Down(a) => launcher::down(a),
        Command::Drain(a) => drain::run(a),
        Command::Serve(c) => serve::run(c),
        Command::Alerts(c) => alerts::run(c),
        Command::Runs(c) => runs::run(c),
        Command::Models(c) => models::run(c),
        Command::Queue(a) => queue::run(a),
        Command::Namespace(c) => namespace::run(c),
        Command::User(c) => access::user(c),
        Command::Role(c) => access::role(c),
        Command::Audit(a) => std::process::exit(access::audit(a)?),
        Command::Login(a) => access::login(a),
        Command::K8s(c) => k8s::run(c),
        Command::Exec(a) => std::process::exit(launcher::exec(a)?),
        Command::Attach(a) => std::process::exit(launcher::attach(a)?),
        Command::Autoscale(a) => launcher::autoscale(a),
        Command::SessionInfo(a) => launcher::session_info(&a.temp.temp_dir, a.shell),
        Command::Reference => {
            print!(
                "{}",
                reference::markdown(&<Cli as clap::CommandFactory>::command())
            );
            Ok(())
        }
    }
}
