//! The head's actor table as a pure state machine. Invariants:
//!
//! - **AT-1** a name is held by at most one live actor per namespace;
//! - **AT-2** a dead actor never comes back (its name becomes free);
//! - **AT-3** the restart count only grows.

use crate::ids::{ActorId, NodeId};
use crate::proto::head::{ActorInfo, ActorState};
use std::collections::BTreeMap;

/// Every actor the head has seen.
#[derive(Debug, Default)]
pub struct ActorTable {
    actors: BTreeMap<ActorId, ActorInfo>,
    names: BTreeMap<(String, String), ActorId>,
}

impl ActorTable {
    /// A new actor, pending; fails if its name is taken (AT-1).
    pub fn register(&mut self, info: ActorInfo) -> Result<(), String> {
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
            if let Some(name) = &a.name {
                self.names.remove(&(a.namespace.clone(), name.clone()));
            }
        }
    }

    /// Every live actor on a node that died becomes dead.
    pub fn node_died(&mut self, node: NodeId, why: &str) -> Vec<ActorId> {
        let ids: Vec<ActorId> = self
            .actors
            .values()
            .filter(|a| a.node_id == Some(node) && a.state != ActorState::Dead)
            .map(|a| a.actor_id)
            .collect();
        for id in &ids {
            let reason = format!("its node {node} died ({why})");
            self.update(*id, ActorState::Dead, None, 0, Some(reason));
        }
        ids
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
        }
    }

    #[test]
    fn at1_names_are_unique_among_live_actors_and_freed_by_death() {
        let mut t = ActorTable::default();
        let a = info(Some("counter"));
        t.register(a.clone()).unwrap();
        let err = t.register(info(Some("counter"))).unwrap_err();
        assert!(err.contains("already exists"), "{err}");
        t.update(a.actor_id, ActorState::Dead, None, 0, Some("killed".into()));
        t.register(info(Some("counter"))).unwrap();
    }

    #[test]
    fn at2_at3_dead_is_final_and_restarts_only_grow() {
        let mut t = ActorTable::default();
        let a = info(None);
        let n = NodeId::random();
        t.register(a.clone()).unwrap();
        t.update(
            a.actor_id,
            ActorState::Alive,
            Some((n, "x".into())),
            2,
            None,
        );
        t.update(a.actor_id, ActorState::Restarting, None, 1, None);
        assert_eq!(t.get(a.actor_id).unwrap().restarts, 2);
        assert_eq!(t.node_died(n, "missed heartbeats"), vec![a.actor_id]);
        t.update(a.actor_id, ActorState::Alive, None, 3, None);
        let got = t.get(a.actor_id).unwrap();
        assert_eq!(got.state, ActorState::Dead);
        assert!(got.death_reason.as_deref().unwrap().contains("died"));
    }
}
