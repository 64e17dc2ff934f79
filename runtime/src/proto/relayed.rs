//! What a raylet relays to the head for its drivers and workers
//! ([`HeadRequest::Relayed`]), judged there as the process's job.

use super::head::HeadRequest;
use rkyv::{Archive, Deserialize, Serialize};

/// What a raylet may relay for its drivers and workers
/// ([`HeadRequest::Relayed`]).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum RelayedRequest {
    /// A placement group's creation, removal or state.
    PlacementGroup(super::placement::PgRequest),
    /// The model registry.
    Models(super::models::ModelRequest),
    /// A live actor by name.
    NamedActor {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The killing of an actor through its handle (`prism::kill`): the
    /// raylet kills it once the head allows.
    KillActor {
        /// The actor.
        actor_id: crate::ids::ActorId,
        /// Whether it is to stay dead.
        no_restart: bool,
    },
    /// The cluster's status.
    Status,
    /// The training runs.
    Runs,
}

impl RelayedRequest {
    /// The request it stands for.
    pub fn into_request(self) -> HeadRequest {
        match self {
            RelayedRequest::PlacementGroup(r) => HeadRequest::PlacementGroup(r),
            RelayedRequest::Models(r) => HeadRequest::Models(r),
            RelayedRequest::NamedActor { namespace, name } => {
                HeadRequest::GetNamedActor { namespace, name }
            }
            RelayedRequest::KillActor {
                actor_id,
                no_restart,
            } => HeadRequest::KillActor {
                actor_id,
                no_restart,
            },
            RelayedRequest::Status => HeadRequest::GetStatus,
            RelayedRequest::Runs => HeadRequest::ListRuns,
        }
    }
}
