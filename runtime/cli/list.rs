//! `prism list nodes | actors | jobs | placement-groups | tasks | objects`:
//! the head's tables (and, for tasks and objects, what the raylets hold),
//! with filters.

use crate::job::ClusterArgs;
use crate::list_state::keep;
use anyhow::bail;
use prism::proto::common::NodeState;
use prism::proto::head::{HeadRequest, HeadResponse};
use prism::proto::placement::PgRequest;

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// What to list: nodes, actors, jobs, placement-groups, tasks or objects.
    #[arg(value_parser = ["nodes", "actors", "jobs", "placement-groups", "tasks", "objects"])]
    what: String,
    /// Only rows in this state (alive, dead, pending, restarting, running,
    /// queued; objects: creating, in_memory, spilled; ...).
    #[arg(long)]
    state: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub fn run(args: ListArgs) -> anyhow::Result<()> {
    let head = args.cluster.connect()?;
    match args.what.as_str() {
        "actors" => {
            let HeadResponse::Actors(mut actors) = head.request(&HeadRequest::ListActors)? else {
                bail!("unexpected answer to ListActors");
            };
            actors.retain(|a| keep(&args.state, &format!("{:?}", a.state)));
            if args.json {
                println!("{}", serde_json::to_string_pretty(&actors)?);
                return Ok(());
            }
            println!(
                "{:<12} {:<11} {:<24} {:<16} {:<12} {:>8}  REASON",
                "ACTOR", "STATE", "CLASS", "NAME", "NODE", "RESTARTS"
            );
            for a in &actors {
                let class = a.class.rsplit("::").next().unwrap_or(&a.class);
                println!(
                    "{:<12} {:<11} {:<24} {:<16} {:<12} {:>8}  {}",
                    a.actor_id.short(),
                    format!("{:?}", a.state).to_lowercase(),
                    class,
                    a.name.clone().unwrap_or_default(),
                    a.node_id.map(|n| n.short()).unwrap_or_default(),
                    a.restarts,
                    a.death_reason.clone().unwrap_or_default()
                );
            }
        }
        "placement-groups" => {
            let HeadResponse::PlacementGroups(mut pgs) =
                head.request(&HeadRequest::PlacementGroup(PgRequest::List))?
            else {
                bail!("unexpected answer to ListPlacementGroups");
            };
            pgs.retain(|g| keep(&args.state, &format!("{:?}", g.state)));
            if args.json {
                println!("{}", serde_json::to_string_pretty(&pgs)?);
                return Ok(());
            }
            println!(
                "{:<13} {:<12} {:<14} {:<16} {:>7}  NODES / REASON",
                "GROUP", "STATE", "STRATEGY", "NAME", "BUNDLES"
            );
            for g in &pgs {
                let nodes: Vec<String> = g
                    .nodes
                    .iter()
                    .map(|n| n.map(|n| n.short()).unwrap_or_else(|| "-".into()))
                    .collect();
                println!(
                    "{:<13} {:<12} {:<14} {:<16} {:>7}  {} {}",
                    g.pg.short(),
                    format!("{:?}", g.state).to_lowercase(),
                    format!("{:?}", g.strategy),
                    g.name,
                    g.bundles.len(),
                    nodes.join(","),
                    g.reason.clone().unwrap_or_default()
                );
            }
        }
        "tasks" => crate::list_state::tasks(&head, &args.state, args.json)?,
        "objects" => crate::list_state::objects(&head, &args.state, args.json)?,
        "jobs" => {
            let HeadResponse::Jobs(mut jobs) = head.request(&HeadRequest::ListJobs)? else {
                bail!("unexpected answer to ListJobs");
            };
            jobs.retain(|j| keep(&args.state, &format!("{:?}", j.state)));
            if args.json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
                return Ok(());
            }
            println!("{:<38} {:<10} ENTRYPOINT", "JOB", "STATE");
            for j in &jobs {
                println!(
                    "{:<38} {:<10} {}",
                    j.job_id.to_string(),
                    format!("{:?}", j.state).to_lowercase(),
                    j.entrypoint
                );
            }
        }
        _ => {
            let status = head.rt.block_on(head.client.status())?;
            let nodes: Vec<_> = status
                .nodes
                .iter()
                .filter(|n| {
                    keep(
                        &args.state,
                        match n.state {
                            NodeState::Alive => "alive",
                            NodeState::Suspect => "suspect",
                            NodeState::Dead => "dead",
                        },
                    )
                })
                .collect();
            if args.json {
                let rows: Vec<_> = nodes
                    .iter()
                    .map(|n| {
                        serde_json::json!({
                            "node_id": n.node_id, "state": n.state, "address": n.address,
                            "name": n.name, "is_head": n.is_head, "death_reason": n.death_reason,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!("{:<12} {:<8} {:<22} NAME", "NODE", "STATE", "ADDRESS");
            for n in nodes {
                println!(
                    "{:<12} {:<8} {:<22} {}",
                    n.node_id.short(),
                    format!("{:?}", n.state).to_lowercase(),
                    n.address,
                    n.name
                );
            }
        }
    }
    Ok(())
}
