//! The head's actor table as a pure state machine. Invariants:
//!
//! - **AT-1** a name is held by at most one live actor per namespace;
//! - **AT-2** a dead actor never comes back (its name becomes free);
//! - **AT-3** the restart count only grows;
//! - **AT-4** an actor whose node dies restarts elsewhere only while it has
//!   restarts left (`restarts < max_restarts`) and its placement allows
//!   another node; it then has no node until a raylet reports it again.
//! - **AT-5** a restart under way is tracked until a node reports it up
//!   (`waiting`): one no live node can take waits for one, as does one
//!   whose node went away before it came up; the head core places it when
//!   a node can, or declares it dead after its deadline, which counts from
//!   when it first waited, however often it is placed again. One whose
//!   node gave no answer waits for that node's report, or its death.

use crate::ids::{ActorId, NodeId};
use crate::proto::head::{ActorInfo, ActorState};
use crate::proto::task::PeerSubmit;
use crate::proto::task::{TaskKind, WireStrategy};
use std::collections::BTreeMap;
use std::time::Instant;

/// Every actor the head has seen.
#[derive(Debug, Default)]
pub struct ActorTable {
    actors: BTreeMap<ActorId, ActorInfo>,
    names: BTreeMap<(String, String), ActorId>,
    /// How to create each live actor again (its job and constructor task).
    creates: BTreeMap<ActorId, PeerSubmit>,
    /// Actors whose durable row changed.
    dirty: std::collections::BTreeSet<ActorId>,
    /// AT-5: restarts under way that no node reported up yet.
    waiting: BTreeMap<ActorId, WaitingRestart>,
}

/// AT-5: a restart under way that no node has reported up.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitingRestart {
    /// Its restart number.
    pub n: u32,
    /// Since when it waits for a node (unchanged when it is refused and
    /// placed again), or, unanswered, for its report.
    pub since: Instant,
    /// Why it waits.
    pub why: String,
    /// What it waits for.
    pub on: RestartWait,
}

/// What a restart under way waits for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RestartWait {
    /// A live node that can take it: the head places it there.
    Placement,
    /// The answer of the node it was sent to.
    Sent(NodeId),
    /// A report from the node it went to (`None`: unknown, for a head
    /// recovered mid-restart), which gave no answer: it may run there
    /// still. Placed again if that node dies.
    Report(Option<NodeId>),
}

/// What becomes of an actor whose node died.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeLoss {
    /// It is dead for good (no restarts left, or it cannot move).
    Dead(ActorId),
    /// Run its constructor again on another node (AT-4): the creation is
    /// marked with its new restart count.
    Restart(ActorId, Box<PeerSubmit>),
}

impl ActorTable {
    /// A new actor, pending; fails if its name is taken (AT-1). `create`
    /// is what recreates it elsewhere if its node dies.
    pub fn register(&mut self, info: ActorInfo, create: Option<PeerSubmit>) -> Result<(), String> {
        if let Some(name) = &info.name {
            let key = (info.namespace.clone(), name.clone());
            if let Some(other) = self.names.get(&key) {
                if *other != info.actor_id {
                    return Err(format!(
                        "an actor named {name:?} already exists in namespace {:?} ({other})",
                        info.namespace
                    ));
                }
            }
            self.names.insert(key, info.actor_id);
        }
        // Kept only for an actor that was accepted (a refused one never runs).
        if let Some(c) = create {
            self.creates.entry(info.actor_id).or_insert(c);
        }
        self.dirty.insert(info.actor_id);
        self.actors.entry(info.actor_id).or_insert(info);
        Ok(())
    }

    /// A state change reported by the raylet hosting it.
    pub fn update(
        &mut self,
        id: ActorId,
        state: ActorState,
        node: Option<(NodeId, String)>,
        restarts: u32,
        reason: Option<String>,
    ) {
        let Some(a) = self.actors.get_mut(&id) else {
            return;
        };
        if a.state == ActorState::Dead {
            return; // AT-2
        }
        self.dirty.insert(id);
        a.state = state;
        if let Some((n, addr)) = node {
            a.node_id = Some(n);
            a.node_address = addr;
        }
        a.restarts = a.restarts.max(restarts); // AT-3
        if reason.is_some() {
            a.death_reason = reason;
        }
        if state == ActorState::Dead {
            self.creates.remove(&id);
            if let Some(name) = &a.name {
                self.names.remove(&(a.namespace.clone(), name.clone()));
            }
        }
    }

    /// Every live actor on a node that died restarts elsewhere (AT-4) or
    /// becomes dead; either way its reason names the node's loss.
    pub fn node_died(&mut self, node: NodeId, why: &str) -> Vec<NodeLoss> {
        let ids: Vec<ActorId> = self
            .actors
            .values()
            .filter(|a| a.node_id == Some(node) && a.state != ActorState::Dead)
            .map(|a| a.actor_id)
            .collect();
        let mut out = Vec::new();
        for id in ids {
            let reason = format!("its node {node} died ({why})");
            match self.restart_elsewhere(id, node, &reason) {
                Some(create) => out.push(NodeLoss::Restart(id, Box::new(create))),
                None => {
                    self.update(id, ActorState::Dead, None, 0, Some(reason));
                    out.push(NodeLoss::Dead(id));
                }
            }
        }
        out
    }

    /// A restart could not be started: the actor is dead, with the loss
    /// that caused the restart and `why`.
    pub fn restart_failed(&mut self, id: ActorId, why: &str) {
        let lost = self.get(id).and_then(|a| a.death_reason.clone());
        let reason = match lost {
            Some(l) => format!("{l}; {why}"),
            None => why.to_string(),
        };
        self.update(id, ActorState::Dead, None, 0, Some(reason));
    }

    /// Marks `id` restarting with no node and returns its next creation,
    /// if it has restarts left and may leave `node`.
    fn restart_elsewhere(&mut self, id: ActorId, node: NodeId, reason: &str) -> Option<PeerSubmit> {
        let restarts = self.actors.get(&id)?.restarts;
        let create = self.creates.get(&id)?;
        self.dirty.insert(id);
        let TaskKind::CreateActor(c) = &create.task.kind else {
            return None;
        };
        let done = restarts.max(c.restarts);
        let movable = match create.task.strategy {
            WireStrategy::NodeAffinity { node: n, soft } => soft || n != node,
            WireStrategy::Bundle { .. } => false,
            _ => true,
        };
        if done >= c.max_restarts || !movable {
            return None;
        }
        let create = self.restart_again(id, done + 1)?;
        let a = self.actors.get_mut(&id)?;
        a.state = ActorState::Restarting;
        a.node_id = None;
        a.node_address.clear();
        a.restarts = done + 1; // AT-3
        a.death_reason = Some(reason.to_string());
        Some(create)
    }

    /// A table recovered from durable rows (each actor with what recreates it).
    pub fn restore(rows: Vec<(ActorInfo, Option<PeerSubmit>)>) -> ActorTable {
        let mut t = ActorTable::default();
        for (info, create) in rows {
            if info.state != ActorState::Dead {
                if let Some(name) = &info.name {
                    t.names
                        .insert((info.namespace.clone(), name.clone()), info.actor_id);
                }
            }
            if let Some(c) = create {
                t.creates.insert(info.actor_id, c);
            }
            t.actors.insert(info.actor_id, info);
        }
        t
    }

    /// AT-5: restart number `n` of `id` now waits `on` what is given,
    /// because of `why`. Being placed, and waiting for a node again after
    /// a refusal, keep its first `since` (its deadline does not start
    /// again); a wait for a report, or one after it, starts from `now`.
    pub fn wait(&mut self, id: ActorId, n: u32, now: Instant, why: String, on: RestartWait) {
        let placing = |o: RestartWait| matches!(o, RestartWait::Placement | RestartWait::Sent(_));
        let since = match self.waiting.get(&id) {
            Some(w) if w.n == n && placing(w.on) && placing(on) => w.since,
            _ => now,
        };
        let w = WaitingRestart { n, since, why, on };
        self.waiting.insert(id, w);
    }

    /// AT-5: the restarts under way that no node reported up.
    pub fn waiting(&self) -> Vec<(ActorId, WaitingRestart)> {
        let rows = self.waiting.iter();
        rows.map(|(a, w)| (*a, w.clone())).collect()
    }

    /// AT-5: what `id`'s restart under way waits for.
    pub fn waiting_for(&self, id: ActorId) -> Option<&WaitingRestart> {
        self.waiting.get(&id)
    }

    /// AT-5, recovered: the actors a restart was under way for (restarting,
    /// on no node), each waiting, from `now`, for a raylet to report it up.
    pub fn recovered_mid_restart(&mut self, now: Instant) {
        let mid: Vec<(ActorId, u32)> = self
            .actors
            .values()
            .filter(|a| a.state == ActorState::Restarting && a.node_id.is_none())
            .map(|a| (a.actor_id, a.restarts))
            .collect();
        for (id, n) in mid {
            let why = "the head restarted while the actor's restart was under way".to_string();
            self.wait(id, n, now, why, RestartWait::Report(None));
        }
    }

    /// AT-5: `id`'s restart is no longer under way (up, or given up).
    pub fn stop_waiting(&mut self, id: ActorId) {
        self.waiting.remove(&id);
    }

    /// `id`'s creation as restart number `n` (a first restart, or one
    /// placed again when its node went away before it came up).
    pub fn restart_again(&self, id: ActorId, n: u32) -> Option<PeerSubmit> {
        let mut create = self.creates.get(&id)?.clone();
        let TaskKind::CreateActor(c) = &mut create.task.kind else {
            return None;
        };
        c.restarts = n;
        create.task.attempt = 0;
        // The head picked the node: it runs there or queues, never moves on.
        create.task.spilled = true;
        Some(create)
    }

    /// What recreates `id` on another node, if it may move.
    pub fn creation(&self, id: ActorId) -> Option<&PeerSubmit> {
        self.creates.get(&id)
    }

    /// Actors whose durable row changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<ActorId> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// One actor.
    pub fn get(&self, id: ActorId) -> Option<&ActorInfo> {
        self.actors.get(&id)
    }

    /// A live actor by name.
    pub fn by_name(&self, namespace: &str, name: &str) -> Option<&ActorInfo> {
        self.names
            .get(&(namespace.to_string(), name.to_string()))
            .and_then(|id| self.actors.get(id))
    }

    /// Every actor.
    pub fn list(&self) -> Vec<ActorInfo> {
        self.actors.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: Option<&str>) -> ActorInfo {
        ActorInfo {
            actor_id: ActorId::random(),
            class: "C".into(),
            name: name.map(String::from),
            namespace: "default".into(),
            state: ActorState::Pending,
            node_id: None,
            node_address: String::new(),
            restarts: 0,
            death_reason: None,
            detached: false,
            job_id: crate::ids::JobId::random(),
            max_task_retries: 0,
            residency: None,
        }
    }

    fn create(a: &ActorInfo, max_restarts: u32, strategy: WireStrategy) -> PeerSubmit {
        use crate::proto::task::{ActorCreate, JobSpec, TaskSpec};
        let c = ActorCreate {
            actor_id: a.actor_id,
            name: a.name.clone(),
            namespace: a.namespace.clone(),
            detached: false,
            max_restarts,
            max_task_retries: 0,
            max_concurrency: 1,
            restarts: 0,
        };
        let mut task = TaskSpec::new(
            crate::ids::TaskId(a.actor_id.0),
            a.job_id,
            "C",
            "C",
            TaskKind::CreateActor(c),
        );
        task.strategy = strategy;
        PeerSubmit {
            job: JobSpec {
                job_id: a.job_id,
                binary: String::new(),
                binary_hash: [0; 32],
                binary_len: 0,
                cwd: String::new(),
                env: Vec::new(),
                driver_node: None,
            },
            task,
        }
    }

    fn restarts_of(loss: &NodeLoss) -> u32 {
        match loss {
            NodeLoss::Restart(_, c) => match &c.task.kind {
                TaskKind::CreateActor(c) => c.restarts,
                _ => panic!("not a creation"),
            },
            NodeLoss::Dead(_) => panic!("dead: {loss:?}"),
        }
    }

    #[test]
    fn at4_a_lost_node_restarts_actors_with_restarts_left_elsewhere() {
        let mut t = ActorTable::default();
        let (n1, n2) = (NodeId::random(), NodeId::random());
        let a = info(Some("kept"));
        t.register(a.clone(), Some(create(&a, 1, WireStrategy::Hybrid)))
            .unwrap();
        t.update(
            a.actor_id,
            ActorState::Alive,
            Some((n1, "x".into())),
            0,
            None,
        );
        let losses = t.node_died(n1, "missed heartbeats");
        assert_eq!(losses.len(), 1);
        assert_eq!(restarts_of(&losses[0]), 1);
        let NodeLoss::Restart(_, c) = &losses[0] else {
            unreachable!()
        };
        assert!(c.task.spilled, "the head's choice is final");
        let got = t.get(a.actor_id).unwrap();
        assert_eq!(got.state, ActorState::Restarting);
        assert_eq!(got.node_id, None, "no node until a raylet reports it");
        assert!(got
            .death_reason
            .as_deref()
            .unwrap()
            .contains(&n1.to_string()));
        assert_eq!(t.by_name("default", "kept").unwrap().actor_id, a.actor_id);
        // Back on n2; losing n2 too exhausts its one restart.
        t.update(
            a.actor_id,
            ActorState::Alive,
            Some((n2, "y".into())),
            1,
            None,
        );
        assert_eq!(
            t.node_died(n2, "missed heartbeats"),
            vec![NodeLoss::Dead(a.actor_id)]
        );
        assert_eq!(t.get(a.actor_id).unwrap().state, ActorState::Dead);
    }

    #[test]
    fn at4_pinned_or_exhausted_actors_die_with_their_node() {
        let mut t = ActorTable::default();
        let n = NodeId::random();
        let pinned = info(None);
        let strategy = WireStrategy::NodeAffinity {
            node: n,
            soft: false,
        };
        t.register(pinned.clone(), Some(create(&pinned, 3, strategy)))
            .unwrap();
        let none = info(None);
        t.register(none.clone(), Some(create(&none, 0, WireStrategy::Hybrid)))
            .unwrap();
        let used = info(None);
        t.register(used.clone(), Some(create(&used, 2, WireStrategy::Hybrid)))
            .unwrap();
        for a in [&pinned, &none] {
            t.update(
                a.actor_id,
                ActorState::Alive,
                Some((n, "x".into())),
                0,
                None,
            );
        }
        // Two same-node restarts already spent both of `used`'s restarts.
        t.update(
            used.actor_id,
            ActorState::Alive,
            Some((n, "x".into())),
            2,
            None,
        );
        let mut losses = t.node_died(n, "gone");
        losses.sort_by_key(|l| format!("{l:?}"));
        assert_eq!(losses.len(), 3);
        assert!(losses.iter().all(|l| matches!(l, NodeLoss::Dead(_))));
    }

    #[test]
    fn at1_names_are_unique_among_live_actors_and_freed_by_death() {
        let mut t = ActorTable::default();
        let a = info(Some("counter"));
        t.register(a.clone(), None).unwrap();
        let err = t.register(info(Some("counter")), None).unwrap_err();
        assert!(err.contains("already exists"), "{err}");
        t.update(a.actor_id, ActorState::Dead, None, 0, Some("killed".into()));
        t.register(info(Some("counter")), None).unwrap();
    }

    #[test]
    fn at2_at3_dead_is_final_and_restarts_only_grow() {
        let mut t = ActorTable::default();
        let a = info(None);
        let n = NodeId::random();
        t.register(a.clone(), None).unwrap();
        t.update(
            a.actor_id,
            ActorState::Alive,
            Some((n, "x".into())),
            2,
            None,
        );
        t.update(a.actor_id, ActorState::Restarting, None, 1, None);
        assert_eq!(t.get(a.actor_id).unwrap().restarts, 2);
        assert_eq!(
            t.node_died(n, "missed heartbeats"),
            vec![NodeLoss::Dead(a.actor_id)]
        );
        t.update(a.actor_id, ActorState::Alive, None, 3, None);
        let got = t.get(a.actor_id).unwrap();
        assert_eq!(got.state, ActorState::Dead);
        assert!(got.death_reason.as_deref().unwrap().contains("died"));
    }
}
