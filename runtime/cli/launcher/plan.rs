//! What `prism up` must do: the nodes `cluster.yaml` asks for (the head,
//! and `min` of each group) against the nodes the launcher's state says
//! run, as a list of steps. Pure: a second `up` of an unchanged file plans
//! nothing but keeps.
//!
//! Invariants:
//!
//! - **LP-1** every node the file asks for is kept (running with the same
//!   spec), started (not running) or restarted (running with another spec,
//!   unless `--no-restart`);
//! - **LP-2** a running node the file no longer allows (its group is gone,
//!   or it is above its group's `max`) is stopped; running nodes between
//!   `min` and `max` (the autoscaler's) are kept;
//! - **LP-3** a head that is (re)started takes every worker with it: they
//!   are restarted too (a new head is a new cluster).

use super::config::{ClusterConfig, NodeResources};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one node is: the arguments that make it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// `head`, or the group's name.
    pub group: String,
    /// `prism start` arguments besides the address and token.
    pub args: Vec<String>,
    /// Its environment.
    pub env: BTreeMap<String, String>,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// It runs as asked.
    Keep(String),
    /// It runs with another spec; `--no-restart` leaves it.
    Differs(String),
    /// Start it.
    Start(String, NodeSpec),
    /// Stop it, then start it with the new spec.
    Restart(String, NodeSpec),
    /// Stop it.
    Stop(String),
}

/// `prism start` arguments for what a node offers.
pub(crate) fn resource_args(r: &NodeResources, args: &mut Vec<String>) {
    if let Some(c) = r.num_cpus {
        args.extend(["--num-cpus".into(), c.to_string()]);
    }
    if let Some(g) = r.num_gpus {
        args.extend(["--num-gpus".into(), g.to_string()]);
    }
    if let Some(m) = &r.memory {
        args.extend(["--memory".into(), m.arg()]);
    }
    if let Some(m) = &r.object_store_memory {
        args.extend(["--object-store-memory".into(), m.arg()]);
    }
    if !r.custom.is_empty() {
        let json = serde_json::to_string(&r.custom).unwrap_or_default();
        args.extend(["--resources".into(), json]);
    }
}

/// `prism start` arguments for a node's labels.
pub(crate) fn label_args(labels: &BTreeMap<String, String>, args: &mut Vec<String>) {
    if !labels.is_empty() {
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        args.extend(["--labels".into(), l.join(",")]);
    }
}

/// The nodes the file asks for, by key (`head`, `cpu-0`, `cpu-1`, ...).
pub fn desired(c: &ClusterConfig) -> BTreeMap<String, NodeSpec> {
    let mut out = BTreeMap::new();
    let mut head = vec![
        "--head".to_string(),
        "--port".into(),
        c.head.port.to_string(),
    ];
    if let Some(p) = c.head.dashboard_port {
        head.extend(["--dashboard-port".into(), p.to_string()]);
    }
    resource_args(&c.head.resources, &mut head);
    label_args(&c.head.labels, &mut head);
    out.insert(
        "head".to_string(),
        NodeSpec {
            group: "head".into(),
            args: head,
            env: c.env.clone(),
        },
    );
    for g in &c.worker_groups {
        let spec = group_spec(c, &g.name).expect("the group is in the file");
        for i in 0..g.min {
            out.insert(format!("{}-{i}", g.name), spec.clone());
        }
    }
    out
}

/// What a node of worker group `group` is.
pub fn group_spec(c: &ClusterConfig, group: &str) -> Option<NodeSpec> {
    let g = c.worker_groups.iter().find(|g| g.name == group)?;
    let mut args = Vec::new();
    resource_args(&g.resources, &mut args);
    label_args(&g.labels, &mut args);
    Some(NodeSpec {
        group: g.name.clone(),
        args,
        env: c.env.clone(),
    })
}

/// The group of a node key (`cpu-3` → `cpu`).
pub fn group_of(key: &str) -> &str {
    if key == "head" {
        return "head";
    }
    key.rsplit_once('-').map_or(key, |(g, _)| g)
}

/// The steps from `running` (key → spec it was started with) to `c`.
pub fn plan(
    c: &ClusterConfig,
    running: &BTreeMap<String, NodeSpec>,
    no_restart: bool,
) -> Vec<Step> {
    let want = desired(c);
    let head_changes = match (running.get("head"), want.get("head")) {
        (Some(r), Some(w)) => r != w && !no_restart,
        (None, _) => true,
        _ => false,
    };
    let mut steps = Vec::new();
    for (key, spec) in &want {
        let step = match running.get(key) {
            None => Step::Start(key.clone(), spec.clone()),
            Some(_) if head_changes && key != "head" => Step::Restart(key.clone(), spec.clone()),
            Some(r) if r == spec => Step::Keep(key.clone()),
            Some(_) if no_restart => Step::Differs(key.clone()),
            Some(_) => Step::Restart(key.clone(), spec.clone()),
        };
        steps.push(step);
    }
    // Running nodes the file does not ask for by name: the autoscaler's
    // extras stay while their group allows them (LP-2).
    let mut extra: BTreeMap<&str, u32> = BTreeMap::new();
    for key in running.keys().filter(|k| !want.contains_key(*k)) {
        let group = group_of(key);
        let max = c
            .worker_groups
            .iter()
            .find(|g| g.name == group)
            .map(|g| g.max);
        let n = extra.entry(group).or_insert(0);
        *n += 1;
        let min = c
            .worker_groups
            .iter()
            .find(|g| g.name == group)
            .map_or(0, |g| g.min);
        match max {
            Some(max) if min + *n <= max && !head_changes => steps.push(Step::Keep(key.clone())),
            _ => steps.push(Step::Stop(key.clone())),
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launcher::config::ClusterConfig;

    fn config(min: u32, max: u32, cpus: f64) -> ClusterConfig {
        ClusterConfig::parse(
            "c.yaml",
            &format!(
                "cluster_name: t\nprovider: {{type: local}}\nworker_groups:\n  - {{name: cpu, min: {min}, max: {max}, resources: {{num_cpus: {cpus}}}}}\n"
            ),
        )
        .unwrap()
    }

    fn running(c: &ClusterConfig) -> BTreeMap<String, NodeSpec> {
        desired(c)
    }

    fn kinds(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Keep(k) => format!("keep {k}"),
                Step::Differs(k) => format!("differs {k}"),
                Step::Start(k, _) => format!("start {k}"),
                Step::Restart(k, _) => format!("restart {k}"),
                Step::Stop(k) => format!("stop {k}"),
            })
            .collect()
    }

    #[test]
    fn a_first_up_starts_the_head_and_min_workers() {
        let c = config(2, 4, 1.0);
        assert_eq!(
            kinds(&plan(&c, &BTreeMap::new(), false)),
            vec!["start cpu-0", "start cpu-1", "start head"]
        );
        let cpu = &desired(&c)["cpu-0"];
        assert_eq!(cpu.args, vec!["--num-cpus", "1"]);
    }

    #[test]
    fn a_second_up_keeps_everything_lp1() {
        let c = config(2, 4, 1.0);
        assert_eq!(
            kinds(&plan(&c, &running(&c), false)),
            vec!["keep cpu-0", "keep cpu-1", "keep head"]
        );
    }

    #[test]
    fn a_changed_group_restarts_its_nodes_unless_told_not_to() {
        let (old, new) = (config(2, 4, 1.0), config(2, 4, 2.0));
        assert_eq!(
            kinds(&plan(&new, &running(&old), false)),
            vec!["restart cpu-0", "restart cpu-1", "keep head"]
        );
        assert_eq!(
            kinds(&plan(&new, &running(&old), true)),
            vec!["differs cpu-0", "differs cpu-1", "keep head"]
        );
    }

    #[test]
    fn a_dead_node_is_started_again_and_a_new_head_takes_its_workers_lp3() {
        let c = config(2, 4, 1.0);
        let mut r = running(&c);
        r.remove("cpu-1");
        assert_eq!(
            kinds(&plan(&c, &r, false)),
            vec!["keep cpu-0", "start cpu-1", "keep head"]
        );
        r.remove("head");
        assert_eq!(
            kinds(&plan(&c, &r, false)),
            vec!["restart cpu-0", "start cpu-1", "start head"]
        );
    }

    #[test]
    fn extras_stay_up_to_max_and_go_with_their_group_lp2() {
        let c = config(1, 2, 1.0);
        let mut r = running(&c);
        let spec = r["cpu-0"].clone();
        r.insert("cpu-7".into(), spec.clone());
        r.insert("cpu-8".into(), spec.clone());
        r.insert("gpu-0".into(), spec);
        assert_eq!(
            kinds(&plan(&c, &r, false)),
            vec![
                "keep cpu-0",
                "keep head",
                "keep cpu-7",
                "stop cpu-8",
                "stop gpu-0"
            ]
        );
    }
}
