//! Calls to an actor hosted on another node: one ordered QUIC stream per
//! actor (calls from here arrive there in the order they were sent), kept
//! across the actor's moves. Invariants:
//!
//! - **AR-1** a call in flight when the actor's node is lost is re-sent to
//!   its next incarnation while `attempt < max_task_retries`, else it fails
//!   with `ActorDied` naming the node's loss;
//! - **AR-2** calls not yet sent when the node is lost wait (bounded by
//!   [`LOCATE_TIMEOUT`]) for the actor to come back, then go out in order,
//!   after the re-sent ones;
//! - **AR-3** the node counts as lost once the head's status (refreshed at
//!   every heartbeat) says it is dead, or when the stream breaks — not only
//!   at QUIC's idle timeout, which is far longer than failure detection; a
//!   call is never written to a node this raylet already knows is lost.

use super::dispatch::{died, Action, Owner};
use super::service::TaskService;
use crate::ids::{ActorId, NodeId, TaskId};
use crate::proto::head::{ActorState, HeadRequest, HeadResponse};
use crate::proto::raylet::{PeerActorResult, PeerRequest};
use crate::proto::task::TaskSpec;
use crate::proto::task::MAX_TASK_FRAME;
use crate::transport::rpc::{read_msg, write_frame};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a call waits for its actor to get a node (creation or restart).
pub(super) const LOCATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long dialling the actor's node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the head says the actor lives.
enum Location {
    /// On a peer.
    Peer {
        node: NodeId,
        addr: SocketAddr,
        max_task_retries: u32,
    },
    /// Here (it restarted on this node).
    Here,
}

/// Calls written to the stream and not answered yet, in send order; the
/// spec is kept only while the call may be re-sent (AR-1).
type InFlight = Arc<Mutex<VecDeque<(Owner, TaskId, Option<TaskSpec>)>>>;

impl TaskService {
    /// Where `actor` lives, waiting while it has no node or is still on
    /// `avoid` (a node whose link just broke). `Err` is why it never will.
    async fn locate(
        &self,
        actor: ActorId,
        avoid: Option<(NodeId, &str)>,
    ) -> Result<Location, String> {
        let deadline = Instant::now() + LOCATE_TIMEOUT;
        loop {
            let req = HeadRequest::GetActor { actor_id: actor };
            match self.transfer.head_request(&req).await {
                Ok(HeadResponse::Actor(Some(info))) => match info.node_id {
                    _ if info.state == ActorState::Dead => {
                        return Err(info.death_reason.unwrap_or_else(|| "it is dead".into()))
                    }
                    Some(n)
                        if avoid.is_some_and(|(a, _)| a == n) || self.node_lost(n).is_some() => {}
                    Some(n) if n == self.node() => {
                        if self.disp().hosts_actor(actor) {
                            return Ok(Location::Here);
                        }
                        return Err(
                            "the head places it on this node, which does not host it".into()
                        );
                    }
                    Some(node) => {
                        let addr = info.node_address.parse().map_err(|e| {
                            format!("bad node address {:?}: {e}", info.node_address)
                        })?;
                        return Ok(Location::Peer {
                            node,
                            addr,
                            max_task_retries: info.max_task_retries,
                        });
                    }
                    None => {}
                },
                Ok(HeadResponse::Actor(None)) => return Err("no such actor".into()),
                Ok(other) => return Err(format!("unexpected head answer {other:?}")),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("cannot ask the head: {e}"))
                }
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                let secs = LOCATE_TIMEOUT.as_secs();
                return Err(match avoid {
                    Some((_, why)) => format!("{why}, and it did not come back within {secs} s"),
                    None => format!("it got no node within {secs} s"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Serves the calls routed to `actor` until it is dead or unreachable.
    pub(super) async fn run_link(
        self: Arc<Self>,
        actor: ActorId,
        mut rx: mpsc::UnboundedReceiver<(Owner, TaskSpec)>,
    ) {
        let mut resend: VecDeque<(Owner, TaskSpec)> = VecDeque::new();
        let mut lost: Option<(NodeId, String)> = None;
        let why = loop {
            let avoid = lost.as_ref().map(|(n, w)| (*n, w.as_str()));
            let (node, addr, retries) = match self.locate(actor, avoid).await {
                Ok(Location::Peer {
                    node,
                    addr,
                    max_task_retries,
                }) => (node, addr, max_task_retries),
                Ok(Location::Here) => return self.hand_back(actor, rx, resend),
                Err(e) => break e,
            };
            let inflight: InFlight = Arc::default();
            let why = self
                .link_session(actor, node, addr, retries, &mut rx, &mut resend, &inflight)
                .await;
            self.peers.forget(addr);
            // AR-1: re-send what may be, fail the rest, naming the loss.
            let mut failed = Vec::new();
            let mut again = VecDeque::new();
            for (owner, task_id, spec) in
                inflight.lock().unwrap_or_else(|p| p.into_inner()).drain(..)
            {
                match spec {
                    Some(mut s) if s.attempt < retries => {
                        s.attempt += 1;
                        again.push_back((owner, s));
                    }
                    _ => failed.push(Action::Reply {
                        owner,
                        task_id,
                        outcome: died(actor, format!("{why} before this call's result came back")),
                    }),
                }
            }
            again.extend(resend.drain(..));
            resend = again;
            self.apply(failed);
            lost = Some((node, why));
        };
        self.actor_links.remove(&actor);
        rx.close();
        let mut failed: Vec<(Owner, TaskId)> =
            resend.into_iter().map(|(o, t)| (o, t.task_id)).collect();
        while let Ok((owner, task)) = rx.try_recv() {
            failed.push((owner, task.task_id));
        }
        let actions = failed
            .into_iter()
            .map(|(owner, task_id)| Action::Reply {
                owner,
                task_id,
                outcome: died(actor, why.clone()),
            })
            .collect();
        self.apply(actions);
    }

    /// The actor restarted here: its calls go to the local dispatcher.
    fn hand_back(
        self: &Arc<Self>,
        actor: ActorId,
        mut rx: mpsc::UnboundedReceiver<(Owner, TaskSpec)>,
        resend: VecDeque<(Owner, TaskSpec)>,
    ) {
        self.actor_links.remove(&actor);
        rx.close();
        let mut calls: Vec<(Owner, TaskSpec)> = resend.into_iter().collect();
        while let Ok(c) = rx.try_recv() {
            calls.push(c);
        }
        for (owner, task) in calls {
            self.submit(task, owner);
        }
    }

    /// One stream to the actor's node; returns why it ended.
    #[allow(clippy::too_many_arguments)] // one session's state, borrowed from run_link
    async fn link_session(
        self: &Arc<Self>,
        actor: ActorId,
        node: NodeId,
        addr: SocketAddr,
        retries: u32,
        rx: &mut mpsc::UnboundedReceiver<(Owner, TaskSpec)>,
        resend: &mut VecDeque<(Owner, TaskSpec)>,
        inflight: &InFlight,
    ) -> String {
        let lost = |e: &dyn std::fmt::Display| format!("lost the actor's node {node}: {e}");
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, self.peers.connect(addr)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return lost(&e),
            Err(_) => return lost(&format!("no answer from {addr}")),
        };
        let (mut s, mut r) = match conn.open_bi().await {
            Ok(sr) => sr,
            Err(e) => return lost(&e),
        };
        if let Err(e) = write_frame(&mut s, &PeerRequest::ActorStream { actor_id: actor }).await {
            return lost(&e);
        }
        let reader = async {
            loop {
                match read_msg::<PeerActorResult, _>(&mut r, MAX_TASK_FRAME).await {
                    Ok(Some(res)) => {
                        let owner = {
                            let mut f = inflight.lock().unwrap_or_else(|p| p.into_inner());
                            let pos = f.iter().position(|(_, t, _)| *t == res.task_id);
                            pos.and_then(|p| f.remove(p)).map(|(o, _, _)| o)
                        };
                        if let Some(owner) = owner {
                            self.apply(vec![Action::Reply {
                                owner,
                                task_id: res.task_id,
                                outcome: res.outcome,
                            }]);
                        }
                    }
                    Ok(None) => return lost(&"it closed the call stream"),
                    Err(e) => return lost(&e),
                }
            }
        };
        let writer = async {
            loop {
                let next = match resend.pop_front() {
                    Some(c) => Some(c),
                    None => rx.recv().await,
                };
                let Some((owner, task)) = next else {
                    return "the link closed".to_string();
                };
                if let Some(why) = self.node_lost(node) {
                    resend.push_front((owner, task));
                    return format!("its node {node} died ({why})");
                }
                let keep = (task.attempt < retries).then(|| task.clone());
                inflight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back((owner, task.task_id, keep));
                if let Err(e) = write_frame(&mut s, &task).await {
                    return lost(&e);
                }
            }
        };
        let watch = async {
            let why = self.peers.lost(node).await;
            format!("its node {node} died ({why})")
        };
        tokio::select! {
            w = reader => w,
            w = writer => w,
            w = watch => w,
        }
    }
}
