//! The head core's shell: a ractor actor that owns the [`HeadCore`], feeds
//! it what arrives (one line per message) and carries out the effects it
//! returns: bundle operations and actor restarts through the
//! [`RayletDialer`], driver processes through the [`JobRunner`], and
//! answers to requests that waited.

use super::core::{Caller, Clock, Effect, HeadCore, Reply};
use super::dialer::RayletDialer;
use super::job_runner::{self, JobRunner};
use crate::ids::{ActorId, JobId, NodeId};
use crate::proto::head::{
    ErrorKind, HeadRequest, HeadResponse, JobInfo, JobSubmission, RegisterNode,
};
use crate::proto::placement::BundleReply;
use crate::proto::raylet::{PeerRequest, PeerTaskResponse};
use crate::proto::task::{Failure, Outcome};
use crate::raylet::workers::describe_exit;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::HashMap;
use std::sync::Arc;
use tracing::{info, warn};

/// What the head's actor hears.
pub(super) enum HeadMsg {
    /// A request the core answers (now or later).
    Request(Caller, HeadRequest, RpcReplyPort<HeadResponse>),
    /// A raylet registers (the shell draws its id).
    Register(RegisterNode, RpcReplyPort<HeadResponse>),
    /// A job submitted through the head (the shell draws its id).
    Submit(JobSubmission, RpcReplyPort<HeadResponse>),
    /// A job's row.
    Job(JobId, RpcReplyPort<Option<JobInfo>>),
    /// A driver's connection closed.
    DriverGone(JobId),
    /// A raylet answered bundle operations (or could not be asked).
    Bundles {
        pass: u64,
        node: NodeId,
        result: Result<Vec<BundleReply>, String>,
    },
    /// A restart could not be handed to its raylet.
    RestartFailed(ActorId, String),
    /// A submitted job's driver exited.
    JobExited(JobId, Option<i32>, String),
    /// Time passes.
    Tick,
}

/// The actor's state: the core and what carries out its effects.
pub(super) struct Shell {
    pub(super) core: HeadCore,
    pub(super) dialer: Arc<RayletDialer>,
    pub(super) jobs: JobRunner,
    pub(super) me: Option<ActorRef<HeadMsg>>,
    waiters: HashMap<u64, RpcReplyPort<HeadResponse>>,
}

impl Shell {
    pub(super) fn new(core: HeadCore, dialer: Arc<RayletDialer>, jobs: JobRunner) -> Shell {
        Shell {
            core,
            dialer,
            jobs,
            me: None,
            waiters: HashMap::new(),
        }
    }

    fn reply(&mut self, reply: Reply, port: RpcReplyPort<HeadResponse>) {
        // A dropped reply port means the caller gave up; nothing to do.
        match reply {
            Reply::Now(r) => drop(port.send(r)),
            Reply::Later(waiter) => drop(self.waiters.insert(waiter, port)),
        }
    }

    fn submit(&mut self, now: Clock, sub: JobSubmission) -> HeadResponse {
        match self.jobs.check(&sub) {
            Ok(()) => self.core.submit_job(now, JobId::random(), sub),
            Err(message) => HeadResponse::Error {
                kind: ErrorKind::BadRequest,
                message,
            },
        }
    }

    /// Carries out everything the core asked for.
    fn carry_out(&mut self) {
        while let Some(effect) = self.core.poll_effect() {
            match effect {
                Effect::Answer { waiter, response } => {
                    if let Some(port) = self.waiters.remove(&waiter) {
                        let _ = port.send(response);
                    }
                }
                Effect::Bundles {
                    pass,
                    node,
                    addr,
                    ops,
                } => self.spawn(move |dialer, me| async move {
                    let result = dialer.call(&addr, &PeerRequest::Bundles(ops)).await;
                    let _ = me.cast(HeadMsg::Bundles { pass, node, result });
                }),
                Effect::RestartActor {
                    actor,
                    node,
                    addr,
                    create,
                } => self.spawn(move |dialer, me| async move {
                    info!(%actor, %node, "restarting an actor whose node died");
                    let req = PeerRequest::Submit(create);
                    match dialer
                        .call_until_done::<_, PeerTaskResponse>(&addr, &req)
                        .await
                    {
                        Ok(PeerTaskResponse {
                            outcome: Outcome::Failed(f),
                        }) => {
                            warn!(%actor, %node, "the actor's restart failed: {}", describe(&f))
                        }
                        Ok(_) => info!(%actor, %node, "actor restarted"),
                        Err(e) => {
                            let why = format!("its restart on node {node} failed: {e}");
                            let _ = me.cast(HeadMsg::RestartFailed(actor, why));
                        }
                    }
                }),
                Effect::StartJob { job, submission } => self.start_job(job, submission),
                Effect::SignalJob { pid, grace, .. } => job_runner::signal(pid, grace),
            }
        }
    }

    fn start_job(&mut self, job: JobId, submission: JobSubmission) {
        match self.jobs.spawn(job, &submission) {
            Ok(mut child) => {
                self.core.job_started(job, child.id().unwrap_or(0));
                let me = self.me.clone();
                tokio::spawn(async move {
                    let status = child.wait().await;
                    let code = status.as_ref().ok().and_then(|s| s.code());
                    if let Some(me) = me {
                        let _ = me.cast(HeadMsg::JobExited(job, code, describe_exit(status)));
                    }
                });
            }
            Err(why) => self.core.job_start_failed(Clock::now(), job, why),
        }
    }

    /// Runs an effect's I/O in the background with the dialer and a way
    /// back to this actor.
    fn spawn<F, Fut>(&self, f: F)
    where
        F: FnOnce(Arc<RayletDialer>, ActorRef<HeadMsg>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        if let Some(me) = self.me.clone() {
            tokio::spawn(f(self.dialer.clone(), me));
        }
    }
}

fn describe(f: &Failure) -> String {
    match f {
        Failure::ActorDied { detail, .. } => detail.clone(),
        other => format!("{other:?}"),
    }
}

/// The head's actor: every arm hands its message to the core, then the
/// effects are carried out.
pub(super) struct HeadActor;

impl Actor for HeadActor {
    type Msg = HeadMsg;
    type State = Shell;
    type Arguments = Shell;

    async fn pre_start(
        &self,
        me: ActorRef<HeadMsg>,
        mut shell: Shell,
    ) -> Result<Shell, ActorProcessingErr> {
        shell.me = Some(me);
        Ok(shell)
    }

    async fn handle(
        &self,
        _me: ActorRef<HeadMsg>,
        msg: HeadMsg,
        sh: &mut Shell,
    ) -> Result<(), ActorProcessingErr> {
        let now = Clock::now();
        match msg {
            HeadMsg::Request(caller, req, port) => {
                let r = sh.core.handle(now, caller, req);
                sh.reply(r, port)
            }
            HeadMsg::Register(reg, port) => {
                drop(port.send(sh.core.register(now, NodeId::random(), reg)))
            }
            HeadMsg::Submit(sub, port) => drop(port.send(sh.submit(now, sub))),
            HeadMsg::Job(id, port) => drop(port.send(sh.core.job(id).cloned())),
            HeadMsg::DriverGone(job) => sh.core.driver_gone(now, job),
            HeadMsg::Bundles { pass, node, result } => {
                sh.core.bundles_done(now, pass, node, result)
            }
            HeadMsg::RestartFailed(actor, why) => sh.core.restart_failed(actor, &why),
            HeadMsg::JobExited(job, code, detail) => sh.core.job_exited(now, job, code, detail),
            HeadMsg::Tick => sh.core.tick(now),
        }
        sh.carry_out();
        Ok(())
    }
}
