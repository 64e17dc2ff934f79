//! The head: the cluster's source of truth. Every table (nodes, jobs,
//! actors, placement groups, the object directory) lives in one pure state
//! machine, [`core::HeadCore`]; the rest of this module are its shells.
//!
//! # Layout
//!
//! - [`core`]: the head core — requests and ticks in, replies and effects
//!   out — with its tables: [`node_table`], [`actor_table`], [`pg_table`],
//!   [`job_table`], [`object_directory`] (each pure, each with its invariants).
//! - `shell`: the ractor actor that owns the core and carries out its
//!   effects; `server`: connections, the `Hello` handshake, routing each
//!   stream's request to the actor (`run_head`).
//! - `dialer`: the one way the head reaches a raylet (bundle operations,
//!   actor restarts, state listings); `listing`: those listings merged;
//!   `job_runner`: submitted jobs' binaries, driver processes and logs.

pub mod actor_table;
pub mod core;
mod dialer;
mod job_runner;
pub mod job_table;
mod listing;
pub mod node_table;
pub mod object_directory;
pub mod pg_table;
mod server;
mod shell;

pub use server::run_head;

use crate::config::Config;
use crate::ids::ClusterId;
use crate::session::{SessionDir, SessionError};
use crate::token::JoinToken;
use crate::transport::tls::{ClusterCa, NodeIdentity, TlsError};

/// The head could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// Certificates could not be made.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The session directory could not be written.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The head's actor could not start.
    #[error("head actor failed: {0}")]
    Actor(String),
}

/// What a head needs to run: settings, its CA and its join token.
#[derive(Debug)]
pub struct HeadSetup {
    /// Settings.
    pub config: Config,
    /// The cluster CA.
    pub ca: ClusterCa,
    /// The join token.
    pub token: JoinToken,
    /// This cluster's id.
    pub cluster_id: ClusterId,
    /// The head's session directory (job binaries and logs).
    pub session_dir: std::path::PathBuf,
}

impl HeadSetup {
    /// Creates a CA and a join token and saves them in the session directory.
    pub fn create(config: Config, session: &SessionDir) -> Result<HeadSetup, HeadError> {
        let ca = ClusterCa::generate()?;
        let token = JoinToken::generate(&ca.fingerprint()?);
        session.write_secret("ca.pem", &ca.cert_pem)?;
        session.write_secret("ca.key", &ca.key_pem)?;
        Ok(HeadSetup {
            config,
            ca,
            token,
            cluster_id: ClusterId::random(),
            session_dir: session.path().to_path_buf(),
        })
    }

    /// The certificate the head serves with.
    pub fn identity(&self) -> Result<NodeIdentity, HeadError> {
        Ok(self.ca.issue("head")?)
    }
}
