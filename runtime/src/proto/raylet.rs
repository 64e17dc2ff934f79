//! Raylet to raylet: object transfer. The puller opens one stream per chunk
//! and sends [`PeerRequest::Pull`]; the holder answers with a
//! [`PeerResponse`] frame and then, on success, exactly `len` raw bytes
//! straight from its shared segment.

use rkyv::{Archive, Deserialize, Serialize};

/// A request from a peer raylet.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum PeerRequest {
    /// Send bytes `offset..offset + len` of a sealed object.
    Pull {
        /// The object.
        object: prism_objectstore::ObjectId,
        /// First byte.
        offset: u64,
        /// How many bytes.
        len: u64,
    },
    /// Run a task spilled from the sending raylet, or an actor's restart
    /// the head placed here, on node `to`: a raylet that is no longer `to`
    /// (declared dead and fenced since, DF-6) refuses it with `NodeDied`
    /// naming `to`, so it never runs in an incarnation its sender does not
    /// know of.
    Submit {
        /// The node (incarnation) it is meant for.
        to: crate::ids::NodeId,
        /// The task and its job.
        task: Box<super::task::PeerSubmit>,
    },
    /// Open an ordered call stream to an actor hosted here: `TaskSpec`
    /// frames follow, [`PeerActorResult`] frames come back.
    ActorStream {
        /// The actor.
        actor_id: crate::ids::ActorId,
    },
    /// From the head: reserve, commit or return placement-group bundles,
    /// applied in order; answered with one [`super::placement::BundleReply`]
    /// per operation (a `Vec`).
    Bundles {
        /// The node (incarnation) they are meant for (DF-6).
        to: crate::ids::NodeId,
        /// The operations.
        ops: Vec<super::placement::BundleOp>,
    },
    /// From the head: list this node's tasks or objects; answered with a
    /// [`super::state::StateReply`].
    State(super::state::StateQuery),
    /// Output of this job's workers on the sending node, for the job's
    /// driver here; answered with `true` once handed on.
    Logs {
        /// The job.
        job_id: crate::ids::JobId,
        /// The lines.
        lines: Vec<super::state::LogLine>,
    },
    /// From the head: read a worker's log file from `offset`; answered with
    /// a [`super::state::LogChunk`].
    ReadLog {
        /// The worker's pid.
        pid: u32,
        /// First byte.
        offset: u64,
    },
    /// From the head: their owner freed these objects; drop the copies
    /// here (answered with `true`).
    FreeObjects(Vec<prism_objectstore::ObjectId>),
    /// For the process on this node's local connection `conn`: processes
    /// elsewhere started (or, with `release`, stopped) borrowing these
    /// objects from it (answered with `true` once handed on).
    Borrows {
        /// The borrowers' node (whose death releases what they borrow).
        from: crate::ids::NodeId,
        /// The connection.
        conn: u64,
        /// The objects.
        objects: Vec<prism_objectstore::ObjectId>,
        /// Stopped rather than started.
        release: bool,
    },
    /// For the process on this node's local connection `conn`: owners
    /// elsewhere let go of these results of tasks it ran, so the refs it
    /// holds for them may go (RR-1 in `api/result_refs.rs`; answered with
    /// `true` once handed on).
    ReleaseHeld {
        /// The owners' node (its ledger of holds for them, HL-1).
        from: crate::ids::NodeId,
        /// The connection.
        conn: u64,
        /// The results.
        results: Vec<prism_objectstore::ObjectId>,
    },
    /// For the owner on this node's local connection `owner_conn`: the
    /// process at `holder` holds the refs inside these results of tasks it
    /// ran for it, to be released in its name if it goes first (HL-1 in
    /// `raylet/held_ledger.rs`). Answered with `false` if `owner_conn` is
    /// gone already (the holder's raylet then releases them at once).
    HeldFor {
        /// The holder (on the sending node).
        holder: crate::proto::task::ReplyTo,
        /// The owner's connection here.
        owner_conn: u64,
        /// The results.
        results: Vec<prism_objectstore::ObjectId>,
    },
    /// From a node being drained: take these primary copies (pull each
    /// from it, pin it here, tell the head); answered with [`TakenCopies`].
    TakeCopies {
        /// The objects.
        objects: Vec<prism_objectstore::ObjectId>,
        /// How long the pulls may take, in milliseconds.
        deadline_ms: u64,
    },
}

/// Answer to [`PeerRequest::TakeCopies`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct TakenCopies {
    /// Objects now held here as primary copies.
    pub taken: u32,
    /// The others, each with why.
    pub failed: Vec<String>,
}

/// The result of one call sent on an actor stream.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PeerActorResult {
    /// The call.
    pub task_id: crate::ids::TaskId,
    /// Its outcome.
    pub outcome: super::task::Outcome,
}

/// The answer, before the raw bytes.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum PeerResponse {
    /// `len` raw bytes follow.
    Chunk {
        /// Bytes that follow.
        len: u64,
    },
    /// Refused.
    Error {
        /// Why.
        message: String,
    },
}

/// How a spilled task ended.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PeerTaskResponse {
    /// The outcome.
    pub outcome: super::task::Outcome,
}
