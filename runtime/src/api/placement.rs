//! Placement groups: gang reservations of resource bundles across nodes,
//! like Ray's `placement_group`. The head reserves every bundle or none
//! (two-phase across raylets); tasks and actors then run inside a bundle
//! with `.placement_group(&pg, index)` and draw on its resources only.
//!
//! ```no_run
//! use prism::{Bundle, PlacementGroup, PlacementStrategy};
//! # fn main() -> prism::Result<()> {
//! let pg = PlacementGroup::create(
//!     vec![Bundle::new().cpus(1.0); 2],
//!     PlacementStrategy::StrictSpread,
//! )?;
//! pg.ready(std::time::Duration::from_secs(10))?; // or: why it is not
//! // ... f::options().placement_group(&pg, 0).remote(..)
//! pg.remove()?;
//! # Ok(()) }
//! ```

use super::core::{current, Core};
use super::options::qty;
use super::{Error, Result};
use crate::ids::{NodeId, PlacementGroupId};
use crate::proto::common::Resources;
use crate::proto::head::HeadResponse;
use crate::proto::placement::{PgCreate, PgInfo, PgRequest, PgState};
use crate::proto::task::{LocalRequest, WireStrategy};
use dashmap::DashMap;
use prism_scheduler::{Quantity, ResourceSet, CPU, GPU, MEMORY};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

pub use crate::proto::placement::PgStrategyWire as PlacementStrategy;

/// Where this process last saw each group's bundles.
static PLACED: LazyLock<DashMap<PlacementGroupId, Vec<Option<NodeId>>>> =
    LazyLock::new(DashMap::new);

/// Groups this process removed.
static REMOVED: LazyLock<dashmap::DashSet<PlacementGroupId>> = LazyLock::new(Default::default);

/// How long a task placed in a group that is not created yet waits for it.
const PLACE_WAIT: Duration = Duration::from_secs(600);

/// One bundle: resources reserved together on one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bundle(ResourceSet);

impl Bundle {
    /// An empty bundle; add resources with the builders.
    pub fn new() -> Bundle {
        Bundle::default()
    }

    /// CPUs.
    pub fn cpus(mut self, n: f64) -> Self {
        self.0.set(CPU, qty(n));
        self
    }

    /// GPUs (whole GPUs get distinct indices).
    pub fn gpus(mut self, n: f64) -> Self {
        self.0.set(GPU, qty(n));
        self
    }

    /// Memory in bytes.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.0.set(MEMORY, Quantity::from_raw(bytes as i64));
        self
    }

    /// A custom resource.
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.0.set(name, qty(amount));
        self
    }
}

/// A handle to a placement group; cheap to copy and passable to tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PlacementGroup {
    id: PlacementGroupId,
    bundles: u32,
}

fn ask(core: &Arc<Core>, request: PgRequest, timeout: Duration) -> Result<HeadResponse> {
    core.ask_raylet(
        "placement_group",
        timeout + Duration::from_secs(30),
        |request_id| LocalRequest::PlacementGroup {
            request_id,
            request,
        },
    )
}

impl PlacementGroup {
    /// Asks the head to reserve `bundles` with `strategy`; returns at once
    /// (use [`PlacementGroup::ready`] to wait). Lives until removed or its
    /// job ends.
    pub fn create(bundles: Vec<Bundle>, strategy: PlacementStrategy) -> Result<PlacementGroup> {
        Self::create_named("", bundles, strategy, false)
    }

    /// [`PlacementGroup::create`] with a name and a lifetime: `detached`
    /// groups outlive their job.
    pub fn create_named(
        name: &str,
        bundles: Vec<Bundle>,
        strategy: PlacementStrategy,
        detached: bool,
    ) -> Result<PlacementGroup> {
        let core = current()?;
        let pg = PlacementGroup {
            id: PlacementGroupId::random(),
            bundles: bundles.len() as u32,
        };
        // What the head would refuse, refused here (creation is sent
        // without waiting, like Ray's).
        if bundles.is_empty() {
            return Err(Error::PlacementGroup {
                pg: pg.id,
                detail: "a placement group needs at least one bundle".into(),
            });
        }
        if let Some(i) = bundles.iter().position(|b| b.0.is_empty()) {
            return Err(Error::PlacementGroup {
                pg: pg.id,
                detail: format!("bundle {i} reserves nothing"),
            });
        }
        let req = PgRequest::Create(PgCreate {
            pg: pg.id,
            name: name.to_string(),
            bundles: bundles.iter().map(|b| Resources::from(&b.0)).collect(),
            strategy,
            job: core.job_id,
            detached,
        });
        core.send(&LocalRequest::PlacementGroup {
            // Nobody waits for the answer; an unknown id is ignored. The
            // head accepts a removal that overtakes its creation.
            request_id: crate::ids::TaskId::random(),
            request: req,
        })?;
        Ok(pg)
    }

    /// Its id.
    pub fn id(&self) -> PlacementGroupId {
        self.id
    }

    /// How many bundles it has.
    pub fn bundle_count(&self) -> u32 {
        self.bundles
    }

    fn expect_info(&self, resp: HeadResponse) -> Result<PgInfo> {
        let err = |detail: String| Error::PlacementGroup {
            pg: self.id,
            detail,
        };
        match resp {
            HeadResponse::PlacementGroupWaited {
                group,
                also_created,
            } => {
                for g in also_created {
                    PLACED.insert(g.pg, g.nodes);
                }
                self.expect_info(HeadResponse::PlacementGroup(group))
            }
            HeadResponse::PlacementGroup(Some(info)) => {
                PLACED.insert(self.id, info.nodes.clone());
                Ok(info)
            }
            HeadResponse::PlacementGroup(None) => Err(err(
                "unknown to the head (never created, or its creation has not arrived)".into(),
            )),
            HeadResponse::Error { message, .. } => Err(err(message)),
            other => Err(err(format!("unexpected answer {other:?}"))),
        }
    }

    /// Waits until every bundle is reserved. Never waits past `timeout`:
    /// then the error says why the group is still pending; an infeasible
    /// or removed group fails at once with the head's reason.
    pub fn ready(&self, timeout: Duration) -> Result<()> {
        let core = current()?;
        let placed = PLACED
            .get(&self.id)
            .is_some_and(|n| n.iter().all(Option::is_some));
        if placed {
            // Seen created (by `create` or an earlier `ready`).
            return Ok(());
        }
        let req = PgRequest::Wait {
            pg: self.id,
            timeout_ms: timeout.as_millis() as u64,
        };
        let info = self.expect_info(ask(&core, req, timeout)?)?;
        let why = info.reason.clone().unwrap_or_default();
        let detail = match info.state {
            PgState::Created => return Ok(()),
            PgState::Infeasible => why,
            PgState::Removed => format!("removed: {why}"),
            PgState::Pending | PgState::Rescheduling => format!(
                "still {} after {} ms: {why}",
                if info.state == PgState::Pending {
                    "pending"
                } else {
                    "rescheduling"
                },
                timeout.as_millis()
            ),
        };
        Err(Error::PlacementGroup {
            pg: self.id,
            detail,
        })
    }

    /// Its row in the head's table now (state, reason, nodes).
    pub fn info(&self) -> Result<PgInfo> {
        let core = current()?;
        self.expect_info(ask(&core, PgRequest::Get { pg: self.id }, Duration::ZERO)?)
    }

    /// Frees every bundle; tasks and actors running in it are killed.
    /// Like Ray's, it returns at once: the head gives the bundles back in
    /// the background. Removing a group twice from one process is an error.
    pub fn remove(&self) -> Result<()> {
        let core = current()?;
        PLACED.remove(&self.id);
        if !REMOVED.insert(self.id) {
            return Err(Error::PlacementGroup {
                pg: self.id,
                detail: "already removed".into(),
            });
        }
        core.send(&LocalRequest::PlacementGroup {
            // Nobody waits for the answer; an unknown id is ignored.
            request_id: crate::ids::TaskId::random(),
            request: PgRequest::Remove { pg: self.id },
        })
    }

    /// The strategy that places a task or actor in bundle `index`: where
    /// this process last saw it, else after waiting for the group.
    pub(crate) fn strategy_for(&self, index: u32) -> Result<WireStrategy> {
        if index >= self.bundles {
            return Err(Error::PlacementGroup {
                pg: self.id,
                detail: format!("has {} bundles; there is no bundle {index}", self.bundles),
            });
        }
        let known = PLACED
            .get(&self.id)
            .and_then(|n| n.get(index as usize).copied().flatten());
        let node = match known {
            Some(n) => n,
            None => {
                self.ready(PLACE_WAIT)?;
                PLACED
                    .get(&self.id)
                    .and_then(|n| n.get(index as usize).copied().flatten())
                    .ok_or_else(|| Error::PlacementGroup {
                        pg: self.id,
                        detail: format!("bundle {index} has no node"),
                    })?
            }
        };
        Ok(WireStrategy::Bundle {
            pg: self.id,
            index,
            node,
        })
    }
}

/// Every placement group the head knows (`prism list placement-groups`).
pub fn list_placement_groups() -> Result<Vec<PgInfo>> {
    let core = current()?;
    match ask(&core, PgRequest::List, Duration::ZERO)? {
        HeadResponse::PlacementGroups(v) => Ok(v),
        other => Err(Error::Init(format!("unexpected answer {other:?}"))),
    }
}

/// A live (not removed) placement group by name, like Ray's
/// `get_placement_group`; useful for detached groups.
pub fn get_placement_group(name: &str) -> Result<PlacementGroup> {
    list_placement_groups()?
        .into_iter()
        .find(|g| g.name == name && g.state != PgState::Removed)
        .map(|g| {
            PLACED.insert(g.pg, g.nodes.clone());
            PlacementGroup {
                id: g.pg,
                bundles: g.bundles.len() as u32,
            }
        })
        .ok_or_else(|| Error::Init(format!("no live placement group named {name:?}")))
}
