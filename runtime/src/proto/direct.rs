//! Direct actor calls on one machine: a caller connects to the Unix socket
//! of the worker hosting its actor (`<session>/a/<actor id>`), writes the
//! calls' [`super::task::TaskSpec`]s in order and reads their outcomes,
//! with no raylet in between. The raylet stays the authority on the
//! worker's life: when the connection breaks, the caller hands the calls
//! still in flight to it ([`super::task::LocalRequest::DirectLost`]).

use super::task::Outcome;
use crate::ids::TaskId;
use rkyv::{Archive, Deserialize, Serialize};

/// Actor worker to caller.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum DirectEvent {
    /// The connection's first frame: which incarnation of the actor the
    /// caller reached (its restart count).
    Welcome {
        /// Restarts before this worker.
        restarts: u32,
    },
    /// A call sent on this connection has ended.
    Finished {
        /// The call.
        task_id: TaskId,
        /// How.
        outcome: Outcome,
    },
}
