//! Worker mode: the job's binary, started by a raylet, runs tasks until its
//! raylet connection closes. `prism::init()` lands here and never returns.

use super::core::{Core, INLINE_MAX};
use super::value::{Encoded, Value};
use crate::object_store::ObjectView;
use crate::proto::task::{ArgSpec, Failure, LocalRequest, Outcome, TaskSpec};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A remote function, registered at compile time by `#[prism::remote]`.
#[doc(hidden)]
pub struct Registration {
    /// Its stable name (`module::path::function`).
    pub name: &'static str,
    /// Decodes the arguments, runs the function, encodes the result.
    pub invoke: Invoke,
}

inventory::collect!(Registration);

#[doc(hidden)]
pub type Invoke = fn(&[&[u8]]) -> Result<Encoded, String>;

fn registry() -> &'static HashMap<&'static str, Invoke> {
    static REG: OnceLock<HashMap<&'static str, Invoke>> = OnceLock::new();
    REG.get_or_init(|| {
        inventory::iter::<Registration>
            .into_iter()
            .map(|r| (r.name, r.invoke))
            .collect()
    })
}

thread_local! {
    static PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(move |info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "unknown location".into());
        // One line, not Rust's "thread 'main' (pid) panicked at …", which
        // on the driver's terminal reads as if the driver crashed. The
        // driver prints it prefixed with the task, worker and node; the
        // backtrace only when RUST_BACKTRACE asks for it.
        let message = panic_message(info.payload());
        eprintln!("panicked at {at}: {message}");
        let trace = std::backtrace::Backtrace::capture();
        if trace.status() == std::backtrace::BacktraceStatus::Captured {
            eprintln!("{trace}");
        }
        PANIC_AT.with(|p| *p.borrow_mut() = Some(at));
    }));
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

/// Runs one task to its outcome.
fn execute(core: &Arc<Core>, task: &TaskSpec) -> Outcome {
    let Some(invoke) = registry().get(task.function.as_str()) else {
        return Outcome::Failed(Failure::BadCall {
            detail: format!(
                "function {:?} is not registered in this binary (is the worker the same build as the driver?)",
                task.function
            ),
        });
    };
    run_with_args(core, task, invoke)
}

/// Resolves a task's arguments (inline bytes, or zero-copy views of store
/// objects), runs `f` on them catching panics, and stores or inlines the result.
pub(crate) fn run_with_args(
    core: &Arc<Core>,
    task: &TaskSpec,
    f: impl FnOnce(&[&[u8]]) -> Result<Encoded, String>,
) -> Outcome {
    let mut views: Vec<ObjectView<'_>> = Vec::new();
    let mut inline: Vec<&[u8]> = Vec::new();
    let mut order = Vec::new();
    for a in &task.args {
        match a {
            ArgSpec::Inline(b) => {
                order.push((true, inline.len()));
                inline.push(b);
            }
            ArgSpec::Object(id) => match core.fetch_arg(*id) {
                Ok(v) => {
                    order.push((false, views.len()));
                    views.push(v);
                }
                Err(e) => {
                    return Outcome::Failed(Failure::ObjectLost {
                        object: *id,
                        detail: e.to_string(),
                    })
                }
            },
        }
    }
    let args: Vec<&[u8]> = order
        .iter()
        .map(|(is_inline, i)| {
            if *is_inline {
                inline[*i]
            } else {
                &views[*i][..]
            }
        })
        .collect();
    PANIC_AT.with(|p| p.borrow_mut().take());
    // What the function puts and submits inherits the task's rule.
    let result = super::residency::within(task.residency.as_deref(), || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&args)))
    });
    drop(views);
    match result {
        Ok(r) => finish(core, task, r),
        Err(p) => panicked(&*p),
    }
}

/// The outcome of a panic caught in this thread.
pub(crate) fn panicked(p: &(dyn std::any::Any + Send)) -> Outcome {
    Outcome::Failed(Failure::Panic {
        message: panic_message(p),
        location: PANIC_AT
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "unknown location".into()),
    })
}

/// The outcome of a finished call: inline, or stored under the task's id.
pub(crate) fn finish(
    core: &Arc<Core>,
    task: &TaskSpec,
    result: Result<Encoded, String>,
) -> Outcome {
    // Refs inside the result are held here until its owner releases it.
    let held = match &result {
        Ok(bytes) => super::result_refs::take(bytes),
        Err(_) => Vec::new(),
    };
    let outcome = result_outcome(core, task, result);
    if held.is_empty() {
        return outcome;
    }
    core.hold_result(task.task_id.result(), task.reply_to, held, outcome)
}

fn result_outcome(core: &Arc<Core>, task: &TaskSpec, result: Result<Encoded, String>) -> Outcome {
    // A resident actor's constructor says only that it ran: inline.
    let creates = matches!(task.kind, crate::proto::task::TaskKind::CreateActor(_));
    let rule = task.residency.as_deref().filter(|_| !creates);
    match result {
        Ok(bytes) if bytes.len() <= INLINE_MAX && rule.is_none() => Outcome::Inline(bytes.to_vec()),
        Ok(bytes) => {
            let id = task.task_id.result();
            if let Some(rule) = rule {
                // Refused when this node is outside the rule: nothing stored.
                if let Err(e) = super::residency::claim_as(core, id, rule.clone()) {
                    return Outcome::Failed(Failure::BadCall {
                        detail: format!("cannot keep its result: {e}"),
                    });
                }
            }
            match core
                .store
                .put_parts(id, &[&bytes], true, Duration::from_secs(60))
            {
                Ok(_) => Outcome::Stored {
                    size: bytes.len() as u64,
                    node: core.node_id,
                },
                // A retried task whose earlier attempt already stored it.
                Err(_) if matches!(core.store.info(id), Ok(Some(i)) if i.sealed) => {
                    Outcome::Stored {
                        size: bytes.len() as u64,
                        node: core.node_id,
                    }
                }
                Err(e) => Outcome::Failed(Failure::ObjectLost {
                    object: id,
                    detail: format!("cannot store the result: {e}"),
                }),
            }
        }
        Err(detail) => Outcome::Failed(Failure::BadCall { detail }),
    }
}

/// Tells the raylet, in the pipes it reads, that the output from here on
/// is task `name`'s (`TASK_LABEL_MARK`): in order with that output, so
/// even a task pushed on a lease, which the raylet does not see, is
/// labelled with its name.
fn label_output(name: &str) {
    use std::io::Write;
    // C code's buffered output belongs to what ran before.
    // SAFETY: fflush(NULL) flushes every open C output stream; it is
    // given no pointer.
    unsafe {
        libc::fflush(std::ptr::null_mut());
    }
    // One line, whatever the name holds.
    let name: String = name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mark = format!("{}{name}\n", crate::proto::task::TASK_LABEL_MARK);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(mark.as_bytes());
    let _ = out.flush();
    let _ = std::io::stderr().lock().write_all(mark.as_bytes());
}

/// The worker loop: runs what the raylet sends until it goes away.
pub(crate) fn run(core: Arc<Core>, tasks: std::sync::mpsc::Receiver<(TaskSpec, Vec<u32>)>) -> ! {
    install_panic_hook();
    // The name the raylet labels this worker's output with.
    let mut labelled = String::new();
    while let Ok((task, _gpus)) = tasks.recv() {
        if let crate::proto::task::TaskKind::CreateActor(_) = &task.kind {
            // This worker now hosts the actor until it dies.
            super::actor_worker::become_actor(core, task, tasks);
        }
        core.direct.serve.started(task.task_id);
        if labelled != task.name {
            labelled.clone_from(&task.name);
            label_output(&task.name);
        }
        super::result_refs::clear();
        let outcome = execute(&core, &task);
        core.register_borrows(&task);
        core.flush_metrics();
        // A task pushed by its owner on a lease answers on that socket.
        let Err(outcome) = core.direct.serve.reply(task.task_id, outcome) else {
            continue;
        };
        if core
            .send(&LocalRequest::Done {
                task_id: task.task_id,
                outcome,
            })
            .is_err()
        {
            break;
        }
    }
    // The raylet is gone: so is this worker. Give the writer a moment to flush.
    std::thread::sleep(Duration::from_millis(10));
    std::process::exit(0)
}

/// Decodes argument `i` (used by the generated code).
#[doc(hidden)]
pub fn decode_arg<T: Value>(bytes: &[u8], i: usize) -> Result<T, String> {
    // Refs inside an argument are borrowed (counted); others cost nothing.
    super::borrowing::decoding_args(|| T::decode(bytes)).map_err(|e| format!("argument {i}: {e}"))
}

/// Encodes a result (used by the generated code).
#[doc(hidden)]
pub fn encode_result<T: Value>(v: &T) -> Result<Encoded, String> {
    // Refs inside are counted, and held here until the result goes (RR-1).
    super::result_refs::encode(v)
}

/// Runs an `async` remote function to completion on this worker thread.
#[doc(hidden)]
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime for async remote functions");
    }
    RT.with(|rt| rt.block_on(f))
}
