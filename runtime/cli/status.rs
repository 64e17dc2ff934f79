//! `prism status`: the node table, as a table or as JSON for scripts.

use crate::TempDirArg;
use anyhow::{anyhow, bail, Context};
use prism::client::HeadClient;
use prism::proto::common::{ClusterStatus, NodeState, Resources};
use prism::proto::head::{HeadRequest, HeadResponse};
use prism::raylet::resources::OBJECT_STORE_MEMORY;
use prism::session::{ClusterInfo, SessionDir};
use prism::token::Credential;
use prism::transport::quic::QuicEndpoint;
use prism::transport::Endpoint;
use prism::Config;
use prism_scheduler::{Quantity, ResourceSet, GPU, MEMORY};
use serde_json::{json, Map, Value};
use std::net::{SocketAddr, ToSocketAddrs};

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The head, HOST:PORT (default: the newest session on this machine).
    #[arg(long, env = "PRISM_ADDRESS")]
    address: Option<String>,
    /// The join token (default: from that session).
    #[arg(long, env = "PRISM_TOKEN")]
    token: Option<String>,
    /// The cluster a cluster.yaml started (`prism up`); wins over
    /// --address and --token.
    #[arg(long)]
    cluster: Option<std::path::PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Only this node (name, id or id prefix): exit 0 when it is alive and
    /// takes work, else 1 saying why (a readiness probe).
    #[arg(long)]
    node: Option<String>,
    #[command(flatten)]
    temp: TempDirArg,
}

/// The head address and token: from flags, or the newest local session with a live daemon.
pub fn cluster_info(
    address: Option<String>,
    token: Option<String>,
    temp: &TempDirArg,
) -> anyhow::Result<ClusterInfo> {
    if let Some(c) = crate::credentials::find(token.is_some())? {
        // A person's token: the head it names, else this machine's.
        let head_address = match address.or(c.address) {
            Some(a) => a,
            None => local_session(None, temp)?.head_address,
        };
        return Ok(ClusterInfo {
            head_address,
            token: c.token.to_string(),
        });
    }
    match (address, token) {
        (Some(head_address), Some(token)) => Ok(ClusterInfo {
            head_address,
            token,
        }),
        (address, token) => {
            let info = local_session(address.as_deref(), temp)?;
            Ok(ClusterInfo {
                token: token.unwrap_or(info.token),
                ..info
            })
        }
    }
}

/// The newest local session with a live daemon (at `address`, if given).
fn local_session(address: Option<&str>, temp: &TempDirArg) -> anyhow::Result<ClusterInfo> {
    for s in SessionDir::list(&temp.temp_dir) {
        if s.live_daemon().is_none() {
            continue;
        }
        if let Some(info) = s.read_json::<ClusterInfo>("cluster.json")? {
            if address.is_none_or(|a| a == info.head_address) {
                return Ok(info);
            }
        }
    }
    Err(anyhow!(
        "no running Prism cluster found in {}; start one with `prism start --head`, or pass --address and --token",
        temp.temp_dir.display()
    ))
}

/// A connection to the head as a token-holding client.
pub struct HeadSession {
    pub rt: tokio::runtime::Runtime,
    pub ep: QuicEndpoint,
    pub client: HeadClient,
}

impl HeadSession {
    /// Connects with the join token, or as a user when `info.token` is a
    /// user's (`name@…`).
    pub fn connect(info: &ClusterInfo) -> anyhow::Result<HeadSession> {
        let cred: Credential = info.token.parse()?;
        let head: SocketAddr = info
            .head_address
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {}", info.head_address))?
            .next()
            .ok_or_else(|| anyhow!("{} resolves to nothing", info.head_address))?;
        let config = Config::from_env()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (ep, client) = rt.block_on(async {
            let unspecified = if head.is_ipv4() {
                [0u8; 4].into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            };
            let ep = QuicEndpoint::client(unspecified)?;
            let client = HeadClient::connect_as(&ep, head, &cred, &config).await?;
            anyhow::Ok((ep, client))
        })?;
        Ok(HeadSession { rt, ep, client })
    }

    pub fn request(&self, req: &HeadRequest) -> anyhow::Result<HeadResponse> {
        Ok(self.rt.block_on(self.client.request(req))?)
    }
}

impl Drop for HeadSession {
    fn drop(&mut self) {
        self.client.close();
        self.ep.close();
    }
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let info = match &args.cluster {
        Some(c) => crate::launcher::head_info(c, &args.temp)?,
        None => cluster_info(args.address, args.token, &args.temp)?,
    };
    let head = HeadSession::connect(&info)?;
    let status = head.rt.block_on(head.client.status())?;
    if let Some(key) = &args.node {
        return node_ready(&status, key);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&status))?);
    } else {
        print_table(&status);
    }
    Ok(())
}

/// Whether node `key` is alive and takes work.
fn node_ready(status: &ClusterStatus, key: &str) -> anyhow::Result<()> {
    let n = crate::drain::find(status, key)?;
    if let Some(d) = &n.draining {
        bail!("node {} ({}) is draining: {}", n.name, n.node_id, d.reason);
    }
    if n.state != NodeState::Alive {
        bail!(
            "node {} ({}) is {:?}: its heartbeats are late",
            n.name,
            n.node_id,
            n.state
        );
    }
    println!("node {} ({}) is alive", n.name, n.node_id);
    Ok(())
}

fn amount(name: &str, q: Quantity) -> Value {
    if name == MEMORY || name == OBJECT_STORE_MEMORY {
        json!(q.raw() / prism_scheduler::SCALE)
    } else {
        json!(q.as_f64())
    }
}

fn set_json(set: &ResourceSet) -> Value {
    Value::Object(
        set.iter()
            .map(|(n, q)| (n.to_string(), amount(n, q)))
            .collect::<Map<_, _>>(),
    )
}

fn to_json(s: &ClusterStatus) -> Value {
    let (mut total, mut free) = (ResourceSet::new(), ResourceSet::new());
    let nodes: Vec<Value> = s
        .nodes
        .iter()
        .map(|n| {
            if n.state != NodeState::Dead {
                total.add(&n.total.to_set());
                free.add(&n.available.to_set());
            }
            json!({
                "node_id": n.node_id,
                "name": n.name,
                "address": n.address,
                "state": n.state,
                "death_reason": n.death_reason,
                "incarnation": n.incarnation,
                "is_head": n.is_head,
                "resources": { "total": set_json(&n.total.to_set()), "available": set_json(&n.available.to_set()) },
                "labels": n.labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                "gpus": n.gpus,
                "last_heartbeat_ms_ago": n.last_heartbeat_ms_ago,
                "pid": n.pid,
                "draining": n.draining.as_ref().map(|d| json!({"reason": d.reason, "ms_left": d.ms_left, "stopped_new_work": d.stopped_new_work})),
            })
        })
        .collect();
    let count = |st: NodeState| s.nodes.iter().filter(|n| n.state == st).count();
    json!({
        "cluster_id": s.cluster_id,
        "head_address": s.head_address,
        "nodes": nodes,
        "demand": s.demand.iter().map(|d| json!({
            "node_id": d.node_id,
            "shape": set_json(&d.shape.to_set()),
            "count": d.count,
            "infeasible": d.infeasible,
        })).collect::<Vec<_>>(),
        "totals": {
            "alive_nodes": count(NodeState::Alive),
            "suspect_nodes": count(NodeState::Suspect),
            "dead_nodes": count(NodeState::Dead),
            "total": set_json(&total),
            "available": set_json(&free),
        }
    })
}

fn used_of(name: &str, total: Quantity, free: Quantity) -> String {
    let used = total - free;
    if name == MEMORY || name == OBJECT_STORE_MEMORY {
        let gib =
            |q: Quantity| q.raw() as f64 / prism_scheduler::SCALE as f64 / (1u64 << 30) as f64;
        format!("{:.1}/{:.1} GiB", gib(used), gib(total))
    } else {
        format!("{used}/{total}")
    }
}

/// `CPU 2` or `memory 23.5 GiB`.
fn total_of(name: &str, total: Quantity) -> String {
    if name == MEMORY || name == OBJECT_STORE_MEMORY {
        let gib = total.raw() as f64 / prism_scheduler::SCALE as f64 / (1u64 << 30) as f64;
        format!("{name} {gib:.1} GiB")
    } else {
        format!("{name} {total}")
    }
}

fn resources_cell(total: &Resources, free: &Resources) -> String {
    let (t, f) = (total.to_set(), free.to_set());
    t.iter()
        .map(|(name, q)| format!("{name} {}", used_of(name, q, f.get(name))))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_table(s: &ClusterStatus) {
    println!("Cluster {}  head {}", s.cluster_id.short(), s.head_address);
    println!();
    println!(
        "{:<12} {:<8} {:<22} {:>4}  {:<52} LABELS",
        "NODE", "STATE", "ADDRESS", "INC", "RESOURCES (used/total)"
    );
    let (mut total, mut free) = (ResourceSet::new(), ResourceSet::new());
    for n in &s.nodes {
        let state = match n.state {
            NodeState::Alive if n.draining.is_some() => "draining",
            NodeState::Alive => "alive",
            NodeState::Suspect => "suspect",
            NodeState::Dead => "dead",
        };
        let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let head = if n.is_head { " (head)" } else { "" };
        let resources = if n.state == NodeState::Dead {
            // Nothing of a dead node is available or in use: show what it had.
            let had: Vec<String> = n
                .total
                .to_set()
                .iter()
                .map(|(k, q)| total_of(k, q))
                .collect();
            format!("none (had {})", had.join(", "))
        } else {
            resources_cell(&n.total, &n.available)
        };
        println!(
            "{:<12} {:<8} {:<22} {:>4}  {:<52} {}{head}",
            n.node_id.short(),
            state,
            n.address,
            n.incarnation,
            resources,
            labels.join(",")
        );
        if let Some(why) = &n.death_reason {
            println!("{:<12} reason: {why}", "");
        }
        if let (Some(d), NodeState::Alive | NodeState::Suspect) = (&n.draining, n.state) {
            let left = d.ms_left as f64 / 1000.0;
            println!(
                "{:<12} draining: {}; leaves within {left:.1} s",
                "", d.reason
            );
        }
        if n.state != NodeState::Dead {
            total.add(&n.total.to_set());
            free.add(&n.available.to_set());
        }
        let gpus: Vec<&str> = n.gpus.iter().map(|g| g.name.as_str()).collect();
        if !gpus.is_empty() && n.total.to_set().get(GPU) > Quantity::ZERO {
            println!("{:<12} gpus: {}", "", gpus.join(", "));
        }
    }
    let alive = s
        .nodes
        .iter()
        .filter(|n| n.state != NodeState::Dead)
        .count();
    println!();
    println!(
        "Totals: {alive} live node(s), {} dead; {}",
        s.nodes.len() - alive,
        resources_cell(&Resources::from(&total), &Resources::from(&free))
    );
    // Usage travels with heartbeats: say how old this view is.
    let oldest = s
        .nodes
        .iter()
        .filter(|n| n.state != NodeState::Dead)
        .map(|n| n.last_heartbeat_ms_ago)
        .max();
    if let Some(ms) = oldest {
        println!("(usage as of each node's last heartbeat, the oldest {ms} ms ago)");
    }
    let pending: Vec<_> = s.demand.iter().filter(|d| d.infeasible.is_none()).collect();
    let infeasible: Vec<_> = s.demand.iter().filter(|d| d.infeasible.is_some()).collect();
    if !pending.is_empty() {
        println!();
        println!("Pending demand (queued on a node, waiting for resources):");
        for d in pending {
            println!(
                "  {} x {} on {}",
                d.count,
                d.shape.to_set(),
                d.node_id.short()
            );
        }
    }
    if !infeasible.is_empty() {
        println!();
        println!(
            "Infeasible demand (no node can run it now; it waits for one to join, then fails with Infeasible):"
        );
        for d in infeasible {
            let why = d.infeasible.as_deref().unwrap_or_default();
            println!(
                "  {} x {} from {}: {why}",
                d.count,
                d.shape.to_set(),
                d.node_id.short()
            );
        }
    }
}
