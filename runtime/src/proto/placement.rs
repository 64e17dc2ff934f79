//! Placement groups on the wire: what a driver asks the head, the head's
//! table rows, and the two-phase bundle operations the head sends raylets
//! (on a stream of the raylet's peer endpoint, as [`super::raylet::PeerRequest::Bundles`]).

use super::common::Resources;
use crate::ids::{JobId, NodeId, PlacementGroupId};
use rkyv::{Archive, Deserialize, Serialize};

/// How a group's bundles are laid out (Ray's four strategies).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PgStrategyWire {
    /// As few nodes as possible, best effort.
    Pack,
    /// As many nodes as possible, best effort.
    Spread,
    /// All bundles on one node.
    StrictPack,
    /// Every bundle on a different node.
    StrictSpread,
}

impl From<PgStrategyWire> for prism_scheduler::PgStrategy {
    fn from(s: PgStrategyWire) -> Self {
        match s {
            PgStrategyWire::Pack => prism_scheduler::PgStrategy::Pack,
            PgStrategyWire::Spread => prism_scheduler::PgStrategy::Spread,
            PgStrategyWire::StrictPack => prism_scheduler::PgStrategy::StrictPack,
            PgStrategyWire::StrictSpread => prism_scheduler::PgStrategy::StrictSpread,
        }
    }
}

/// A request to create a group.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PgCreate {
    /// Chosen by the client, so a retried request is idempotent.
    pub pg: PlacementGroupId,
    /// Display name (may be empty).
    pub name: String,
    /// The bundles, in index order.
    pub bundles: Vec<Resources>,
    /// The layout.
    pub strategy: PgStrategyWire,
    /// The creating job (its end removes the group unless detached).
    pub job: JobId,
    /// Lives beyond its creator's job.
    pub detached: bool,
}

/// A group's lifecycle state.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PgState {
    /// Waiting for resources (the reason says which).
    Pending,
    /// Every bundle reserved.
    Created,
    /// A node holding some bundles died; they are being placed again.
    Rescheduling,
    /// No cluster of these nodes can hold it (the reason says why); it is
    /// tried again when nodes join.
    Infeasible,
    /// Removed: nothing reserved.
    Removed,
}

/// One row of the head's placement-group table.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, serde::Serialize)]
pub struct PgInfo {
    /// The group.
    pub pg: PlacementGroupId,
    /// Its name.
    pub name: String,
    /// Its layout.
    pub strategy: PgStrategyWire,
    /// Its state.
    pub state: PgState,
    /// Why it is pending, infeasible, or was removed.
    pub reason: Option<String>,
    /// The bundles.
    #[serde(skip)]
    pub bundles: Vec<Resources>,
    /// Where each bundle is reserved (`None`: not placed).
    pub nodes: Vec<Option<NodeId>>,
    /// Those nodes' QUIC addresses (empty when not placed).
    pub addresses: Vec<String>,
    /// The creating job.
    pub job: JobId,
    /// Lives beyond its creator's job.
    pub detached: bool,
    /// Times its bundles were placed again after a node died.
    pub reschedules: u32,
}

/// One bundle the head asks a raylet to reserve.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct BundleSpec {
    /// Its index in the group.
    pub index: u32,
    /// What it reserves.
    pub resources: Resources,
}

/// The head's two-phase bundle protocol (GCS-style): `Prepare` reserves
/// resources that nothing may use yet, `Commit` makes them usable by the
/// group's tasks and actors, `Return` gives back everything the group holds
/// on the node (prepared or committed) and kills what runs in it. A group on
/// one node is prepared and committed in one step (`commit: true`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum BundleOp {
    /// Reserve these bundles, all or none.
    Prepare {
        /// The group.
        pg: PlacementGroupId,
        /// Its bundles placed on this node.
        bundles: Vec<BundleSpec>,
        /// Commit at once (the whole group is on this node).
        commit: bool,
    },
    /// Make the prepared bundles usable.
    Commit {
        /// The group.
        pg: PlacementGroupId,
    },
    /// Give back everything of the group on this node.
    Return {
        /// The group.
        pg: PlacementGroupId,
        /// Why (reported to the tasks and actors killed).
        reason: String,
        /// Only these bundles (empty: all of the group's bundles here).
        only: Vec<u32>,
    },
}

/// A raylet's answer to a [`BundleOp`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum BundleReply {
    /// Done; what is free on the node now.
    Done {
        /// Free resources after the operation.
        available: Resources,
    },
    /// Refused, with the reason (nothing changed).
    Refused {
        /// Why.
        reason: String,
    },
}

/// What drivers and workers ask the head about placement groups (relayed
/// by their raylet as [`super::task::LocalRequest::PlacementGroup`]).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum PgRequest {
    /// Reserve a gang of bundles; answered at once (pending).
    Create(PgCreate),
    /// One placement group by id.
    Get {
        /// The group.
        pg: PlacementGroupId,
    },
    /// Answers when the group is created, infeasible or removed, or after
    /// `timeout_ms` (then still pending, with the reason).
    Wait {
        /// The group.
        pg: PlacementGroupId,
        /// The longest wait.
        timeout_ms: u64,
    },
    /// Free a group's bundles and kill what runs in them.
    Remove {
        /// The group.
        pg: PlacementGroupId,
    },
    /// The placement-group table.
    List,
}
