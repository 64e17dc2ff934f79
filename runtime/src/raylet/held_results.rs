//! What the raylet does for refs held inside results (RR-1 in
//! `api/result_refs.rs`): it hands an owner's release to the process that
//! holds them, here or on its node ([`PeerRequest::ReleaseHeld`]), and it
//! releases them in the owner's name when the owner goes first
//! ([`super::held_ledger`]):
//!
//! - the holder notes each hold with its raylet (`LocalRequest::HeldFor`),
//!   before its outcome leaves it;
//! - the owner's raylet keeps the holds by owner connection (an owner on
//!   another node has them noted there by [`PeerRequest::HeldFor`]): when
//!   the connection closes, it releases them;
//! - the holder's raylet keeps the holds of owners on other nodes by node:
//!   when the head declares that node dead, it releases them.
//!
//! An owner already gone when its hold is noted has it released at once.
//! A hold or a release that could not be sent to a raylet (no address, no
//! connection) is sent again, with backoff (HR-1), until it is sent, that
//! node is declared dead (a hold is then released in the owner's name, as
//! above), the holder goes, or [`PATIENCE`] runs out. One sent but not
//! answered is not sent again (the ledgers pair each hold with one
//! release): only then, or when patience ran out, is a hold kept until its
//! holder exits (a leak, never an early free). A release is recorded only
//! for a holder still here (one that went took its holds with it), so nothing waits in
//! the ledgers for a hold that will never come. An owner that names this
//! raylet by an id it had before registering again is local: its old id
//! listed dead releases nothing. (An owner on another node declared dead
//! is taken as gone, as for borrows, even if its processes lived on.)

use super::held_ledger::HeldLedger;
use super::service::TaskService;
use crate::ids::NodeId;
use crate::proto::raylet::PeerRequest;
use crate::proto::task::{LocalEvent, ReplyTo};
use crate::transport::backoff::Backoff;
use crate::transport::rpc::{read_msg, write_msg};
use prism_objectstore::ObjectId;
use std::collections::HashSet;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// How long a hold or a release is sent again to a raylet that cannot be
/// reached.
const PATIENCE: Duration = Duration::from_secs(300);
/// How long one try may take, to connect or to be answered.
const TRY_FOR: Duration = Duration::from_secs(10);

/// How one try to tell a peer of a hold or its release went.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Told {
    /// It answered whether it handed the message on.
    Answered(bool),
    /// Not sent: no address, no connection, no stream.
    Unsent,
    /// Sent, but no answer came: it may have been handed on.
    Unknown,
}

/// What follows one try.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// Stop, with the peer's answer if it gave one.
    Done(Option<bool>),
    /// Try again after a backoff.
    Again,
}

/// HR-1: a message is sent again only if it was surely not sent (so no
/// hold or release reaches a ledger twice), and only while the peer's node
/// is not declared dead, the message still matters and [`PATIENCE`] lasts.
fn step(told: Told, lost: bool, wanted: bool, tried_for: Duration) -> Step {
    match told {
        Told::Answered(a) => Step::Done(Some(a)),
        Told::Unknown => Step::Done(None),
        Told::Unsent if lost || !wanted || tried_for >= PATIENCE => Step::Done(None),
        Told::Unsent => Step::Again,
    }
}

/// The holds a raylet keeps (see the module's docs).
#[derive(Debug, Default)]
pub struct Holds {
    /// For owners on this node, by their connection.
    by_conn: HeldLedger<u64>,
    /// Held by processes on this node for owners on others, by their node.
    by_node: HeldLedger<NodeId>,
    /// Dead nodes whose owners' holds were released (or that had none).
    dead: HashSet<NodeId>,
}

impl TaskService {
    fn holds(&self) -> MutexGuard<'_, Holds> {
        self.holds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Local process `conn` holds the refs inside `results` for `owner`.
    pub(super) fn note_held(self: &Arc<Self>, conn: u64, owner: ReplyTo, results: Vec<ObjectId>) {
        let holder = ReplyTo {
            node: self.node(),
            conn,
        };
        if self.is_me(owner.node) {
            // Under the lock a closing owner takes only after it left
            // `conns` (as for borrows): noted, or released now.
            let mut holds = self.holds();
            if self.conns.contains_key(&owner.conn) {
                holds.by_conn.held(owner.conn, holder, &results);
            } else {
                drop(holds);
                self.deliver_release_held(conn, results);
            }
            return;
        }
        {
            let mut holds = self.holds();
            if holds.dead.contains(&owner.node) {
                drop(holds);
                self.deliver_release_held(conn, results);
                return;
            }
            holds.by_node.held(owner.node, holder, &results);
        }
        let me = self.clone();
        tokio::spawn(async move {
            let req = PeerRequest::HeldFor {
                holder,
                owner_conn: owner.conn,
                results: results.clone(),
            };
            // Wanted while the holder holds them (it took them if it went).
            let noted = me
                .tell_peer(owner.node, &req, "a held result's owner", |s| {
                    s.conns.contains_key(&conn)
                })
                .await;
            if noted == Some(false) {
                debug!(
                    ?owner,
                    n = results.len(),
                    "a result's owner is gone: releasing its refs"
                );
                me.holds().by_node.unhold(owner.node, holder, &results);
                me.deliver_release_held(conn, results);
            }
        });
    }

    /// A peer's process `holder` holds the refs inside `results` for this
    /// node's connection `owner_conn`: noted, `false` if it is gone.
    pub(super) fn deliver_held_for(
        &self,
        holder: ReplyTo,
        owner_conn: u64,
        results: Vec<ObjectId>,
    ) -> bool {
        let mut holds = self.holds();
        if !self.conns.contains_key(&owner_conn) {
            return false;
        }
        holds.by_conn.held(owner_conn, holder, &results);
        true
    }

    /// Local process `conn` released `results`, whose refs `to` holds.
    pub(super) fn owner_released_held(
        self: &Arc<Self>,
        conn: u64,
        to: ReplyTo,
        results: Vec<ObjectId>,
    ) {
        {
            // Not for itself (never noted), nor for a local holder gone.
            let mut holds = self.holds();
            let local = self.is_me(to.node);
            if !local || (to.conn != conn && self.conns.contains_key(&to.conn)) {
                holds.by_conn.released(conn, to, &results);
            }
        }
        self.route_release_held(to, results);
    }

    /// Hands an owner's release of results to the process at `to` that
    /// ran their tasks (RR-1). Unlike a borrow's end it is not matched
    /// against a ledger: it releases no count, only what that process
    /// holds for those results.
    fn route_release_held(self: &Arc<Self>, to: ReplyTo, results: Vec<ObjectId>) {
        if self.is_me(to.node) {
            self.deliver_release_held(to.conn, results);
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let req = PeerRequest::ReleaseHeld {
                from: me.node(),
                conn: to.conn,
                results,
            };
            me.tell_peer(to.node, &req, "the holder of a result's refs", |_| true)
                .await;
        });
    }

    /// Sends `req` to the raylet of `node`, which answers whether it
    /// handed it on; sent again while it could not be sent and `wanted`
    /// holds (HR-1). `None`: no answer.
    async fn tell_peer(
        &self,
        node: NodeId,
        req: &PeerRequest,
        what: &str,
        wanted: impl Fn(&Self) -> bool,
    ) -> Option<bool> {
        let began = Instant::now();
        let mut backoff = Backoff::randomized(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let told = self.tell_once(node, req).await;
            let lost = self.peers.lost_reason(node).is_some();
            match step(told, lost, wanted(self), began.elapsed()) {
                Step::Done(None) if told == Told::Unsent && !lost && wanted(self) => {
                    warn!(%node, "cannot reach {what} for {PATIENCE:?}: giving up");
                    return None;
                }
                Step::Done(answer) => {
                    if answer.is_none() {
                        debug!(%node, ?told, "{what} did not answer");
                    }
                    return answer;
                }
                Step::Again => tokio::time::sleep(backoff.failed()).await,
            }
        }
    }

    /// One try of [`TaskService::tell_peer`].
    async fn tell_once(&self, node: NodeId, req: &PeerRequest) -> Told {
        let Some(addr) = self.peers.addr(node, Duration::from_secs(2)).await else {
            return Told::Unsent;
        };
        let opened = tokio::time::timeout(TRY_FOR, async {
            let conn = self.peers.connect(addr).await.ok()?;
            conn.open_bi().await.ok()
        })
        .await;
        let Ok(Some((mut tx, mut rx))) = opened else {
            // A connection that broke is dialled afresh next time.
            self.peers.forget(addr);
            return Told::Unsent;
        };
        let answered = tokio::time::timeout(TRY_FOR, async {
            write_msg(&mut tx, req).await.ok()?;
            read_msg::<bool, _>(&mut rx, 1 << 10).await.ok().flatten()
        })
        .await;
        match answered {
            Ok(Some(handed)) => Told::Answered(handed),
            _ => {
                // A connection that took the message but never answered
                // may be dead: the next message dials afresh (and, not
                // sent, is tried again).
                self.peers.forget(addr);
                Told::Unknown
            }
        }
    }

    /// Owners on node `from` released `results`, whose refs this node's
    /// connection `conn` holds: handed on, `false` if it is gone.
    pub(super) fn deliver_peer_release_held(
        &self,
        from: NodeId,
        conn: u64,
        results: Vec<ObjectId>,
    ) -> bool {
        let holder = ReplyTo {
            node: self.node(),
            conn,
        };
        {
            let mut holds = self.holds();
            if self.conns.contains_key(&conn) {
                holds.by_node.released(from, holder, &results);
            }
        }
        self.deliver_release_held(conn, results)
    }

    /// Hands the release of results to local connection `conn`.
    fn deliver_release_held(&self, conn: u64, results: Vec<ObjectId>) -> bool {
        if !self.conns.contains_key(&conn) {
            return false;
        }
        self.send(
            super::dispatch::Owner::Local(conn),
            &LocalEvent::ReleaseHeld { results },
        );
        true
    }

    /// Local connection `conn` closed: what others hold for it is released
    /// in its name (HL-1), and nothing is kept for what it held.
    pub(super) fn release_held_of(self: &Arc<Self>, conn: u64) {
        let me = ReplyTo {
            node: self.node(),
            conn,
        };
        let owed = {
            let mut holds = self.holds();
            if holds.by_conn.is_empty() && holds.by_node.is_empty() {
                return;
            }
            let me = |h: &ReplyTo| h.conn == me.conn && self.is_me(h.node);
            holds.by_conn.forget_holders(me);
            holds.by_node.forget_holders(me);
            holds.by_conn.closed(conn)
        };
        for (holder, results) in owed {
            debug!(
                conn,
                n = results.len(),
                ?holder,
                "releasing a gone owner's held results"
            );
            self.route_release_held(holder, results);
        }
    }

    /// Nodes declared dead: what local processes hold for owners there is
    /// released in their name (HL-1), and nothing is kept for what their
    /// processes held. Each dead node once (the dead stay listed).
    pub(super) fn release_held_from<I: Iterator<Item = NodeId>>(&self, dead: impl Fn() -> I) {
        let owed: Vec<_> = {
            let mut holds = self.holds();
            let new: HashSet<NodeId> = dead()
                .filter(|n| !holds.dead.contains(n) && !self.is_me(*n))
                .collect();
            if new.is_empty() {
                return;
            }
            holds.dead.extend(new.iter().copied());
            holds.by_conn.forget_holders(|h| new.contains(&h.node));
            new.iter()
                .flat_map(|node| holds.by_node.closed(*node))
                .collect()
        };
        for (holder, results) in owed {
            debug!(
                n = results.len(),
                ?holder,
                "releasing a dead node's held results"
            );
            self.deliver_release_held(holder.conn, results);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn hr_1_only_what_was_not_sent_is_sent_again_while_it_matters() {
        use Told::*;
        assert_eq!(step(Answered(true), false, true, S), Step::Done(Some(true)));
        assert_eq!(
            step(Answered(false), true, false, S),
            Step::Done(Some(false))
        );
        assert_eq!(step(Unsent, false, true, S), Step::Again);
        // Sent without an answer: maybe handed on, never sent twice.
        assert_eq!(step(Unknown, false, true, S), Step::Done(None));
        assert_eq!(step(Unsent, true, true, S), Step::Done(None));
        assert_eq!(step(Unsent, false, false, S), Step::Done(None));
        assert_eq!(step(Unsent, false, true, PATIENCE), Step::Done(None));
    }
}
