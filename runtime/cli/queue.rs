//! `prism queue`: what waits and why, each namespace's use of its quota,
//! and `prism queue quota` to set a namespace's quota, job limit and
//! fair-share weight (the decisions are the head's, `head::job_queue`).

use crate::job::ClusterArgs;
use anyhow::{anyhow, bail};
use prism::proto::common::Resources;
use prism::proto::head::{HeadRequest, HeadResponse};
use prism::proto::queue::{NamespaceQuota, QueueRequest, QueueView};
use prism_scheduler::{Quantity, ResourceSet, CPU, GPU, MEMORY, SCALE};

/// `prism queue`'s flags.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct QueueArgs {
    #[command(subcommand)]
    command: Option<QueueCommand>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum QueueCommand {
    /// Set a namespace's quota (what its running jobs may declare in
    /// all), its limit of running jobs and its fair-share weight.
    Quota {
        /// The namespace.
        namespace: String,
        /// CPUs.
        #[arg(long)]
        cpus: Option<f64>,
        /// GPUs.
        #[arg(long)]
        gpus: Option<u32>,
        /// Memory, in bytes or with a K/M/G/T suffix.
        #[arg(long, value_parser = crate::start::parse_bytes)]
        memory: Option<u64>,
        /// Running jobs at most (0: no limit).
        #[arg(long, default_value_t = 0)]
        max_jobs: u32,
        /// Its share against other namespaces' (at least 1).
        #[arg(long, default_value_t = 1)]
        weight: u32,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

pub(crate) fn ask(cluster: &ClusterArgs, req: QueueRequest) -> anyhow::Result<QueueView> {
    let head = cluster.connect()?;
    match head.request(&HeadRequest::Queue(req))? {
        HeadResponse::Queue(v) => Ok(v),
        other => Err(anyhow!("unexpected answer from the head: {other:?}")),
    }
}

/// `CPU 2, GPU 1, memory 8.0G` (memory in bytes read as such).
fn show(r: &Resources) -> String {
    let set = r.to_set();
    if set.is_empty() {
        return "-".into();
    }
    set.iter()
        .map(|(name, q)| {
            if name == MEMORY {
                format!(
                    "{name} {:.1}G",
                    (q.raw() / SCALE) as f64 / (1u64 << 30) as f64
                )
            } else {
                format!("{name} {q}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn run(args: QueueArgs) -> anyhow::Result<()> {
    let view = match args.command {
        Some(QueueCommand::Quota {
            namespace,
            cpus,
            gpus,
            memory,
            max_jobs,
            weight,
            cluster,
        }) => {
            let mut set = ResourceSet::new();
            if let Some(c) = cpus {
                set.set(
                    CPU,
                    Quantity::from_f64(c).map_err(|e| anyhow!("--cpus {c}: {e}"))?,
                );
            }
            if let Some(g) = gpus {
                set.set(GPU, Quantity::whole(g));
            }
            if let Some(m) = memory {
                set.set(MEMORY, Quantity::from_raw((m as i64).saturating_mul(SCALE)));
            }
            if weight == 0 {
                bail!("--weight must be at least 1");
            }
            let q = NamespaceQuota {
                namespace,
                quota: Resources::from(&set),
                max_jobs,
                weight,
            };
            ask(&cluster, QueueRequest::SetQuota(q))?
        }
        None => ask(&args.cluster, QueueRequest::Show)?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    println!(
        "{:<12} {:<24} {:>8} {:>6} {:>7}  QUOTA / USED",
        "NAMESPACE", "", "WEIGHT", "RUN", "WAIT"
    );
    for n in &view.namespaces {
        let max = match n.policy.max_jobs {
            0 => String::new(),
            m => format!(", at most {m} jobs"),
        };
        println!(
            "{:<12} {:<24} {:>8} {:>6} {:>7}  [{}{max}] / [{}]",
            n.policy.namespace,
            "",
            n.policy.weight,
            n.running,
            n.waiting,
            show(&n.policy.quota),
            show(&n.used)
        );
    }
    if !view.sealed.is_empty() {
        println!(
            "\nsealed at rest with their own keys: {}",
            view.sealed.join(", ")
        );
    }
    if view.waiting.is_empty() {
        println!("\nno job waits");
        return Ok(());
    }
    println!(
        "\n{:>3} {:<36} {:<12} {:<10} {:>4} {:<5} {:<18} WHY",
        "POS", "JOB", "NAMESPACE", "OWNER", "PRIO", "SPOT", "NEEDS"
    );
    for w in &view.waiting {
        println!(
            "{:>3} {:<36} {:<12} {:<10} {:>4} {:<5} {:<18} {}",
            w.position,
            w.job_id.to_string(),
            w.namespace,
            w.owner,
            w.priority,
            if w.spot { "yes" } else { "no" },
            show(&w.demand),
            w.reason
        );
    }
    Ok(())
}
