//! The head: the cluster's source of truth. For now it holds the node table
//! (registration, heartbeats, failure detection), issues node certificates
//! to raylets that show the join token, and reports status.
//!
//! [`node_table`] is the pure core; [`server`] is the thin shell: a ractor
//! actor owning the table and a task per connection moving frames.

mod actor_restart;
pub mod actor_table;
pub mod job_table;
pub mod jobs;
pub mod node_table;
pub mod object_directory;
pub mod pg_table;
mod placement;
mod server;
mod state_query;

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
