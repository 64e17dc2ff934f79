//! `prism logs`: the workers' output files on every node (each worker's
//! stdout and stderr, in its raylet's session), listed, read or followed;
//! and `prism timeline`: the tasks' runs as a Chrome trace.

use crate::job::ClusterArgs;
use anyhow::{anyhow, bail};
use prism::client::Table;
use prism::ids::NodeId;
use prism::proto::head::{HeadRequest, HeadResponse};
use prism::proto::state::LogChunk;
use prism::views::Query;
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Only workers on this node (id or prefix).
    #[arg(long)]
    node: Option<String>,
    /// The worker with this pid.
    #[arg(long)]
    pid: Option<u32>,
    /// The worker hosting this actor (name, or id prefix).
    #[arg(long)]
    actor: Option<String>,
    /// The worker that ran this task (id or prefix).
    #[arg(long)]
    task: Option<String>,
    /// Every worker of this job (id or prefix).
    #[arg(long)]
    job: Option<String>,
    /// Keep printing what the worker writes (one worker only).
    #[arg(long, short = 'f')]
    follow: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// One worker log: where, which process, and a title for it.
struct Target {
    node: NodeId,
    pid: u32,
    title: String,
}

fn one(rows: &[Value], what: &str) -> anyhow::Result<Value> {
    match rows {
        [row] => Ok(row.clone()),
        [] => bail!("no {what}"),
        many => bail!("{} rows match {what}; give a longer id", many.len()),
    }
}

fn pick(rows: Vec<Value>, pairs: &[(&str, &str)], what: &str) -> anyhow::Result<Value> {
    one(
        &Query::parse(pairs.iter().copied())?
            .apply_values(rows)?
            .rows,
        what,
    )
}

fn target(w: &Value) -> anyhow::Result<Target> {
    let node: NodeId = w["node_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("a row without a node id: {w}"))?;
    let pid = w["pid"]
        .as_u64()
        .or_else(|| w["worker_pid"].as_u64())
        .ok_or_else(|| anyhow!("it has no worker process (yet)"))? as u32;
    Ok(Target {
        node,
        pid,
        title: format!("node {} pid {pid}", node.short()),
    })
}

pub fn run(args: LogsArgs) -> anyhow::Result<()> {
    let head = args.cluster.connect()?;
    let rows = |t: Table| head.rt.block_on(head.client.rows(t));
    let targets: Vec<Target> = if let Some(actor) = &args.actor {
        let actors = rows(Table::Actors)?;
        let a = pick(
            actors.clone(),
            &[("name", actor)],
            &format!("actor named {actor}"),
        )
        .or_else(|_| pick(actors, &[("actor_id", actor)], &format!("actor {actor}")))?;
        let id = a["actor_id"].as_str().unwrap_or_default();
        let w = pick(
            rows(Table::Workers)?,
            &[("actor_id", id)],
            &format!("live worker of actor {id}"),
        )?;
        vec![target(&w)?]
    } else if let Some(task) = &args.task {
        vec![target(&pick(
            rows(Table::Tasks)?,
            &[("task_id", task)],
            &format!("task {task}"),
        )?)?]
    } else if let (Some(node), Some(pid)) = (&args.node, args.pid) {
        let n = pick(
            rows(Table::Nodes)?,
            &[("node_id", node)],
            &format!("node {node}"),
        )?;
        let mut t = target(&serde_json::json!({"node_id": n["node_id"], "pid": pid}))?;
        t.title = format!("node {} pid {pid}", t.node.short());
        vec![t]
    } else {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        if let Some(j) = &args.job {
            pairs.push(("job_id", j));
        }
        if let Some(n) = &args.node {
            // A node that is not in the cluster is a mistake, not an empty list.
            pick(rows(Table::Nodes)?, &[("node_id", n)], &format!("node {n}"))?;
            pairs.push(("node_id", n));
        }
        let workers = Query::parse(pairs)?
            .apply_values(rows(Table::Workers)?)?
            .rows;
        if args.job.is_none() && args.pid.is_none() {
            crate::list_table::print(Table::Workers, &workers);
            println!("\nRead one with --node N --pid P, --actor NAME, --task ID or --job J.");
            return Ok(());
        }
        workers.iter().map(target).collect::<anyhow::Result<_>>()?
    };
    if args.follow && targets.len() != 1 {
        bail!("--follow reads one worker's log; {} match", targets.len());
    }
    for t in &targets {
        if targets.len() > 1 {
            println!("==> {} <==", t.title);
        }
        let mut offset = 0;
        loop {
            let req = HeadRequest::WorkerLog {
                node_id: t.node,
                pid: t.pid,
                offset,
            };
            let chunk = match head.request(&req)? {
                HeadResponse::WorkerLog(c) => c,
                HeadResponse::Error { message, .. } => bail!(message),
                other => bail!("unexpected answer to WorkerLog: {other:?}"),
            };
            match chunk {
                LogChunk::Data { data, next } => {
                    std::io::stdout().write_all(&data)?;
                    std::io::stdout().flush()?;
                    let more = next > offset;
                    offset = next;
                    if !more {
                        if !args.follow {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
                LogChunk::Missing(why) => bail!(why),
            }
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct TimelineArgs {
    /// Only this job's tasks (id or prefix).
    #[arg(long)]
    job: Option<String>,
    /// Where to write the trace (open it in chrome://tracing or ui.perfetto.dev).
    #[arg(short = 'o', long, default_value = "timeline.json")]
    output: std::path::PathBuf,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub fn timeline(args: TimelineArgs) -> anyhow::Result<()> {
    let head = args.cluster.connect()?;
    let HeadResponse::Tasks(mut tasks) = head.request(&HeadRequest::ListTasks)? else {
        bail!("unexpected answer to ListTasks");
    };
    if let Some(j) = &args.job {
        tasks.retain(|t| t.job_id.to_string().starts_with(j.as_str()));
    }
    let trace = prism::views::chrome_trace(&tasks);
    let events = trace.as_array().map_or(0, |a| a.len());
    std::fs::write(&args.output, serde_json::to_vec(&trace)?)?;
    println!(
        "wrote {} events ({} tasks) to {}",
        events,
        tasks.len(),
        args.output.display()
    );
    Ok(())
}
