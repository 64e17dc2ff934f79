//! `prism drain NODE`: the node takes no new work; it leaves once nothing
//! there needs it, or at the deadline, when what still runs is retried and
//! its actors restarted on other nodes (see `prism::head::node_table`'s
//! DR-1…DR-3).

use crate::job::ClusterArgs;
use anyhow::{anyhow, bail};
use prism::proto::common::{ClusterStatus, NodeState, NodeStatus};
use prism::proto::head::{HeadRequest, HeadResponse};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct DrainArgs {
    /// The node: its id (or a prefix of it) or its name.
    node: String,
    /// Why, shown in `prism status` and as the node's end (e.g. preemption).
    #[arg(long, default_value = "drained by an operator")]
    reason: String,
    /// How long running work may go on before the node leaves anyway, e.g.
    /// 30s, 2m, 500ms.
    #[arg(long, default_value = "30s")]
    deadline: String,
    /// Return once the node takes no new work, without waiting for it to leave.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// `30s`, `2m`, `500ms`, or plain seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow!("{s:?} is not a duration (e.g. 30s, 2m, 500ms)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => bail!("{s:?}: unknown unit {other:?} (use ms, s, m or h)"),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// The one live node `key` names (id, id prefix, or name).
pub fn find<'a>(status: &'a ClusterStatus, key: &str) -> anyhow::Result<&'a NodeStatus> {
    let live: Vec<&NodeStatus> = status
        .nodes
        .iter()
        .filter(|n| n.state != NodeState::Dead)
        .collect();
    let hits: Vec<&NodeStatus> = live
        .iter()
        .copied()
        .filter(|n| n.name == key || n.node_id.to_string().starts_with(key))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => bail!("no live node {key} in this cluster (see prism status)"),
        many => bail!(
            "{key} names {} nodes: {}",
            many.len(),
            many.iter()
                .map(|n| n.node_id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn status(head: &crate::status::HeadSession) -> anyhow::Result<ClusterStatus> {
    match head.request(&HeadRequest::GetStatus)? {
        HeadResponse::Status(s) => Ok(s),
        other => bail!("unexpected answer from the head: {other:?}"),
    }
}

pub fn run(args: DrainArgs) -> anyhow::Result<()> {
    let deadline = parse_duration(&args.deadline)?;
    let head = args.cluster.connect()?;
    let node = find(&status(&head)?, &args.node)?.node_id;
    let req = HeadRequest::DrainNode {
        node_id: node,
        reason: args.reason.clone(),
        deadline_ms: deadline.as_millis() as u64,
    };
    if let HeadResponse::Error { message, .. } = head.request(&req)? {
        bail!("the head refused to drain {node}: {message}");
    }
    // The node stops taking new work once its raylet hears of the drain
    // (its next heartbeat); wait for that before saying so.
    let started = Instant::now();
    let heard = started + Duration::from_secs(10);
    loop {
        let st = status(&head)?;
        let n = st.nodes.iter().find(|n| n.node_id == node);
        let stopped = n.is_none_or(|n| {
            n.state == NodeState::Dead || n.draining.as_ref().is_some_and(|d| d.stopped_new_work)
        });
        if stopped {
            break;
        }
        if Instant::now() >= heard {
            bail!("node {node} has not acknowledged its drain after 10 s (is its raylet reachable?); the head will still end it at the deadline");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "draining node {node} ({}): it takes no new work; it leaves when nothing there needs it, or in {deadline:?}",
        args.reason
    );
    if args.no_wait {
        return Ok(());
    }
    // The head ends the drain at the deadline; a little more for the news.
    let give_up = started + deadline + Duration::from_secs(15);
    loop {
        let st = status(&head)?;
        match st.nodes.iter().find(|n| n.node_id == node) {
            Some(n) if n.state == NodeState::Dead => {
                let why = n.death_reason.clone().unwrap_or_default();
                eprintln!(
                    "node {node} left after {:.1} s: {why}",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            None => {
                eprintln!("node {node} left");
                return Ok(());
            }
            Some(_) if Instant::now() >= give_up => {
                bail!(
                    "node {node} has not left {:?} after its drain began",
                    started.elapsed()
                )
            }
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3d")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
    }
}
