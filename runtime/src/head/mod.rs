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
//! - [`access`]: users, roles, the gate every user's request passes, and
//!   the hash-chained audit trail.
//! - `dialer`: the one way the head reaches a raylet (bundle operations,
//!   actor restarts, state listings); `listing`: those listings merged;
//!   `job_runner`: submitted jobs' binaries, driver processes and logs.

pub mod access;
pub mod actor_table;
pub mod core;
mod dialer;
pub mod durable;
pub mod identity;
pub mod job_queue;
mod job_runner;
pub mod job_table;
mod listing;
pub mod model_table;
pub mod node_table;
pub mod object_directory;
pub mod pg_table;
pub mod run_table;
mod server;
mod shell;
#[cfg(feature = "durable")]
pub mod store_sqlite;

pub use server::run_head;

use crate::config::Config;
use crate::ids::ClusterId;
use crate::session::{SessionDir, SessionError};
use crate::token::JoinToken;
use crate::transport::tls::{ClusterCa, NodeIdentity, TlsError};
use identity::ClusterIdentity;

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
    /// The durable state could not be opened or read.
    #[error(transparent)]
    Store(#[from] durable::StoreError),
    /// The identity given to the head (`--identity`) cannot be used.
    #[error("{0}")]
    Identity(String),
    /// A head to recover is missing part of its session.
    #[error("cannot recover the cluster in {dir}: {why} (start with --fresh for a new cluster)")]
    Recover {
        /// The session directory.
        dir: String,
        /// What is missing.
        why: String,
    },
}

/// Whether the head keeps its state across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// In memory only (an embedded cluster in a job binary).
    Off,
    /// In the session's `head.db`; a head that died is recovered from it.
    Recover,
    /// In the session's `head.db`, starting a new cluster whatever it holds.
    Fresh,
}

/// What a head needs to run: settings, its CA and its join token, and, for
/// a durable head, its store and what it recovered.
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
    /// Where changes are kept (DH-1).
    pub store: Option<Box<dyn durable::DurableStore>>,
    /// The rows of the cluster this head recovers.
    pub recovered: Option<durable::Snapshot>,
    /// The audit trail so far (it outlives clusters, AU-3).
    pub audit: Vec<crate::proto::access::AuditEntry>,
    /// The key raylets seal spill files with, when the cluster encrypts at
    /// rest (`encrypt_at_rest`; kept in head.db, handed to raylets).
    pub spill_key: Option<[u8; 32]>,
    /// What namespaces' keys (masking, at rest) derive from (kept in head.db across
    /// clusters; `None`: a new one for this run).
    pub namespace_secret: Option<[u8; 32]>,
}

impl HeadSetup {
    /// Creates a CA and a join token (or takes the `identity` made ahead,
    /// `prism start --head --identity`) and saves them in the session
    /// directory.
    pub fn create(
        config: Config,
        session: &SessionDir,
        identity: Option<&ClusterIdentity>,
    ) -> Result<HeadSetup, HeadError> {
        let (ca, token) = match identity {
            Some(id) => (id.ca().map_err(HeadError::Identity)?, id.token.clone()),
            None => {
                let ca = ClusterCa::generate()?;
                let token = JoinToken::generate(&ca.fingerprint()?);
                (ca, token)
            }
        };
        let spill_key = config.encrypt_at_rest.then(rand::random::<[u8; 32]>);
        session.write_secret("ca.pem", &ca.cert_pem)?;
        session.write_secret("ca.key", &ca.key_pem)?;
        Ok(HeadSetup {
            config,
            ca,
            token,
            cluster_id: ClusterId::random(),
            session_dir: session.path().to_path_buf(),
            store: None,
            recovered: None,
            audit: Vec::new(),
            spill_key,
            namespace_secret: None,
        })
    }

    /// A head for `session` with `persistence`: a new cluster (with
    /// `identity` when one was made ahead), or the one a head that died
    /// left in the session's `head.db` (its CA, token and rows; it must be
    /// `identity`'s cluster when one is given).
    pub fn open(
        config: Config,
        session: &SessionDir,
        persistence: Persistence,
        identity: Option<&ClusterIdentity>,
    ) -> Result<HeadSetup, HeadError> {
        match persistence {
            Persistence::Off => HeadSetup::create(config, session, identity),
            #[cfg(feature = "durable")]
            Persistence::Recover | Persistence::Fresh => {
                let setup =
                    open_durable(config, session, persistence == Persistence::Fresh, identity)?;
                if let Some(id) = identity {
                    if setup.token != id.token {
                        return Err(HeadError::Identity(format!(
                            "the cluster recovered from {} has join token …{} but the identity given has …{}; \
                             start with --fresh to begin a new cluster with the new identity",
                            session.file("head.db").display(),
                            setup.token.ca_fingerprint,
                            id.token.ca_fingerprint
                        )));
                    }
                }
                Ok(setup)
            }
            #[cfg(not(feature = "durable"))]
            Persistence::Recover | Persistence::Fresh => {
                tracing::warn!(
                    "this build has no durable head (feature `durable`); its state lives in memory"
                );
                HeadSetup::create(config, session, identity)
            }
        }
    }

    /// The certificate the head serves with.
    pub fn identity(&self) -> Result<NodeIdentity, HeadError> {
        Ok(self.ca.issue("head")?)
    }
}

#[cfg(feature = "durable")]
fn open_durable(
    config: Config,
    session: &SessionDir,
    fresh: bool,
    identity: Option<&ClusterIdentity>,
) -> Result<HeadSetup, HeadError> {
    use store_sqlite::{Opened, SqliteStore};
    let (mut store, opened) = SqliteStore::open_with(&session.file("head.db"), fresh)?;
    // Kept across clusters in this file, recovered or fresh (NK-1).
    let namespace_secret = Some(store.namespace_secret()?);
    if let (
        Opened::Recovered {
            cluster_id,
            snapshot,
        },
        false,
    ) = (opened, fresh)
    {
        let dir = session.path().display().to_string();
        let missing = |what: &str| HeadError::Recover {
            dir: dir.clone(),
            why: format!("{what} is missing"),
        };
        let cert = session.read("ca.pem")?.ok_or_else(|| missing("ca.pem"))?;
        let key = session.read("ca.key")?.ok_or_else(|| missing("ca.key"))?;
        let info = session
            .read_json::<crate::session::ClusterInfo>("cluster.json")?
            .ok_or_else(|| missing("cluster.json"))?;
        let token: JoinToken = info.token.parse().map_err(|e| HeadError::Recover {
            dir: dir.clone(),
            why: format!("its join token does not parse: {e}"),
        })?;
        store.resume()?;
        let audit = store.audit_entries()?;
        let spill_key = store.spill_key()?;
        return Ok(HeadSetup {
            config,
            ca: ClusterCa::load(&cert, &key)?,
            token,
            cluster_id,
            session_dir: session.path().to_path_buf(),
            store: Some(Box::new(store)),
            recovered: Some(snapshot),
            audit,
            spill_key,
            namespace_secret,
        });
    }
    let mut setup = HeadSetup::create(config, session, identity)?;
    store.begin_cluster(setup.cluster_id)?;
    store.set_spill_key(setup.spill_key.as_ref())?;
    setup.namespace_secret = namespace_secret;
    setup.audit = store.audit_entries()?;
    setup.store = Some(Box::new(store));
    Ok(setup)
}
