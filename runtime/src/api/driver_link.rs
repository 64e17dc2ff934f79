//! A joined driver's link to the head: it announces the driver's job (for
//! `prism job list`; the job ends when the link closes) and keeps it
//! announced. With `PRISM_USER_TOKEN` the job is that user's: what it
//! creates is checked against their role. The link is checked every [`CHECK_EVERY`]; if the head went
//! away (it restarts from its durable state), the link dials it again,
//! backing off, and announces the job again under the same id.

use crate::client::HeadClient;
use crate::config::Config;
use crate::ids::JobId;
use crate::proto::head::{ErrorKind, HeadRequest, PeerRole};
use crate::proto::PROTOCOL_VERSION;
use crate::token::Credential;
use crate::transport::quic::QuicEndpoint;
use crate::transport::Endpoint;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// How often the link checks that the head still answers.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The driver's connection to the head, kept up by a background task.
#[derive(Debug)]
pub(crate) struct DriverLink {
    ep: Arc<QuicEndpoint>,
    client: Arc<Mutex<HeadClient>>,
    watch: tokio::task::JoinHandle<()>,
}

/// Everything needed to dial the head and announce the job again.
#[derive(Debug, Clone)]
struct Announce {
    head: SocketAddr,
    /// The join token, or a user's (the job is then theirs).
    token: Credential,
    config: Config,
    job_id: JobId,
    entrypoint: String,
}

/// Why a job could not be announced.
#[derive(Debug)]
enum NotAnnounced {
    /// The head said no (a bad or revoked token, a role without
    /// `jobs:submit`): the job may not run.
    Refused(String),
    /// No answer, or not one that decides: the job runs without its row.
    Unreachable(String),
}

impl From<crate::client::ClientError> for NotAnnounced {
    fn from(e: crate::client::ClientError) -> NotAnnounced {
        match e {
            crate::client::ClientError::Refused {
                kind: ErrorKind::Unauthorized | ErrorKind::Forbidden,
                message,
            } => NotAnnounced::Refused(format!("the head refused this job: {message}")),
            other => NotAnnounced::Unreachable(other.to_string()),
        }
    }
}

impl std::fmt::Display for NotAnnounced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotAnnounced::Refused(m) | NotAnnounced::Unreachable(m) => f.write_str(m),
        }
    }
}

impl Announce {
    async fn connect(&self, ep: &QuicEndpoint) -> Result<HeadClient, NotAnnounced> {
        let client = HeadClient::connect_as(ep, self.head, &self.token, &self.config).await?;
        client
            .request(&HeadRequest::RegisterDriver {
                job_id: self.job_id,
                entrypoint: self.entrypoint.clone(),
                pid: std::process::id(),
            })
            .await?;
        Ok(client)
    }

    fn hello(&self) -> HeadRequest {
        HeadRequest::Hello {
            version: PROTOCOL_VERSION,
            role: PeerRole::Client,
            token: Some(self.token.hello()),
        }
    }
}

impl DriverLink {
    /// Announces job `job_id` to the head at `address`. `Err` when the
    /// head refuses the job (its token or its owner's role): it may not
    /// run, and says why. Any other failure costs the job nothing but its
    /// row (and is logged).
    pub(crate) fn register(
        rt: &tokio::runtime::Runtime,
        config: &Config,
        address: &str,
        token: Option<String>,
        job_id: JobId,
    ) -> Result<Option<DriverLink>, String> {
        let unreachable = |e: String| NotAnnounced::Unreachable(e);
        let result: Result<DriverLink, NotAnnounced> = rt.block_on(async {
            let token = token.ok_or_else(|| {
                unreachable("no join token (set PRISM_TOKEN or PRISM_USER_TOKEN)".into())
            })?;
            let token: Credential = token.parse().map_err(|e| {
                NotAnnounced::Refused(format!("the job's token does not parse: {e}"))
            })?;
            let head: SocketAddr = address
                .to_socket_addrs()
                .map_err(|e| unreachable(e.to_string()))?
                .next()
                .ok_or_else(|| unreachable("the address resolves to nothing".into()))?;
            let ep = Arc::new(
                QuicEndpoint::client(if head.is_ipv4() {
                    [0u8; 4].into()
                } else {
                    std::net::Ipv6Addr::UNSPECIFIED.into()
                })
                .map_err(|e| unreachable(e.to_string()))?,
            );
            let announce = Announce {
                head,
                token,
                config: config.clone(),
                job_id,
                entrypoint: entrypoint(),
            };
            let client = Arc::new(Mutex::new(announce.connect(&ep).await?));
            let watch = tokio::spawn(keep_up(ep.clone(), client.clone(), announce));
            Ok(DriverLink { ep, client, watch })
        });
        match result {
            Ok(link) => Ok(Some(link)),
            Err(NotAnnounced::Refused(why)) => Err(why),
            Err(NotAnnounced::Unreachable(e)) => {
                tracing::warn!("cannot register job {job_id} with the head: {e}");
                Ok(None)
            }
        }
    }

    /// Closes the link (the job ends) and lets the close reach the head.
    pub(crate) fn close(self, rt: &tokio::runtime::Runtime) {
        self.watch.abort();
        let ep = self.ep.clone();
        let client = self.client.clone();
        let _ = rt.block_on(async move {
            client.lock().await.close();
            ep.close();
            tokio::time::timeout(Duration::from_millis(500), ep.wait_idle()).await
        });
    }
}

/// Checks the link; when the head stops answering, dials it again (backing
/// off up to a second) and announces the job again.
async fn keep_up(ep: Arc<QuicEndpoint>, client: Arc<Mutex<HeadClient>>, announce: Announce) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let current = client.lock().await.clone();
        let alive = tokio::time::timeout(CHECK_EVERY, current.request(&announce.hello()))
            .await
            .is_ok_and(|r| r.is_ok());
        if alive {
            continue;
        }
        current.close();
        // Jittered (BO-1/2): drivers that lost a restarted head together
        // do not dial it in step.
        let mut backoff = crate::transport::backoff::Backoff::randomized(
            Duration::from_millis(100),
            Duration::from_secs(1),
        );
        loop {
            match announce.connect(&ep).await {
                Ok(c) => {
                    tracing::info!(job = %announce.job_id, "the head is back; job announced again");
                    *client.lock().await = c;
                    break;
                }
                Err(NotAnnounced::Refused(why)) => {
                    // Revoked, or its role changed: asking again changes nothing.
                    tracing::warn!(job = %announce.job_id, "{why}; no longer announcing the job");
                    return;
                }
                Err(e) => tracing::debug!("the head is unreachable ({e}); trying again"),
            }
            tokio::time::sleep(backoff.failed()).await;
        }
    }
}

/// The driver's command line as `prism job list` shows it: the binary's
/// file name (as for submitted jobs), then its arguments.
fn entrypoint() -> String {
    let mut args = std::env::args();
    let bin = args.next().unwrap_or_default();
    let name = std::path::Path::new(&bin)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(bin);
    std::iter::once(name)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}
