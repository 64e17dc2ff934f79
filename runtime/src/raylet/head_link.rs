//! The raylet's link to the head: one lazily (re)connected connection
//! shared by everything that asks the head (object locations, actor state
//! reports, placement groups, lookups), and the registration and heartbeat
//! loop that keeps this node in the head's table.

use crate::client::{ClientError, HeadClient};
use crate::config::Config;
use crate::ids::NodeId;
use crate::proto::common::{Demand, Resources, StatusDelta};
use crate::proto::head::{HeadRequest, HeadResponse, PeerRole, RegisterNode};
use crate::transport::backoff::Backoff;
use crate::transport::tls::ClientTrust;
use crate::transport::Endpoint;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How long one dial of the head may take before it is tried again.
const DIAL_ATTEMPT: Duration = Duration::from_secs(3);

/// A lazily (re)connected, shared connection to the head.
#[derive(Debug)]
pub struct HeadLink {
    endpoint: Arc<dyn Endpoint>,
    head: SocketAddr,
    trust: ClientTrust,
    config: Config,
    /// The cached connection; held only to read or swap it, never across
    /// an await, so `reset` never waits behind a dial.
    client: std::sync::Mutex<Option<HeadClient>>,
    /// One dial at a time; the others wait for its result.
    dialing: tokio::sync::Mutex<()>,
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
            client: std::sync::Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
        }
    }

    /// One request. While the head is unreachable (restarting) it is tried
    /// again, backing off, for up to `PRISM_HEAD_WAIT_MS`; a refusal is final.
    pub async fn request(&self, req: &HeadRequest) -> Result<HeadResponse, ClientError> {
        let deadline = Instant::now() + Duration::from_millis(self.config.head_wait_ms);
        let mut backoff = Backoff::randomized(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            match self.try_once(req).await {
                Err(e @ ClientError::Refused { .. }) => return Err(e),
                Err(e) => {
                    let pause = backoff.failed();
                    if Instant::now() + pause >= deadline {
                        return Err(e);
                    }
                    debug!("the head is unreachable ({e}); trying again in {pause:?}");
                    tokio::time::sleep(pause).await;
                }
                ok => return ok,
            }
        }
    }

    /// Drops the cached connection (the head stopped answering): the next
    /// request dials it again.
    pub fn reset(&self) {
        if let Some(c) = self.slot().take() {
            c.close();
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<HeadClient>> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached connection, or a new one (one dial at a time).
    async fn client(&self) -> Result<HeadClient, ClientError> {
        if let Some(c) = self.slot().clone() {
            return Ok(c);
        }
        let _dial = self.dialing.lock().await;
        if let Some(c) = self.slot().clone() {
            return Ok(c);
        }
        // A dial started while the head is down may wait on handshake
        // retransmissions long after it is back: short attempts, retried by
        // `request`, find a restarted head sooner.
        let limit = Duration::from_millis(self.config.connect_timeout_ms).min(DIAL_ATTEMPT);
        let c = tokio::time::timeout(limit, self.connect())
            .await
            .map_err(|_| {
                ClientError::Unexpected(format!("no answer from the head within {limit:?}"))
            })??;
        *self.slot() = Some(c.clone());
        Ok(c)
    }

    async fn try_once(&self, req: &HeadRequest) -> Result<HeadResponse, ClientError> {
        let client = self.client().await?;
        let r = client.request(req).await;
        if matches!(r, Err(ref e) if !matches!(e, ClientError::Refused { .. })) {
            self.reset();
        }
        r
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

/// Nodes' worth of cluster status a raylet fetches per heartbeat.
const STATUS_NODES_PER_BEAT: usize = 500;

/// After how many heartbeats a raylet fetches the cluster's status again,
/// given how many nodes it had: every beat up to 500 nodes, then rarer in
/// proportion (every 21 beats at 10,000). A fetch carries only the nodes
/// changed since the last (NT-6), but in a busy cluster that is every
/// node, so this keeps all raylets together at O(nodes) a second of the
/// head's time rather than O(nodes²). Peers' free resources, ended jobs
/// and drains reach a raylet of a large cluster that much later.
pub fn status_every(nodes: usize) -> u32 {
    (1 + nodes / STATUS_NODES_PER_BEAT) as u32
}

/// What the head answers a registration with.
pub type Registration = (NodeId, u64, Option<[u8; 32]>);

/// Registers this node; the head answers with its id, its incarnation and
/// the key spill files are sealed with when the cluster encrypts at rest.
pub async fn register(
    client: &HeadClient,
    reg: &RegisterNode,
) -> Result<Registration, ClientError> {
    match client.request(&HeadRequest::Register(reg.clone())).await? {
        HeadResponse::Registered {
            node_id,
            incarnation,
            spill_key,
            ..
        } => Ok((node_id, incarnation, spill_key)),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

/// What the heartbeat loop reports for the node, and tells it back.
pub trait Reporter: Send + Sync {
    /// Free resources, what leases hold, and waiting work, for the
    /// heartbeat of `node`.
    fn report(&self, node: NodeId) -> (Resources, Resources, Vec<Demand>);
    /// Where the node's copy of the head's node rows stands: `(epoch,
    /// version)` to ask for the changes since.
    fn status_cursor(&self) -> (u64, u64);
    /// The head's changes since, after an accepted heartbeat; returns how
    /// many nodes the cluster has.
    fn status(&self, delta: StatusDelta) -> usize;
    /// The head no longer knows this node as alive (declared dead, or
    /// restarted without its state): before it registers again, what the
    /// head has restarted elsewhere must stop here (fencing).
    fn declared_dead(&self, reason: &str);
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
    /// How long a heartbeat or a reconnection may take before the head
    /// counts as unreachable: a few intervals, at least a second.
    fn patience(&self) -> Duration {
        (self.interval * 4).max(Duration::from_secs(1))
    }

    /// Runs until `shutdown`, then unregisters; returns the node's last id.
    pub async fn run(
        &self,
        client: HeadClient,
        mut node_id: NodeId,
        node: &dyn Reporter,
        shutdown: impl Future<Output = ()>,
    ) -> NodeId {
        let mut client = Some(client);
        // Dials of a lost head are spread and thinned (BO-1/2): the first
        // comes on the next beat, later ones up to a patience apart,
        // jittered, so a herd of raylets does not dial a restarted head in
        // step. A dial and its wait stay under the dead timeout (8 beats of
        // the default 10), so a node still trying is back before a
        // recovered head that saw others arrive gives up on it (NT-5).
        let mut backoff = Backoff::randomized(self.interval, self.patience());
        let mut dial_at = Instant::now();
        // The cluster's status, fetched after every heartbeat of a small
        // cluster and more rarely in a large one (`status_every`).
        let (mut beats_since_status, mut cluster_nodes) = (u32::MAX - 1, 0);
        let mut tick = tokio::time::interval(self.interval);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            node.tick(Instant::now());
            let Some(c) = client.as_ref() else {
                if Instant::now() < dial_at {
                    continue;
                }
                // Short attempts, so a head that comes back is found within
                // a few intervals.
                client = match tokio::time::timeout(self.patience(), self.link.connect()).await {
                    // The backoff resets on an accepted heartbeat, not here:
                    // a herd's connects succeed while its heartbeats time out.
                    Ok(Ok(c)) => Some(c),
                    Ok(Err(e)) => {
                        warn!("head unreachable: {e}");
                        None
                    }
                    Err(_) => None,
                };
                if client.is_none() {
                    dial_at = Instant::now() + backoff.failed();
                }
                continue;
            };
            let (available, leased, demand) = node.report(node_id);
            let beat = HeadRequest::Heartbeat {
                node_id,
                available,
                leased,
                demand,
            };
            let answer = tokio::time::timeout(self.patience(), c.request(&beat))
                .await
                .unwrap_or_else(|_| {
                    Err(ClientError::Unexpected(format!(
                        "no heartbeat answer within {:?}",
                        self.patience()
                    )))
                });
            match answer {
                Ok(HeadResponse::HeartbeatAck) => {
                    backoff.succeeded();
                    beats_since_status = beats_since_status.saturating_add(1);
                    if beats_since_status < status_every(cluster_nodes) {
                        continue;
                    }
                    let (epoch, version) = node.status_cursor();
                    let fetch = c.status_since(epoch, version);
                    if let Ok(Ok(delta)) = tokio::time::timeout(self.patience(), fetch).await {
                        beats_since_status = 0;
                        cluster_nodes = node.status(delta);
                    }
                }
                Ok(HeadResponse::ReRegister { reason }) => {
                    warn!(node = %node_id, %reason, "head asks to register again");
                    node.declared_dead(&reason);
                    let answer =
                        tokio::time::timeout(self.patience(), register(c, &self.registration));
                    match answer.await.unwrap_or_else(|_| {
                        Err(ClientError::Unexpected(format!(
                            "no registration answer within {:?}",
                            self.patience()
                        )))
                    }) {
                        Ok((id, inc, _)) => {
                            info!(old = %node_id, node = %id, incarnation = inc, "registered as a new incarnation");
                            node_id = id;
                            node.new_id(id);
                            // A new incarnation learns the cluster at once.
                            beats_since_status = u32::MAX - 1;
                        }
                        Err(e) => warn!("re-registration failed: {e}"),
                    }
                }
                Ok(HeadResponse::Leave { reason }) => {
                    // DR-2: drained; stop without registering again.
                    info!(node = %node_id, %reason, "drained: leaving the cluster");
                    c.close();
                    return node_id;
                }
                Ok(other) => warn!("unexpected heartbeat answer: {other:?}"),
                Err(e) => {
                    warn!("heartbeat failed ({e}); reconnecting to the head");
                    c.close();
                    client = None;
                    dial_at = Instant::now() + backoff.failed();
                    // Requests should not wait on the dead connection either.
                    self.link.reset();
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

#[cfg(test)]
mod tests {
    use super::status_every;

    #[test]
    fn the_status_is_fetched_every_beat_in_a_small_cluster_and_rarer_in_a_large_one() {
        assert_eq!(status_every(0), 1);
        assert_eq!(status_every(499), 1);
        assert_eq!(status_every(500), 2);
        assert_eq!(status_every(10_000), 21);
        // All raylets together: at most ~500 nodes' worth per beat each.
        for n in [1usize, 100, 1_000, 10_000, 100_000] {
            let per_beat = n * n / status_every(n) as usize;
            assert!(per_beat <= 500 * n, "{n} nodes: {per_beat}");
        }
    }
}
