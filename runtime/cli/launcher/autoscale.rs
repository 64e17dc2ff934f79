//! The autoscaler's decisions: a pure function of the cluster file, the
//! nodes (what each offers, whether it is idle and since when, whether it
//! holds actors or objects), the demand the raylets report (queued and
//! infeasible resource shapes) and the time. Effects are data
//! ([`Decision`]); `prism autoscale` carries them out.
//!
//! Invariants:
//!
//! - **AS-1** a group is grown only for demand that one of its nodes can
//!   hold and that no running or starting node can take, never past `max`,
//!   at most `max(1, upscaling_speed × running)` nodes at a time;
//! - **AS-2** a node is removed only after it has been idle, holding no
//!   actor and no object, for `idle_timeout_s` without a break, and never
//!   below its group's `min` (the head never);
//! - **AS-3** no thrashing: demand that comes and goes faster than the idle
//!   timeout never removes a node (so never starts one again).

use super::config::{ClusterConfig, WorkerGroup};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Resources by name (`CPU`, `GPU`, `memory`, custom).
pub type Shape = BTreeMap<String, f64>;

/// One node as the autoscaler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// Its launcher key (`cpu-0`, `head`).
    pub key: String,
    /// Its group (`head` for the head).
    pub group: String,
    /// What it has free now.
    pub available: Shape,
    /// Nothing runs there and it holds no actor and no object.
    pub idle: bool,
}

/// Demand the raylets report: `count` of `shape` waiting.
#[derive(Debug, Clone, PartialEq)]
pub struct DemandView {
    /// What one unit needs.
    pub shape: Shape,
    /// How many wait.
    pub count: u32,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start `count` nodes of `group`.
    Launch {
        /// The group.
        group: String,
        /// How many.
        count: u32,
    },
    /// Stop node `key`.
    Terminate {
        /// The node.
        key: String,
    },
}

/// What the autoscaler remembers between decisions.
#[derive(Debug, Default)]
pub struct Scaler {
    idle_since: BTreeMap<String, Instant>,
    /// Nodes asked for and not yet seen, per group, with when.
    launching: BTreeMap<String, Vec<Instant>>,
}

/// How long a launched node may take to show up before it counts as lost.
const LAUNCH_GRACE: Duration = Duration::from_secs(60);

/// Whether `have` covers `need`.
fn fits(need: &Shape, have: &Shape) -> bool {
    need.iter()
        .all(|(k, v)| *v <= 0.0 || have.get(k).copied().unwrap_or(0.0) + 1e-9 >= *v)
}

/// What a fresh node of `g` offers (what the file says it offers).
pub fn group_shape(g: &WorkerGroup) -> Shape {
    let mut s = Shape::new();
    if let Some(c) = g.resources.num_cpus {
        s.insert("CPU".into(), c);
    }
    if let Some(n) = g.resources.num_gpus {
        s.insert("GPU".into(), n as f64);
    }
    for (k, v) in &g.resources.custom {
        s.insert(k.clone(), *v);
    }
    s
}

impl Scaler {
    /// The decisions at `now`.
    pub fn decide(
        &mut self,
        c: &ClusterConfig,
        nodes: &[NodeView],
        demand: &[DemandView],
        now: Instant,
    ) -> Vec<Decision> {
        let mut out = Vec::new();
        // A launch is done when its node arrives ([`Scaler::arrived`]);
        // one not seen within the grace is forgotten (its node failed).
        for times in self.launching.values_mut() {
            times.retain(|t| now.duration_since(*t) < LAUNCH_GRACE);
        }
        let running = |g: &str| nodes.iter().filter(|n| n.group == g).count() as u32;
        let starting = |s: &Scaler, g: &str| s.launching.get(g).map_or(0, |v| v.len()) as u32;

        // Up (AS-1): demand no node can take now, placed on what exists,
        // then on nodes being started, then on new nodes.
        let mut free: Vec<Shape> = nodes.iter().map(|n| n.available.clone()).collect();
        for g in &c.worker_groups {
            for _ in 0..starting(self, &g.name) {
                free.push(group_shape(g));
            }
        }
        let mut wanted: BTreeMap<String, u32> = BTreeMap::new();
        for d in demand {
            for _ in 0..d.count {
                if let Some(slot) = free.iter_mut().find(|f| fits(&d.shape, f)) {
                    for (k, v) in &d.shape {
                        *slot.entry(k.clone()).or_insert(0.0) -= v;
                    }
                    continue;
                }
                let Some(g) = c.worker_groups.iter().find(|g| {
                    fits(&d.shape, &group_shape(g))
                        && running(&g.name)
                            + starting(self, &g.name)
                            + wanted.get(&g.name).copied().unwrap_or(0)
                            < g.max
                }) else {
                    continue; // no group can hold it: it stays infeasible
                };
                *wanted.entry(g.name.clone()).or_insert(0) += 1;
                let mut slot = group_shape(g);
                for (k, v) in &d.shape {
                    *slot.entry(k.clone()).or_insert(0.0) -= v;
                }
                free.push(slot);
            }
        }
        let total_running = nodes.len() as f64;
        let step = ((c.autoscaler.upscaling_speed * total_running).floor() as u32).max(1);
        for (group, n) in wanted {
            let count = n.min(step);
            self.launching
                .entry(group.clone())
                .or_default()
                .extend(std::iter::repeat_n(now, count as usize));
            out.push(Decision::Launch { group, count });
        }

        // Down (AS-2): idle long enough, above min.
        let timeout = Duration::from_secs(c.autoscaler.idle_timeout_s);
        self.idle_since
            .retain(|k, _| nodes.iter().any(|n| &n.key == k));
        let mut removable: BTreeMap<&str, u32> = BTreeMap::new();
        for g in &c.worker_groups {
            removable.insert(&g.name, running(&g.name).saturating_sub(g.min));
        }
        for n in nodes {
            if !n.idle || n.group == "head" {
                self.idle_since.remove(&n.key);
                continue;
            }
            let since = *self.idle_since.entry(n.key.clone()).or_insert(now);
            let left = removable.get_mut(n.group.as_str());
            if now.duration_since(since) >= timeout {
                if let Some(left) = left.filter(|l| **l > 0) {
                    *left -= 1;
                    self.idle_since.remove(&n.key);
                    out.push(Decision::Terminate { key: n.key.clone() });
                }
            }
        }
        out
    }

    /// A node of `group` showed up: one launch is done.
    pub fn arrived(&mut self, group: &str) {
        if let Some(v) = self.launching.get_mut(group) {
            if !v.is_empty() {
                v.remove(0);
            }
        }
    }
}

#[cfg(test)]
mod tests;
