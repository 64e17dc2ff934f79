//! The worker side of an actor: construct it, then run its calls. With
//! `max_concurrency` 1 calls run one at a time in arrival order; above 1,
//! `async fn(&self)` calls interleave on one thread (like Ray's async
//! actors) up to the limit, and any other call waits until none is running.

use super::core::Core;
use super::value::Encoded;
use super::worker::{finish, panicked, run_with_args};
use crate::proto::task::{ArgSpec, Failure, LocalRequest, Outcome, TaskKind, TaskSpec};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// A shared-borrow call running on the actor's thread.
pub type LocalCall = Pin<Box<dyn Future<Output = Result<Encoded, String>>>>;

/// Implemented by `#[prism::actor]` on an `impl` block.
pub trait ActorImpl: Sized + 'static {
    /// Its registered name.
    const CLASS: &'static str;
    /// Runs the constructor (`new`) on archived arguments.
    fn construct(args: &[&[u8]]) -> Result<Self, String>;
    /// Runs a method with exclusive access (sync methods, `&mut self`, and
    /// every method when calls run one at a time); `None`: no such method.
    fn call(&mut self, method: &str, args: &[&[u8]]) -> Option<Result<Encoded, String>>;
    /// Starts an `async fn(&self)` method that may interleave with others;
    /// `None`: not such a method (run it with [`ActorImpl::call`]).
    fn call_shared(this: Rc<RefCell<Self>>, method: &str, args: Vec<Vec<u8>>) -> Option<LocalCall>;
}

/// An actor type, registered at compile time by `#[prism::actor]`.
#[doc(hidden)]
pub struct ActorRegistration {
    /// Its stable name.
    pub class: &'static str,
    /// Hosts it in this worker until the process ends.
    pub run: fn(Arc<Core>, TaskSpec, super::connect::TaskRx) -> !,
}

inventory::collect!(ActorRegistration);

fn done(core: &Arc<Core>, task: &TaskSpec, outcome: Outcome) {
    core.register_borrows(task);
    core.flush_metrics();
    let task_id = task.task_id;
    // A direct call's outcome goes back on its connection.
    let Err(outcome) = core.direct.serve.reply(task_id, outcome) else {
        return;
    };
    if core.send(&LocalRequest::Done { task_id, outcome }).is_err() {
        std::process::exit(0);
    }
}

/// Turns this worker into the host of the actor `create` builds.
pub(crate) fn become_actor(core: Arc<Core>, create: TaskSpec, rx: super::connect::TaskRx) -> ! {
    let reg = inventory::iter::<ActorRegistration>
        .into_iter()
        .find(|r| r.class == create.function);
    match reg {
        Some(r) => (r.run)(core, create, rx),
        None => {
            let detail = format!(
                "actor type {:?} is not registered in this binary (is the worker the same build as the driver?)",
                create.function
            );
            done(&core, &create, Outcome::Failed(Failure::BadCall { detail }));
            std::thread::sleep(Duration::from_secs(3600));
            std::process::exit(1)
        }
    }
}

fn no_method<T: ActorImpl>(method: &str) -> Result<Encoded, String> {
    Err(format!("actor {} has no method {method:?}", T::CLASS))
}

/// Hosts an actor of type `T` (the generated registration points here).
#[doc(hidden)]
pub fn run_actor<T: ActorImpl>(core: Arc<Core>, create: TaskSpec, rx: super::connect::TaskRx) -> ! {
    core.direct.serve.hosting_actor();
    let concurrency = match &create.kind {
        TaskKind::CreateActor(c) => c.max_concurrency.max(1) as usize,
        _ => 1,
    };
    // A resident actor is built only inside its rule, and every call it
    // runs is kept under it (what the constructor puts is, too).
    let rule = create.residency.clone();
    let mut built = None;
    let outcome = match rule.as_deref().map(super::residency::check_node) {
        Some(Err(detail)) => Outcome::Failed(Failure::BadCall { detail }),
        _ => run_with_args(&core, &create, |args| {
            built = Some(T::construct(args)?);
            Ok(Encoded::new())
        }),
    };
    let failed = !matches!(outcome, Outcome::Inline(_));
    if let (false, TaskKind::CreateActor(c)) = (failed, &create.kind) {
        // Callers on this machine may now call it directly.
        core.serve_direct(c.actor_id, c.restarts);
    }
    done(&core, &create, outcome);
    let Some(actor) = built.filter(|_| !failed) else {
        // The raylet kills this worker; wait for it.
        std::thread::sleep(Duration::from_secs(3600));
        std::process::exit(1)
    };
    if concurrency == 1 {
        let mut actor = actor;
        while let Ok((mut task, _)) = rx.recv() {
            task.residency.clone_from(&rule);
            core.direct.serve.started(task.task_id);
            super::result_refs::clear();
            let outcome = run_with_args(&core, &task, |args| {
                actor
                    .call(&task.function, args)
                    .unwrap_or_else(|| no_method::<T>(&task.function))
            });
            done(&core, &task, outcome);
        }
        std::process::exit(0)
    }
    run_concurrent::<T>(core, actor, rx, concurrency, rule)
}

fn owned_args(core: &Core, task: &TaskSpec) -> Result<Vec<Vec<u8>>, Outcome> {
    task.args
        .iter()
        .map(|a| match a {
            ArgSpec::Inline(b) => Ok(b.clone()),
            ArgSpec::Object(id) => core.fetch_arg(*id).map(|v| v.to_vec()).map_err(|e| {
                Outcome::Failed(Failure::ObjectLost {
                    object: *id,
                    detail: e.to_string(),
                })
            }),
        })
        .collect()
}

fn run_concurrent<T: ActorImpl>(
    core: Arc<Core>,
    actor: T,
    rx: super::connect::TaskRx,
    limit: usize,
    rule: Option<Box<crate::proto::common::Residency>>,
) -> ! {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime for the actor");
    let local = tokio::task::LocalSet::new();
    // This thread runs only this actor: its async methods, interleaved on
    // it, put and submit under the actor's rule like its other methods.
    let inherited = rule.clone();
    super::residency::within(inherited.as_deref(), || {
        local.block_on(&rt, async move {
            // Bridge the blocking task channel into this thread's event loop.
            let (tx, mut arx) = tokio::sync::mpsc::unbounded_channel();
            std::thread::spawn(move || {
                while let Ok(t) = rx.recv() {
                    if tx.send(t).is_err() {
                        return;
                    }
                }
            });
            let cell = Rc::new(RefCell::new(actor));
            let permits = Arc::new(tokio::sync::Semaphore::new(limit));
            let running = Rc::new(Cell::new(0usize));
            let idle = Rc::new(tokio::sync::Notify::new());
            while let Some((mut task, _)) = arx.recv().await {
                task.residency.clone_from(&rule);
                let args = match owned_args(&core, &task) {
                    Ok(a) => a,
                    Err(outcome) => {
                        done(&core, &task, outcome);
                        continue;
                    }
                };
                if let Some(fut) = T::call_shared(cell.clone(), &task.function, args.clone()) {
                    let permit = permits
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("semaphore open");
                    running.set(running.get() + 1);
                    core.direct.serve.started(task.task_id);
                    let (core, running, idle) = (core.clone(), running.clone(), idle.clone());
                    tokio::task::spawn_local(async move {
                        let result = tokio::task::spawn_local(fut).await;
                        let outcome = match result {
                            Ok(r) => finish(&core, &task, r),
                            Err(e) if e.is_panic() => panicked(&*e.into_panic()),
                            Err(e) => Outcome::Failed(Failure::BadCall {
                                detail: e.to_string(),
                            }),
                        };
                        done(&core, &task, outcome);
                        drop(permit);
                        running.set(running.get() - 1);
                        idle.notify_waiters();
                    });
                    continue;
                }
                // Exclusive: wait until no shared call runs.
                while running.get() > 0 {
                    let n = idle.notified();
                    if running.get() == 0 {
                        break;
                    }
                    n.await;
                }
                core.direct.serve.started(task.task_id);
                let outcome = run_with_args(&core, &task, |a| {
                    cell.borrow_mut()
                        .call(&task.function, a)
                        .unwrap_or_else(|| no_method::<T>(&task.function))
                });
                done(&core, &task, outcome);
            }
        })
    });
    std::process::exit(0)
}
