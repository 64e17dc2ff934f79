//! Why a task failed, as the raylet tells its owner (part of
//! [`super::task::Outcome`]), with a one-line summary for listings.

use crate::ids::{ActorId, NodeId};
use prism_objectstore::ObjectId;
use rkyv::{Archive, Deserialize, Serialize};

/// Why a task failed.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Failure {
    /// The user's function panicked.
    Panic {
        /// The panic message.
        message: String,
        /// `file:line:col`.
        location: String,
    },
    /// The worker process died while running it.
    WorkerDied {
        /// Where.
        node: NodeId,
        /// `exit code N` or `signal N (SIGKILL)`.
        detail: String,
    },
    /// The node running it died.
    NodeDied {
        /// The node.
        node: NodeId,
        /// What was seen.
        detail: String,
    },
    /// Cancelled by the caller.
    Cancelled,
    /// A peer spilled it to a node that is being drained (DR-1): the peer
    /// places it again elsewhere; it never reaches the owner.
    Draining {
        /// The draining node.
        node: NodeId,
        /// Why it is drained.
        reason: String,
    },
    /// A peer spilled it here on a view gone stale: it waited while a
    /// fresher view showed another node with room, so it goes back and the
    /// peer places it again (D-6); it never reaches the owner.
    Moved {
        /// The node it waited on.
        node: NodeId,
    },
    /// No node can ever run it.
    Infeasible {
        /// What is missing.
        reason: String,
    },
    /// An argument object could not be fetched.
    ObjectLost {
        /// The object.
        object: ObjectId,
        /// Why.
        detail: String,
    },
    /// The head could not be reached for something only it knows (an
    /// actor's registration or name, a placement group).
    HeadUnreachable {
        /// What was asked and why it failed.
        detail: String,
    },
    /// No live actor has this name in this namespace.
    NoSuchActor {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// Another live actor holds this name in its namespace.
    NameTaken {
        /// The head's account (which actor holds it).
        detail: String,
    },
    /// The function is not registered in the job's binary, or an argument
    /// does not decode as the function's parameter type.
    BadCall {
        /// Why.
        detail: String,
    },
    /// The worker could not be started.
    WorkerStartFailed {
        /// Why.
        detail: String,
    },
    /// The actor is dead (or died while running the call).
    ActorDied {
        /// The actor.
        actor_id: ActorId,
        /// Why: the constructor's panic, the worker's exit signal, the
        /// node's loss, or a kill.
        detail: String,
    },
    /// Its placement group was removed (or its bundle is not on the node).
    PlacementGroupGone {
        /// The group.
        pg: crate::ids::PlacementGroupId,
        /// Why.
        detail: String,
    },
}

impl Failure {
    /// One line saying what went wrong (for listings and logs).
    pub fn summary(&self) -> String {
        match self {
            Failure::Panic { message, location } => format!("panicked at {location}: {message}"),
            Failure::WorkerDied { node, detail } => format!("its worker on {node} died: {detail}"),
            Failure::NodeDied { node, detail } => format!("node {node} died: {detail}"),
            Failure::Cancelled => "cancelled".into(),
            Failure::Draining { node, reason } => {
                format!("node {node} is being drained ({reason})")
            }
            Failure::Moved { node } => format!("handed back by {node} to be placed again"),
            Failure::Infeasible { reason } => format!("infeasible: {reason}"),
            Failure::ObjectLost { object, detail } => format!("object {object} lost: {detail}"),
            Failure::HeadUnreachable { detail }
            | Failure::NameTaken { detail }
            | Failure::BadCall { detail }
            | Failure::WorkerStartFailed { detail }
            | Failure::ActorDied { detail, .. }
            | Failure::PlacementGroupGone { detail, .. } => detail.clone(),
            Failure::NoSuchActor { namespace, name } => {
                format!("no live actor named {name:?} in namespace {namespace:?}")
            }
        }
    }
}
