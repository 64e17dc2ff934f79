//! A draining node's primary object copies move before it leaves (DR-4):
//! it asks live, non-draining peers to take them — each pulls the object
//! from here over the usual transfer path, pins it as a primary copy and
//! tells the head's directory — so a `get` after the node left finds the
//! copy on a peer instead of losing the object or re-running its task. The
//! node does not end its drain early while copies are still moving.

use super::service::TaskService;
use crate::ids::NodeId;
use crate::proto::raylet::{PeerRequest, TakenCopies};
use crate::transport::rpc::call;
use prism_objectstore::ObjectId;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Most objects asked of one peer per request.
const BATCH: usize = 64;

impl TaskService {
    /// A peer asks this node to take primary copies (it is being drained):
    /// pull each one here and pin it.
    pub(super) async fn take_copies(
        &self,
        objects: Vec<ObjectId>,
        deadline_ms: u64,
    ) -> TakenCopies {
        let deadline = Instant::now() + Duration::from_millis(deadline_ms);
        let mut out = TakenCopies::default();
        for id in objects {
            match self.transfer.pull(&self.store, id, deadline).await {
                Ok(()) => match self.store.pin(id) {
                    Ok(()) => out.taken += 1,
                    Err(e) => out.failed.push(format!("{id}: {e}")),
                },
                Err(e) => out.failed.push(format!("{id}: {e}")),
            }
        }
        out
    }

    /// DR-4: moves every sealed primary copy here to the other nodes, spread
    /// over them; `moving` is set until it is done (or has failed, with the
    /// reasons logged). Runs once per drain.
    pub(super) fn move_primaries(self: &Arc<Self>, targets: Vec<NodeId>, deadline: Duration) {
        if self.moving.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let primaries: Vec<(ObjectId, usize)> = this
                .store
                .list()
                .into_iter()
                .filter(|(_, i)| i.sealed && i.pinned)
                .map(|(id, i)| (id, i.size))
                .collect();
            if primaries.is_empty() || targets.is_empty() {
                if !primaries.is_empty() {
                    warn!(
                        objects = primaries.len(),
                        "draining: no other node to move primary copies to"
                    );
                }
                this.moving.store(false, Ordering::Release);
                return;
            }
            let started = Instant::now();
            let bytes: usize = primaries.iter().map(|(_, s)| s).sum();
            let mut work = tokio::task::JoinSet::new();
            for (i, batch) in primaries.chunks(BATCH).enumerate() {
                let node = targets[i % targets.len()];
                let ids: Vec<ObjectId> = batch.iter().map(|(id, _)| *id).collect();
                let me = this.clone();
                let ms = deadline.as_millis() as u64;
                work.spawn(async move { (node, me.ask_to_take(node, ids, ms).await) });
            }
            let (mut taken, mut failed) = (0u32, 0usize);
            while let Some(done) = work.join_next().await {
                match done {
                    Ok((_, Ok(t))) => {
                        taken += t.taken;
                        failed += t.failed.len();
                        for why in t.failed.iter().take(3) {
                            warn!("draining: a copy did not move: {why}");
                        }
                    }
                    Ok((node, Err(e))) => {
                        warn!(%node, "draining: cannot move copies there: {e}");
                        failed += 1;
                    }
                    Err(e) => warn!("draining: {e}"),
                }
            }
            info!(
                taken,
                failed,
                mb = bytes as f64 / 1e6,
                secs = started.elapsed().as_secs_f64(),
                "draining: primary copies moved to other nodes"
            );
            this.moving.store(false, Ordering::Release);
        });
    }

    async fn ask_to_take(
        &self,
        node: NodeId,
        objects: Vec<ObjectId>,
        deadline_ms: u64,
    ) -> Result<TakenCopies, String> {
        let addr = self
            .peers
            .addr(node, Duration::from_secs(5))
            .await
            .ok_or("no address for the node")?;
        let conn = self.peers.connect(addr).await?;
        let req = PeerRequest::TakeCopies {
            objects,
            deadline_ms,
        };
        // Bounded: the peer has the drain's deadline to pull, and a little more.
        let limit = Duration::from_millis(deadline_ms) + Duration::from_secs(5);
        let exchange = async {
            tokio::time::timeout(
                limit,
                call::<_, TakenCopies>(&*conn, &req, crate::proto::task::MAX_TASK_FRAME),
            )
            .await
            .map_err(|_| format!("no answer within {limit:?}"))?
            .map_err(|e| e.to_string())
        };
        self.peers.unless_lost(node, exchange).await.and_then(|r| r)
    }
}
