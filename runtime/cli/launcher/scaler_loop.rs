//! `prism autoscale cluster.yaml`: the autoscaler's loop, a daemon `prism
//! up` starts when a group may grow (`min < max`) and `prism down` stops.
//! Once a second it reads the cluster from the head (nodes, demand, where
//! actors and objects are), asks the pure [`Scaler`] what to do, and starts
//! or stops local nodes. Its decisions go to `autoscaler.log`.

use super::autoscale::{DemandView, NodeView, Scaler, Shape};
use super::config::ClusterConfig;
use super::local::ClusterDir;
use super::machines::Machines;
use super::plan;
use crate::status::HeadSession;
use prism::client::Table;
use prism::proto::common::{NodeState, Resources};
use prism::proto::head::{HeadRequest, HeadResponse};
use prism::session::{process_alive, process_start_time, ClusterInfo, DaemonInfo};
use prism::NodeId;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct AutoscaleArgs {
    /// The cluster's file.
    config: std::path::PathBuf,
    #[command(flatten)]
    temp: crate::TempDirArg,
}

fn shape(r: &Resources) -> Shape {
    r.to_set()
        .iter()
        .map(|(k, q)| (k.to_string(), q.as_f64()))
        .collect()
}

/// Starts the autoscaler daemon for `config` unless one runs.
pub fn ensure_running(config: &Path, dir: &ClusterDir, temp: &Path) -> anyhow::Result<()> {
    let file = dir.file("autoscaler.json");
    if let Ok(s) = std::fs::read_to_string(&file) {
        if let Ok(d) = serde_json::from_str::<DaemonInfo>(&s) {
            if process_alive(d.pid, d.start_time) {
                return Ok(());
            }
        }
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.file("autoscaler.log"))?;
    let child = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(std::env::current_exe()?)
            .arg("autoscale")
            .arg(std::fs::canonicalize(config)?)
            .arg("--temp-dir")
            .arg(temp)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?
    };
    let pid = child.id();
    let info = DaemonInfo {
        pid,
        start_time: process_start_time(pid).unwrap_or(0),
        kind: "autoscaler".into(),
    };
    std::fs::write(file, serde_json::to_vec(&info)?)?;
    println!(
        "  autoscaler   started (log: {})",
        dir.file("autoscaler.log").display()
    );
    Ok(())
}

/// Stops the autoscaler daemon, if one runs.
pub fn stop(dir: &ClusterDir) {
    let file = dir.file("autoscaler.json");
    if let Some(d) = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| serde_json::from_str::<DaemonInfo>(&s).ok())
    {
        if process_alive(d.pid, d.start_time) {
            // SAFETY: kill(2) only sends a signal; the pid was checked against its start time.
            unsafe {
                libc::kill(d.pid as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while process_alive(d.pid, d.start_time) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let _ = std::fs::remove_file(file);
}

/// The loop (runs until killed, or until the cluster's head is gone for a minute).
pub fn run(args: AutoscaleArgs) -> anyhow::Result<()> {
    let c = ClusterConfig::load(&args.config)?;
    let dir = ClusterDir::new(&args.temp.temp_dir, &c.cluster_name);
    let prefix = format!("{}/", c.cluster_name);
    let mut scaler = Scaler::default();
    let mut awaited: BTreeMap<String, String> = BTreeMap::new();
    let mut head_lost: Option<Instant> = None;
    // The head's address and token, read again when it stops answering
    // (over ssh for the ssh provider: not every second).
    let mut info: Option<ClusterInfo> = None;
    println!("autoscaler for cluster {} started", c.cluster_name);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let read = match &info {
            Some(i) => Ok(i.clone()),
            None => Machines::of(&c, &dir).head_info(&dir),
        }
        .and_then(|i| {
            let v = read_cluster(&i, &prefix)?;
            Ok((i, v))
        });
        let (head_info, view) = match read {
            Ok((i, v)) => {
                head_lost = None;
                info = Some(i.clone());
                (i, v)
            }
            Err(e) => {
                info = None;
                let since = *head_lost.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(60) {
                    anyhow::bail!("the head has been unreachable for a minute ({e}); stopping");
                }
                continue;
            }
        };
        let (nodes, demand, ids) = view;
        awaited.retain(|key, group| {
            let here = nodes.iter().any(|n| &n.key == key);
            if here {
                scaler.arrived(group);
            }
            !here
        });
        for d in scaler.decide(&c, &nodes, &demand, Instant::now()) {
            match d {
                super::autoscale::Decision::Launch { group, count } => {
                    for _ in 0..count {
                        match launch(&c, &dir, &head_info, &group) {
                            Ok(key) => {
                                println!("launched {key} for pending demand");
                                awaited.insert(key, group.clone());
                            }
                            Err(e) => println!("cannot launch a {group} node: {e:#}"),
                        }
                    }
                }
                super::autoscale::Decision::Terminate { key } => {
                    // Drained first: its primary copies move to the other
                    // nodes and nothing new lands there while it goes.
                    if let Some(id) = ids.get(&key) {
                        if let Err(e) = drain(&head_info, *id) {
                            println!("draining {key} failed ({e:#}); stopping it anyway");
                        }
                    }
                    let _lock = dir.lock()?;
                    Machines::of(&c, &dir).stop(&dir, &key);
                    let mut state = dir.state()?;
                    state.nodes.remove(&key);
                    dir.save(&state)?;
                    println!("removed {key}: idle for {} s", c.autoscaler.idle_timeout_s);
                }
            }
        }
    }
}

/// How long a scale-down drain may take before the node is stopped anyway.
const SCALE_DOWN_DEADLINE: Duration = Duration::from_secs(30);

/// Drains node `id` (reason `scale-down`) and waits until it has left.
fn drain(info: &ClusterInfo, id: NodeId) -> anyhow::Result<()> {
    let head = HeadSession::connect(info)?;
    let req = HeadRequest::DrainNode {
        node_id: id,
        reason: "scale-down".into(),
        deadline_ms: SCALE_DOWN_DEADLINE.as_millis() as u64,
    };
    if let HeadResponse::Error { message, .. } = head.request(&req)? {
        anyhow::bail!("the head refused: {message}");
    }
    let give_up = Instant::now() + SCALE_DOWN_DEADLINE + Duration::from_secs(10);
    while Instant::now() < give_up {
        let status = head.rt.block_on(head.client.status())?;
        let gone = status
            .nodes
            .iter()
            .find(|n| n.node_id == id)
            .is_none_or(|n| n.state == NodeState::Dead);
        if gone {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    anyhow::bail!(
        "it had not left {:?} after its drain began",
        SCALE_DOWN_DEADLINE
    )
}

/// Node ids by launcher key.
type Ids = std::collections::HashMap<String, NodeId>;

/// The cluster as the scaler sees it.
fn read_cluster(
    info: &ClusterInfo,
    prefix: &str,
) -> anyhow::Result<(Vec<NodeView>, Vec<DemandView>, Ids)> {
    let head = HeadSession::connect(info)?;
    let status = head.rt.block_on(head.client.status())?;
    let actors = head.rt.block_on(head.client.rows(Table::Actors))?;
    let mut busy: HashSet<String> = HashSet::new();
    for a in actors.iter().filter(|a| a["state"] != "dead") {
        busy.extend(a["node_id"].as_str().map(str::to_string));
    }
    // Primary copies do not keep a node: its drain moves them (DR-4).
    let mut ids = Ids::new();
    let nodes = status
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Alive && n.draining.is_none())
        .filter_map(|n| {
            let key = n.name.strip_prefix(prefix)?.to_string();
            ids.insert(key.clone(), n.node_id);
            let group = plan::group_of(&key).to_string();
            let idle = n.available == n.total && !busy.contains(&n.node_id.to_string());
            Some(NodeView {
                key,
                group,
                available: shape(&n.available),
                idle,
            })
        })
        .collect();
    let demand = status
        .demand
        .iter()
        .map(|d| DemandView {
            shape: shape(&d.shape),
            count: d.count,
        })
        .collect();
    Ok((nodes, demand, ids))
}

/// Starts one more node of `group`, under the next free key.
fn launch(
    c: &ClusterConfig,
    dir: &ClusterDir,
    head: &ClusterInfo,
    group: &str,
) -> anyhow::Result<String> {
    // On this machine, or over ssh on an idle host of the pool.
    let m = Machines::of(c, dir);
    let _lock = dir.lock()?;
    let mut state = dir.state()?;
    let spec = plan::group_spec(c, group)
        .ok_or_else(|| anyhow::anyhow!("no group {group} in the file"))?;
    let key = (0..)
        .map(|i| format!("{group}-{i}"))
        .find(|k| !state.nodes.contains_key(k) && !m.live(dir, k))
        .expect("an unbounded range has a free key");
    let (_, took, result) = m.start(dir, &key, &spec, Some(head))?.wait();
    result.map_err(|e| anyhow::anyhow!(e))?;
    println!("{key} ready in {:.2} s", took.as_secs_f64());
    state.nodes.insert(key.clone(), spec);
    dir.save(&state)?;
    Ok(key)
}
