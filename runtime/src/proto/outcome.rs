//! How a task ended, as its owner is told: its result (inline or in a
//! store), or its failure; a result with refs inside names the process
//! that holds them (RR-1 in `api/result_refs.rs`).

use super::failure::Failure;
use super::task::ReplyTo;
use crate::ids::NodeId;
use rkyv::{Archive, Deserialize, Serialize};

/// How a task ended.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The archived result, inline (under the inline limit).
    Inline(Vec<u8>),
    /// The result is in the object store of `node` under the task's id.
    Stored {
        /// Size in bytes.
        size: u64,
        /// Where it was written.
        node: NodeId,
    },
    /// It failed.
    Failed(Failure),
    /// A result with refs archived inside it: as [`Outcome::Inline`] (with
    /// `inline`) or [`Outcome::Stored`], and `held_by`, the process that
    /// ran the task, keeps their objects alive until the result's owner
    /// releases the result (RR-1 in `api/result_refs.rs`).
    Holding {
        /// The process that holds the refs.
        held_by: ReplyTo,
        /// The archived result when inline.
        inline: Option<Vec<u8>>,
        /// Size in bytes.
        size: u64,
        /// Where it was written when stored.
        node: NodeId,
    },
}

impl Outcome {
    /// This (successful) outcome, with its refs held by `by`.
    pub fn held_by(self, by: ReplyTo) -> Outcome {
        match self {
            Outcome::Inline(b) => Outcome::Holding {
                held_by: by,
                size: b.len() as u64,
                inline: Some(b),
                node: NodeId([0; 16]),
            },
            Outcome::Stored { size, node } => Outcome::Holding {
                held_by: by,
                inline: None,
                size,
                node,
            },
            other => other,
        }
    }

    /// Splits a [`Outcome::Holding`] into the plain outcome and who holds
    /// its refs.
    pub fn take_holder(self) -> (Outcome, Option<ReplyTo>) {
        match self {
            Outcome::Holding {
                held_by,
                inline: Some(b),
                ..
            } => (Outcome::Inline(b), Some(held_by)),
            Outcome::Holding {
                held_by,
                inline: None,
                size,
                node,
            } => (Outcome::Stored { size, node }, Some(held_by)),
            other => (other, None),
        }
    }
}
