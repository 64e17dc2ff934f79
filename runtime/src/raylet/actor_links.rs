//! Actors in the raylet shell: registering new actors with the head (with
//! what recreates them elsewhere if this node dies), reporting their
//! states, finding named actors, handing calls to the per-actor link of
//! [`super::actor_route`], and serving the links of peers.

use super::dispatch::{died, Action, Owner};
use super::service::TaskService;
use crate::ids::ActorId;
use crate::proto::head::{ActorInfo, ActorState, ErrorKind, HeadRequest, HeadResponse};
use crate::proto::task::PeerSubmit;
use crate::proto::task::{Failure, Outcome, TaskKind, TaskSpec};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::warn;

impl TaskService {
    /// A new actor from a local owner: register it (its name must be free),
    /// then schedule its constructor.
    pub(super) fn create_actor(self: &Arc<Self>, spec: TaskSpec, owner: Owner) {
        let TaskKind::CreateActor(c) = &spec.kind else {
            return;
        };
        let info = ActorInfo {
            actor_id: c.actor_id,
            class: spec.function.clone(),
            name: c.name.clone(),
            namespace: c.namespace.clone(),
            state: ActorState::Pending,
            node_id: None,
            node_address: String::new(),
            restarts: 0,
            death_reason: None,
            detached: c.detached,
            job_id: spec.job_id,
            max_task_retries: c.max_task_retries,
            residency: spec.residency.as_deref().cloned(),
        };
        self.disp().announce_actor(c.actor_id);
        let actor = c.actor_id;
        let me = self.clone();
        tokio::spawn(async move {
            let create = me.creation_for_head(&spec).await;
            match me
                .transfer
                .head_request(&HeadRequest::RegisterActor(info, create))
                .await
            {
                Ok(HeadResponse::Ok) => {
                    me.submit(spec, owner);
                }
                other => {
                    use crate::client::ClientError;
                    use crate::proto::head::ErrorKind;
                    let failure = match other {
                        Err(ClientError::Refused {
                            kind: ErrorKind::Conflict,
                            message,
                        }) => Failure::NameTaken { detail: message },
                        Err(ClientError::Refused { message, .. }) => {
                            Failure::BadCall { detail: message }
                        }
                        Err(e) => Failure::HeadUnreachable {
                            detail: format!("cannot register the actor: {e}"),
                        },
                        Ok(answer) => Failure::BadCall {
                            detail: format!("the head did not register the actor: {answer:?}"),
                        },
                    };
                    let why = describe_failure(&failure);
                    me.act(|d| {
                        let mut actions = d.actor_registration_failed(actor, why);
                        actions.push(Action::Reply {
                            owner,
                            task_id: spec.task_id,
                            outcome: Outcome::Failed(failure),
                        });
                        actions
                    });
                }
            }
        });
    }

    /// What the head needs to run this creation on another node if this
    /// one dies: the job (its binary published here, so that node can pull
    /// it) and the constructor task. `None` if the actor may not restart
    /// (nothing to keep) or the job is unknown here.
    async fn creation_for_head(&self, spec: &TaskSpec) -> Option<Box<PeerSubmit>> {
        match &spec.kind {
            TaskKind::CreateActor(c) if c.max_restarts > 0 => {}
            _ => return None,
        }
        let job = self.jobs.get(&spec.job_id).map(|j| j.clone())?;
        if self.local_jobs.contains_key(&job.job_id) {
            if let Err(e) = super::workers::publish_binary(&self.store, &job).await {
                warn!("cannot publish the job binary for actor restarts: {e}");
            }
        }
        Some(Box::new(PeerSubmit {
            job,
            task: spec.clone(),
        }))
    }

    /// Tells the head an actor's new state. Reports go out one at a time in
    /// the order they were made, so the head never sees Dead before Alive.
    pub(super) fn report_actor(
        self: &Arc<Self>,
        actor: ActorId,
        state: ActorState,
        restarts: u32,
        reason: Option<String>,
    ) {
        if state == ActorState::Dead {
            // No incarnation of it will listen again.
            self.remove_direct_socket(&actor.to_string());
        }
        let req = HeadRequest::UpdateActor {
            actor_id: actor,
            state,
            node: Some((self.node(), self.env.node_address.clone())),
            restarts,
            reason,
        };
        let tx = self.reports.get_or_init(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<HeadRequest>();
            let me = self.clone();
            tokio::spawn(async move {
                // The link waits (bounded) for a head that is away: reports
                // queue here, in order, until it is back.
                while let Some(req) = rx.recv().await {
                    match me.transfer.head_request(&req).await {
                        // AT-2: the head gave this actor up for dead; this
                        // incarnation stops for good.
                        Err(crate::client::ClientError::Refused {
                            kind: ErrorKind::Conflict,
                            message,
                        }) => {
                            if let HeadRequest::UpdateActor { actor_id, .. } = &req {
                                warn!(actor = %actor_id, "stopping an actor the head holds dead: {message}");
                                let kill = super::dispatch::kill_call_because(*actor_id, &message);
                                me.act(|d| d.submit(kill, Owner::Raylet));
                            }
                        }
                        Err(e) => warn!("cannot report an actor's state: {e}"),
                        Ok(_) => {}
                    }
                }
            });
            tx
        });
        let _ = tx.send(req);
    }

    /// Finds a named actor for a process of `job` (the head judges that
    /// job's owner); answers `request_id` with its archived id and
    /// residency rule.
    pub(super) fn lookup_actor(
        self: &Arc<Self>,
        owner: Owner,
        request_id: crate::ids::TaskId,
        job: Option<crate::ids::JobId>,
        (namespace, name): (String, String),
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let req = HeadRequest::Relayed {
                job,
                request: crate::proto::head::RelayedRequest::NamedActor {
                    namespace: namespace.clone(),
                    name: name.clone(),
                },
            };
            let outcome = match me.transfer.head_request(&req).await {
                Ok(HeadResponse::Actor(Some(info))) => {
                    let found = (info.actor_id, info.residency);
                    match rkyv::to_bytes::<rkyv::rancor::Error>(&found) {
                        Ok(b) => Outcome::Inline(b.to_vec()),
                        Err(e) => Outcome::Failed(Failure::BadCall {
                            detail: e.to_string(),
                        }),
                    }
                }
                // Refused (AC-1): the head's sentence; any other error
                // is the head's trouble, as when it cannot be reached.
                Err(crate::client::ClientError::Refused {
                    kind: ErrorKind::Forbidden,
                    message,
                })
                | Ok(HeadResponse::Error {
                    kind: ErrorKind::Forbidden,
                    message,
                }) => Outcome::Failed(Failure::BadCall { detail: message }),
                Ok(HeadResponse::Error { message, .. }) => {
                    Outcome::Failed(Failure::HeadUnreachable {
                        detail: format!("cannot ask the head for actor {name:?}: {message}"),
                    })
                }
                Ok(_) => Outcome::Failed(Failure::NoSuchActor { namespace, name }),
                Err(e) => Outcome::Failed(Failure::HeadUnreachable {
                    detail: format!("cannot ask the head for actor {name:?}: {e}"),
                }),
            };
            me.apply(vec![Action::Reply {
                owner,
                task_id: request_id,
                outcome,
            }]);
        });
    }

    /// Sends a call to the node hosting its actor, in order.
    pub(super) fn route_call(self: &Arc<Self>, actor: ActorId, owner: Owner, task: TaskSpec) {
        let mut item = Some((owner, task));
        for _ in 0..2 {
            let tx = self
                .actor_links
                .entry(actor)
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    let me = self.clone();
                    tokio::spawn(async move { me.run_link(actor, rx).await });
                    tx
                })
                .clone();
            match tx.send(item.take().expect("item present")) {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => {
                    self.actor_links.remove(&actor);
                    item = Some(back);
                }
            }
        }
        if let Some((owner, task)) = item {
            let outcome = died(actor, "no route to the actor's node".into());
            self.apply(vec![Action::Reply {
                owner,
                task_id: task.task_id,
                outcome,
            }]);
        }
    }
}

/// A failure's sentence, for the actor's death reason.
fn describe_failure(f: &Failure) -> String {
    match f {
        Failure::NameTaken { detail }
        | Failure::BadCall { detail }
        | Failure::HeadUnreachable { detail } => detail.clone(),
        other => format!("{other:?}"),
    }
}
