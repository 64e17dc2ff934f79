//! A connection to the head, used by raylets, drivers and the CLI.

use crate::config::Config;
use crate::proto::common::ClusterStatus;
use crate::proto::head::{ErrorKind, HeadRequest, HeadResponse, PeerRole};
use crate::proto::PROTOCOL_VERSION;
use crate::token::JoinToken;
use crate::transport::rpc::{call, RpcError};
use crate::transport::tls::ClientTrust;
use crate::transport::{BoxConn, Endpoint};
use std::net::SocketAddr;
use std::time::Duration;

/// Talking to the head failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, framing or decoding failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The head answered with an error.
    #[error("the head refused: {message}")]
    Refused {
        /// Category.
        kind: ErrorKind,
        /// The head's sentence.
        message: String,
    },
    /// The head answered something that does not fit the request.
    #[error("unexpected answer from the head: {0}")]
    Unexpected(String),
    /// No answer in time.
    #[error("the head at {addr} did not answer within {ms} ms")]
    Timeout {
        /// The head.
        addr: SocketAddr,
        /// The limit.
        ms: u64,
    },
}

/// A table of the state API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Nodes.
    Nodes,
    /// Jobs.
    Jobs,
    /// Actors.
    Actors,
    /// Tasks (live and recently finished).
    Tasks,
    /// Objects in every store.
    Objects,
    /// Placement groups.
    PlacementGroups,
    /// Worker processes.
    Workers,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 7] = [
        Table::Nodes,
        Table::Jobs,
        Table::Actors,
        Table::Tasks,
        Table::Objects,
        Table::PlacementGroups,
        Table::Workers,
    ];

    /// Its name in URLs and on the command line (`placement_groups`).
    pub fn name(self) -> &'static str {
        match self {
            Table::Nodes => "nodes",
            Table::Jobs => "jobs",
            Table::Actors => "actors",
            Table::Tasks => "tasks",
            Table::Objects => "objects",
            Table::PlacementGroups => "placement_groups",
            Table::Workers => "workers",
        }
    }

    /// The table with this name (`placement-groups` works too).
    pub fn parse(name: &str) -> Option<Table> {
        let name = name.replace('-', "_");
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// An authenticated connection to the head.
#[derive(Debug, Clone)]
pub struct HeadClient {
    conn: BoxConn,
    max_frame: usize,
    timeout: Duration,
}

impl HeadClient {
    /// Dials the head and says hello. With [`ClientTrust::Pinned`] the token's
    /// secret must be given; with a node certificate it is not needed.
    pub async fn connect(
        endpoint: &dyn Endpoint,
        addr: SocketAddr,
        trust: &ClientTrust,
        token: Option<&JoinToken>,
        role: PeerRole,
        config: &Config,
    ) -> Result<HeadClient, ClientError> {
        let hello = token.map(|t| t.secret.clone());
        HeadClient::connect_saying(endpoint, addr, trust, hello, role, config).await
    }

    /// Dials the head as a client with `cred`: its fingerprint pins the
    /// CA, and the head answers what the join token's admin, or the user,
    /// may do.
    pub async fn connect_as(
        endpoint: &dyn Endpoint,
        addr: SocketAddr,
        cred: &crate::token::Credential,
        config: &Config,
    ) -> Result<HeadClient, ClientError> {
        let trust = ClientTrust::Pinned {
            ca_fingerprint: cred.ca_fingerprint().to_string(),
        };
        HeadClient::connect_saying(
            endpoint,
            addr,
            &trust,
            Some(cred.hello()),
            PeerRole::Client,
            config,
        )
        .await
    }

    /// Dials the head with the join token, to act only as a viewer of
    /// `namespaces` (`*`: all): the head lets it read state and logs
    /// there, and nothing else.
    pub async fn connect_viewer(
        endpoint: &dyn Endpoint,
        addr: SocketAddr,
        token: &JoinToken,
        namespaces: Vec<String>,
        config: &Config,
    ) -> Result<HeadClient, ClientError> {
        let trust = ClientTrust::Pinned {
            ca_fingerprint: token.ca_fingerprint.clone(),
        };
        let role = PeerRole::Viewer { namespaces };
        let hello = Some(token.secret.clone());
        HeadClient::connect_saying(endpoint, addr, &trust, hello, role, config).await
    }

    async fn connect_saying(
        endpoint: &dyn Endpoint,
        addr: SocketAddr,
        trust: &ClientTrust,
        token: Option<String>,
        role: PeerRole,
        config: &Config,
    ) -> Result<HeadClient, ClientError> {
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        let conn = tokio::time::timeout(timeout, endpoint.connect(addr, trust))
            .await
            .map_err(|_| ClientError::Timeout {
                addr,
                ms: config.connect_timeout_ms,
            })?
            .map_err(RpcError::from)?;
        let client = HeadClient {
            conn,
            max_frame: config.max_frame_bytes,
            timeout,
        };
        let hello = HeadRequest::Hello {
            version: PROTOCOL_VERSION,
            role,
            token,
        };
        match client.request(&hello).await {
            Ok(HeadResponse::Welcome { .. }) => Ok(client),
            Ok(other) => Err(ClientError::Unexpected(format!("{other:?}"))),
            Err(e) => {
                client.close();
                Err(e)
            }
        }
    }

    /// One request, one answer; an `Error` answer becomes [`ClientError::Refused`].
    pub async fn request(&self, req: &HeadRequest) -> Result<HeadResponse, ClientError> {
        let addr = self.conn.remote_addr();
        let resp = tokio::time::timeout(
            self.timeout,
            call::<HeadRequest, HeadResponse>(&*self.conn, req, self.max_frame),
        )
        .await
        .map_err(|_| ClientError::Timeout {
            addr,
            ms: self.timeout.as_millis() as u64,
        })??;
        match resp {
            HeadResponse::Error { kind, message } => Err(ClientError::Refused { kind, message }),
            other => Ok(other),
        }
    }

    /// The cluster's node table.
    pub async fn status(&self) -> Result<ClusterStatus, ClientError> {
        match self.request(&HeadRequest::GetStatus).await? {
            HeadResponse::Status(s) => Ok(s),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The nodes changed since `version` of the head's run `epoch`
    /// (`GetStatusSince`).
    pub async fn status_since(
        &self,
        epoch: u64,
        version: u64,
    ) -> Result<crate::proto::common::StatusDelta, ClientError> {
        match self
            .request(&HeadRequest::GetStatusSince { epoch, version })
            .await?
        {
            HeadResponse::StatusDelta(d) => Ok(d),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Every row of one state table, as the state API shows it
    /// ([`crate::views`]): the head's tables, or what the raylets report.
    pub async fn rows(&self, table: Table) -> Result<Vec<serde_json::Value>, ClientError> {
        use crate::proto::placement::PgRequest;
        fn values<T: serde::Serialize>(rows: &[T]) -> Vec<serde_json::Value> {
            rows.iter()
                .map(|r| serde_json::to_value(r).unwrap_or_default())
                .collect()
        }
        let req = match table {
            Table::Nodes => {
                let status = self.status().await?;
                let views: Vec<_> = status
                    .nodes
                    .iter()
                    .map(crate::views::NodeView::from_status)
                    .collect();
                return Ok(values(&views));
            }
            Table::Jobs => HeadRequest::ListJobs,
            Table::Actors => HeadRequest::ListActors,
            Table::Tasks => HeadRequest::ListTasks,
            Table::Objects => HeadRequest::ListObjects,
            Table::PlacementGroups => HeadRequest::PlacementGroup(PgRequest::List),
            Table::Workers => HeadRequest::ListWorkers,
        };
        match self.request(&req).await? {
            HeadResponse::Jobs(r) => Ok(values(&r)),
            HeadResponse::Actors(r) => Ok(values(&r)),
            HeadResponse::Tasks(r) => Ok(values(&r)),
            HeadResponse::Objects(r) => Ok(values(&r)),
            HeadResponse::PlacementGroups(r) => Ok(values(&r)),
            HeadResponse::Workers(r) => Ok(values(&r)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The newest tasks passing `filter` (newest first) and how many pass,
    /// filtered by the raylets themselves.
    pub async fn task_page(
        &self,
        filter: crate::proto::state::TaskFilter,
    ) -> Result<(Vec<serde_json::Value>, u64), ClientError> {
        match self.request(&HeadRequest::QueryTasks(filter)).await? {
            HeadResponse::TaskPage { rows, total } => Ok((
                rows.iter()
                    .map(|r| serde_json::to_value(r).unwrap_or_default())
                    .collect(),
                total,
            )),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The underlying connection.
    pub fn connection(&self) -> &BoxConn {
        &self.conn
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close("client closed");
    }
}
