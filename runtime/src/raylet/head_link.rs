//! The raylet's link to the head: one lazily (re)connected connection
//! shared by everything that asks the head (object locations, actor state
//! reports, placement groups, lookups), and the registration and heartbeat
//! loop that keeps this node in the head's table.

use crate::client::{ClientError, HeadClient};
use crate::config::Config;
use crate::ids::NodeId;
use crate::proto::common::{ClusterStatus, Demand, Resources};
use crate::proto::head::{HeadRequest, HeadResponse, PeerRole, RegisterNode};
use crate::transport::tls::ClientTrust;
use crate::transport::Endpoint;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// A lazily (re)connected, shared connection to the head.
#[derive(Debug)]
pub struct HeadLink {
    endpoint: Arc<dyn Endpoint>,
    head: SocketAddr,
    trust: ClientTrust,
    config: Config,
    client: tokio::sync::Mutex<Option<HeadClient>>,
}

impl HeadLink {
    /// A link that connects on first use.
    pub fn new(
        endpoint: Arc<dyn Endpoint>,
        head: SocketAddr,
        trust: ClientTrust,
        config: Config,
    ) -> HeadLink {
        HeadLink {
            endpoint,
            head,
            trust,
            config,
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// One request; reconnects once if the connection was lost.
    pub async fn request(&self, req: &HeadRequest) -> Result<HeadResponse, ClientError> {
        let mut last = None;
        for _ in 0..2 {
            let client = {
                let mut slot = self.client.lock().await;
                if slot.is_none() {
                    *slot = Some(
                        HeadClient::connect(
                            &*self.endpoint,
                            self.head,
                            &self.trust,
                            None,
                            PeerRole::Raylet,
                            &self.config,
                        )
                        .await?,
                    );
                }
                slot.clone()
            };
            let Some(client) = client else { continue };
            match client.request(req).await {
                Err(e @ ClientError::Refused { .. }) => return Err(e),
                Err(e) => {
                    *self.client.lock().await = None;
                    last = Some(e);
                }
                ok => return ok,
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Unexpected("no connection to the head".into())))
    }
}

impl HeadLink {
    /// A new connection of its own to the head (the heartbeat loop's).
    pub async fn connect(&self) -> Result<HeadClient, ClientError> {
        HeadClient::connect(
            &*self.endpoint,
            self.head,
            &self.trust,
            None,
            PeerRole::Raylet,
            &self.config,
        )
        .await
    }
}

/// Registers this node; the head answers with its id and incarnation.
pub async fn register(
    client: &HeadClient,
    reg: &RegisterNode,
) -> Result<(NodeId, u64), ClientError> {
    match client.request(&HeadRequest::Register(reg.clone())).await? {
        HeadResponse::Registered {
            node_id,
            incarnation,
            ..
        } => Ok((node_id, incarnation)),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

/// What the heartbeat loop reports for the node, and tells it back.
pub trait Reporter: Send + Sync {
    /// Free resources and waiting work, for the heartbeat of `node`.
    fn report(&self, node: NodeId) -> (Resources, Vec<Demand>);
    /// The head's status after an accepted heartbeat.
    fn status(&self, status: &ClusterStatus);
    /// The head declared this node dead and it registered again as `id`.
    fn new_id(&self, id: NodeId);
    /// Time passes (every heartbeat interval, head or no head).
    fn tick(&self, now: Instant);
}

/// Keeps the node registered: a heartbeat every interval, the head's
/// status after each, a new registration when the head asks for one, a
/// new connection when the head is unreachable.
pub struct Heartbeats<'a> {
    /// The way to the head.
    pub link: &'a HeadLink,
    /// What this node registers with.
    pub registration: RegisterNode,
    /// How often.
    pub interval: Duration,
}

impl Heartbeats<'_> {
    /// Runs until `shutdown`, then unregisters; returns the node's last id.
    pub async fn run(
        &self,
        client: HeadClient,
        mut node_id: NodeId,
        node: &dyn Reporter,
        shutdown: impl Future<Output = ()>,
    ) -> NodeId {
        let mut client = Some(client);
        let mut tick = tokio::time::interval(self.interval);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            node.tick(Instant::now());
            let Some(c) = client.as_ref() else {
                client = self
                    .link
                    .connect()
                    .await
                    .inspect_err(|e| warn!("head unreachable: {e}"))
                    .ok();
                continue;
            };
            let (available, demand) = node.report(node_id);
            let beat = HeadRequest::Heartbeat {
                node_id,
                available,
                demand,
            };
            match c.request(&beat).await {
                Ok(HeadResponse::HeartbeatAck) => {
                    if let Ok(status) = c.status().await {
                        node.status(&status);
                    }
                }
                Ok(HeadResponse::ReRegister { reason }) => {
                    warn!(node = %node_id, %reason, "head asks to register again");
                    match register(c, &self.registration).await {
                        Ok((id, inc)) => {
                            info!(old = %node_id, node = %id, incarnation = inc, "registered as a new incarnation");
                            node_id = id;
                            node.new_id(id);
                        }
                        Err(e) => warn!("re-registration failed: {e}"),
                    }
                }
                Ok(other) => warn!("unexpected heartbeat answer: {other:?}"),
                Err(e) => {
                    warn!("heartbeat failed ({e}); reconnecting to the head");
                    c.close();
                    client = None;
                }
            }
        }
        if let Some(c) = client {
            let bye = HeadRequest::Unregister { node_id };
            let _ = tokio::time::timeout(Duration::from_secs(2), c.request(&bye)).await;
            c.close();
        }
        node_id
    }
}
