//! The wire contract: every message any Prism process sends, in one module
//! that depends on neither tokio nor quinn, so tests and fuzzers use it
//! directly.
//!
//! - [`access`]: users, roles and the audit trail.
//! - [`codec`]: framing, the version check, and typed decode errors.
//! - [`direct`]: a caller and its actor's worker on one machine, raylet bypassed.
//! - [`head`]: what raylets, drivers and the CLI say to the head.
//! - [`placement`]: placement groups (head table rows, head to raylet bundle ops).
//! - [`queue`]: the job queue: quotas, weights, what waits and why.
//! - [`raylet`]: raylet to raylet (object transfer).
//! - [`runs`]: training runs' per-step metrics (the dashboard's training page).
//! - [`state`]: the state API's listings, worker logs, node metrics.
//! - [`store`]: what local processes say to their raylet's object store.
//! - [`task`]: tasks between drivers, workers and raylets.
//! - [`common`]: types both sides share (resources, node status).
//!
//! Each request travels on its own stream: one request frame, one response
//! frame. A connection's first request is [`head::HeadRequest::Hello`].

pub mod access;
pub mod codec;
pub mod common;
pub mod direct;
pub mod failure;
pub mod head;
pub mod jobs;
pub mod models;
pub mod outcome;
pub mod placement;
pub mod queue;
pub mod raylet;
pub mod relayed;
pub mod runs;
pub mod serving;
pub mod state;
pub mod store;
pub mod task;

pub use codec::{CodecError, PROTOCOL_VERSION};

#[cfg(test)]
mod tests;
