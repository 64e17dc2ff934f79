//! What the raylet does for reference counting (`api/ownership.rs` and
//! `api/borrowing.rs` keep the counts):
//!
//! - **Frees.** An owner's `Free` drops this node's copies at once and asks
//!   the head to have every other holder drop theirs.
//! - **The directory.** Copies sealed and removed here (freed, evicted)
//!   reach the head's object directory in the order they happened, in
//!   batches, from one loop: while a batch is in flight the next gathers.
//!   Residency rules claimed here go first (`residency_claims.rs`).
//! - **Borrows.** A process that keeps refs it received inside a task's
//!   arguments registers with the task's submitter, and tells it when it
//!   drops them; the raylet hands either to the submitter's connection, here
//!   or on its node ([`PeerRequest::Borrows`]). A local process that goes
//!   (exits, is killed) still borrowing has its borrows released in its
//!   name ([`super::borrow_ledger`]).

use super::copy_report::Next;
use super::dispatch::Owner;
use super::service::TaskService;
use super::store_server::StoreServer;
use super::transfer::Transfer;
use crate::ids::{NodeId, TaskId};
use crate::proto::head::{HeadRequest, HeadResponse};
use crate::proto::raylet::PeerRequest;
use crate::proto::task::{LocalEvent, Outcome, ReplyTo};
use crate::transport::rpc::call;
use prism_objectstore::{CopyChange, ObjectId};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// How often copy changes are looked for when nothing wakes the loop (an
/// eviction inside another client's create does not).
const SWEEP: Duration = Duration::from_millis(250);
/// How long a borrow is given to reach a submitter on another node.
const BORROW_TIMEOUT: Duration = Duration::from_secs(10);

impl Transfer {
    /// Reports this store's copy changes (OS-7) and queued frees to the
    /// head, forever. A batch the head could not be reached for is kept
    /// and sent again, in order, with what came after it.
    pub async fn report_copies(self: Arc<Self>, server: Arc<StoreServer>) {
        let mut report = super::copy_report::CopyReport::default();
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(SWEEP) => {}
            }
            let sealed = server.lock().take_changes().into_iter().map(|c| match c {
                CopyChange::Sealed { id, size } => (id, Some(size as u64)),
                CopyChange::Removed { id } => (id, None),
            });
            // Every copy taken above had its rule claimed before it was
            // sealed: the claims are taken after it (RC-1).
            let sealed: Vec<_> = sealed.collect();
            let mut next = report.round(sealed, self.take_claims());
            if let Next::Rules(rules) = next {
                let (rules, verdict) = self.send_rules(rules).await;
                let judged = verdict.is_some();
                next = report.rules_answered(rules, verdict);
                if !judged {
                    continue;
                }
            }
            let frees = std::mem::take(&mut *self.frees.lock().unwrap_or_else(|p| p.into_inner()));
            let node_id = self.node_id();
            if let Next::Copies(changes) = next {
                let n = changes.len();
                let req = HeadRequest::UpdateObjectLocations { node_id, changes };
                match self.link.request(&req).await {
                    Ok(HeadResponse::Error { message, .. }) => {
                        warn!("the head refused object locations: {message}");
                        report.copies_answered(true);
                    }
                    Ok(_) => report.copies_answered(true),
                    Err(e) => {
                        warn!(n, "cannot report object locations yet: {e}");
                        report.copies_answered(false);
                        self.requeue_frees(frees);
                        continue;
                    }
                }
            }
            if !frees.is_empty() {
                let req = HeadRequest::FreeObjects {
                    node_id,
                    objects: frees.clone(),
                };
                if let Err(e) = self.link.request(&req).await {
                    warn!(
                        n = frees.len(),
                        "cannot tell the head of freed objects yet: {e}"
                    );
                    self.requeue_frees(frees);
                }
            }
        }
    }

    fn requeue_frees(&self, mut frees: Vec<ObjectId>) {
        let mut q = self.frees.lock().unwrap_or_else(|p| p.into_inner());
        frees.append(&mut q);
        *q = frees;
    }

    /// Queues frees for the head (the loop sends them).
    pub fn queue_frees(&self, objects: &[ObjectId]) {
        self.frees
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(objects);
        self.wake.notify_one();
    }
}

impl TaskService {
    /// An owner on this node freed `objects`: this node's copies go now
    /// (or when their last reader here is done), the others through the head.
    pub(super) fn free_objects(&self, objects: Vec<ObjectId>) {
        self.drop_copies(&objects);
        self.transfer.queue_frees(&objects);
    }

    /// Drops this node's copies of `objects` (the head relays an owner's free).
    pub(super) fn drop_copies(&self, objects: &[ObjectId]) {
        for id in objects {
            self.store.forget(*id);
        }
        self.transfer.wake();
    }

    /// Hands a borrow (or its end) to the process at `to`; a start is
    /// answered to `owner` as `Finished { request_id }` once handed on.
    pub(super) fn route_borrows(
        self: &Arc<Self>,
        owner: Owner,
        request_id: Option<TaskId>,
        to: ReplyTo,
        objects: Vec<ObjectId>,
        release: bool,
    ) {
        let conn = match owner {
            Owner::Local(conn) => Some(conn),
            _ => None,
        };
        // A process's own release is handed on only if it matched a
        // recorded start (BL-2); the raylet's releases for the gone come
        // from the ledger itself.
        let objects = match (conn, release) {
            (Some(conn), true) => self.borrow_ledger().released(conn, to, &objects),
            _ => objects,
        };
        if release && objects.is_empty() {
            return;
        }
        let started = (!release).then(|| objects.clone());
        let ack = move |me: &Arc<TaskService>, handed: bool| {
            if let (Some(conn), Some(objects), true) = (conn, started, handed) {
                me.borrow_started(conn, to, objects);
            }
            if let Some(task_id) = request_id {
                let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&handed)
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                me.send(
                    owner,
                    &LocalEvent::Finished {
                        task_id,
                        outcome: Outcome::Inline(bytes),
                    },
                );
            }
        };
        if to.node == self.node() {
            let handed = self.deliver_borrows(to.conn, objects, release);
            ack(self, handed);
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let req = PeerRequest::Borrows {
                from: me.node(),
                conn: to.conn,
                objects,
                release,
            };
            let handed = me
                .ask_peer(to.node, &req, "a borrowed ref's submitter")
                .await
                .unwrap_or(false);
            ack(&me, handed);
        });
    }

    /// Sends `req` to the raylet of `node`, which answers whether it
    /// handed it on; `None` if it could not be asked within
    /// [`BORROW_TIMEOUT`] (`what` it was for is logged).
    pub(super) async fn ask_peer(
        &self,
        node: NodeId,
        req: &PeerRequest,
        what: &str,
    ) -> Option<bool> {
        let sent = async {
            let addr = self
                .peers
                .addr(node, Duration::from_secs(2))
                .await
                .ok_or_else(|| format!("node {node} is not known"))?;
            let conn = self.peers.connect(addr).await?;
            call::<_, bool>(&*conn, req, 1 << 10)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(BORROW_TIMEOUT, sent).await {
            Ok(Ok(handed)) => Some(handed),
            Ok(Err(e)) => {
                debug!(%node, "cannot reach {what}: {e}");
                None
            }
            Err(_) => None,
        }
    }

    fn borrow_ledger(&self) -> std::sync::MutexGuard<'_, super::borrow_ledger::BorrowLedger> {
        self.borrows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Local connection `conn`'s borrow reached its submitter: recorded,
    /// or, if `conn` closed meanwhile, released at once in its name. (The
    /// check is under the ledger's lock, which a closing connection takes
    /// only after it left `conns`.)
    fn borrow_started(self: &Arc<Self>, conn: u64, to: ReplyTo, objects: Vec<ObjectId>) {
        let mut ledger = self.borrow_ledger();
        if self.conns.contains_key(&conn) {
            ledger.started(conn, to, &objects);
        } else {
            drop(ledger);
            self.route_borrows(Owner::Raylet, None, to, objects, true);
        }
    }

    /// Local connection `conn` closed: what it still borrowed is released
    /// in its name (BL-1), so its submitters do not keep it for the dead.
    pub(super) fn release_borrows_of(self: &Arc<Self>, conn: u64) {
        let me = ReplyTo {
            node: self.node(),
            conn,
        };
        self.lent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget_submitter(me);
        let held = self.borrow_ledger().closed(conn);
        for (to, objects) in held {
            debug!(conn, n = objects.len(), submitter = ?to, "releasing a gone process's borrows");
            self.route_borrows(Owner::Raylet, None, to, objects, true);
        }
    }

    /// Processes on node `from` borrow (or stop borrowing) from this node's
    /// connection `conn`: handed on and recorded (BL-1), `false` if it is gone.
    pub(super) fn deliver_lent(
        &self,
        from: NodeId,
        conn: u64,
        objects: Vec<ObjectId>,
        release: bool,
    ) -> bool {
        let to = ReplyTo {
            node: self.node(),
            conn,
        };
        let mut lent = self.lent.lock().unwrap_or_else(|p| p.into_inner());
        // Only releases that match a recorded start are handed on (BL-2):
        // a node declared dead had its borrows released already, and its
        // processes speak under a new id if it came back.
        let objects = if release {
            lent.released(from, to, &objects)
        } else {
            objects
        };
        if release && objects.is_empty() {
            return true;
        }
        let started = (!release).then(|| objects.clone());
        let handed = self.deliver_borrows(conn, objects, release);
        if let (Some(objects), true) = (started, handed) {
            lent.started(from, to, &objects);
        }
        handed
    }

    /// Nodes declared dead: what their processes borrowed from local ones
    /// is released in their name (BL-1). One look at the ledger for every
    /// status (the dead stay listed), none when nothing is lent.
    pub(super) fn release_borrows_from(&self, dead: impl Iterator<Item = NodeId>) {
        let held: Vec<_> = {
            let mut lent = self.lent.lock().unwrap_or_else(|p| p.into_inner());
            if lent.connections() == 0 {
                return;
            }
            dead.flat_map(|node| lent.closed(node)).collect()
        };
        for (to, objects) in held {
            debug!(
                conn = to.conn,
                n = objects.len(),
                "releasing a dead node's borrows"
            );
            self.deliver_borrows(to.conn, objects, true);
        }
    }

    /// Hands a borrow to this node's connection `conn`; `false` if it is gone.
    pub(super) fn deliver_borrows(&self, conn: u64, objects: Vec<ObjectId>, release: bool) -> bool {
        if !self.conns.contains_key(&conn) {
            return false;
        }
        self.send(
            Owner::Local(conn),
            &LocalEvent::Borrows { objects, release },
        );
        true
    }
}
