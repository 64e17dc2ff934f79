//! A joined driver's link to the head: it announces the driver's job (for
//! `prism job list`; the job ends when the link closes) and keeps it
//! announced. With `PRISM_USER_TOKEN` the job is that user's: what it
//! creates is checked against their role. The link is checked every [`CHECK_EVERY`]; if the head went
//! away (it restarts from its durable state), the link dials it again,
//! backing off, and announces the job again under the same id.

use crate::client::HeadClient;
use crate::config::Config;
use crate::ids::JobId;
use crate::proto::head::{HeadRequest, PeerRole};
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

impl Announce {
    async fn connect(&self, ep: &QuicEndpoint) -> Result<HeadClient, String> {
        let client = HeadClient::connect_as(ep, self.head, &self.token, &self.config)
            .await
            .map_err(|e| e.to_string())?;
        client
            .request(&HeadRequest::RegisterDriver {
                job_id: self.job_id,
                entrypoint: self.entrypoint.clone(),
                pid: std::process::id(),
            })
            .await
            .map_err(|e| e.to_string())?;
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
    /// Announces job `job_id` to the head at `address`. A failure costs the
    /// job nothing but its row (and is logged).
    pub(crate) fn register(
        rt: &tokio::runtime::Runtime,
        config: &Config,
        address: &str,
        token: Option<String>,
        job_id: JobId,
    ) -> Option<DriverLink> {
        let result: Result<DriverLink, String> = rt.block_on(async {
            let token = token.ok_or("no join token (set PRISM_TOKEN or PRISM_USER_TOKEN)")?;
            let token: Credential = token.parse().map_err(|e| format!("{e}"))?;
            let head: SocketAddr = address
                .to_socket_addrs()
                .map_err(|e| e.to_string())?
                .next()
                .ok_or("the address resolves to nothing")?;
            let ep = Arc::new(
                QuicEndpoint::client(if head.is_ipv4() {
                    [0u8; 4].into()
                } else {
                    std::net::Ipv6Addr::UNSPECIFIED.into()
                })
                .map_err(|e| e.to_string())?,
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
            Ok(link) => Some(link),
            Err(e) => {
                tracing::warn!("cannot register job {job_id} with the head: {e}");
                None
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
