//! Opening this process's connection to its raylet's task socket. Plain
//! blocking I/O: the caller's thread writes its own frames (no hand-off to
//! an I/O task), and one reader thread delivers results and tasks. Both
//! save thread wake-ups on the latency path.

use super::core::Core;
use super::error::{Error, Result};
use crate::ids::JobId;
use crate::object_store::StoreClient;
use crate::proto::codec;
use crate::proto::task::MAX_TASK_FRAME;
use crate::proto::task::{LocalEvent, LocalRequest, TaskSpec};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

/// Tasks the raylet sends a worker.
pub(crate) type TaskRx = std::sync::mpsc::Receiver<(TaskSpec, Vec<u32>)>;

/// Reads one event; `Ok(None)` at a clean end of stream.
fn read_event(r: &mut impl Read) -> std::result::Result<Option<LocalEvent>, String> {
    codec::read_frame(r, MAX_TASK_FRAME).map_err(|e| e.to_string())
}

/// Connects, says hello, and starts the reader thread.
pub(crate) fn connect(
    handle: &tokio::runtime::Handle,
    socket: &Path,
    hello: LocalRequest,
    job_id: JobId,
) -> Result<(Arc<Core>, TaskRx)> {
    let worker = matches!(hello, LocalRequest::HelloWorker { .. });
    let init = |what: &str, e: &dyn std::fmt::Display| {
        Error::Init(format!("{what} the raylet at {}: {e}", socket.display()))
    };
    let mut s = UnixStream::connect(socket).map_err(|e| init("cannot connect to", &e))?;
    let frame = codec::encode(&hello).map_err(|e| Error::Encode(e.to_string()))?;
    s.write_all(&frame)
        .map_err(|e| init("cannot say hello to", &e))?;
    let (node_id, store_socket, conn) = match read_event(&mut s) {
        Ok(Some(LocalEvent::Welcome {
            node_id,
            store_socket,
            at_rest_key,
            conn,
        })) => {
            super::at_rest::set_key(at_rest_key);
            (node_id, store_socket, conn)
        }
        Ok(Some(LocalEvent::Refused { message })) => {
            return Err(Error::Init(format!("the raylet refused: {message}")))
        }
        Ok(other) => return Err(Error::Init(format!("unexpected hello answer {other:?}"))),
        Err(e) => return Err(init("no answer from", &e)),
    };
    let store = StoreClient::connect(Path::new(&store_socket))?;
    if !worker {
        // A driver's own objects go with it, even if it is killed (a
        // worker's may be named by results it returned: they stay).
        store.free_pins_on_close();
    }
    let reader = s.try_clone().map_err(|e| init("cannot use", &e))?;
    // Actor workers on this machine listen beside the raylet's socket.
    let config = crate::config::Config::from_env().ok();
    let on = config.as_ref().is_none_or(|c| c.direct_calls);
    let session = socket.parent().filter(|_| on).map(Path::to_path_buf);
    let direct = super::direct::Direct::new(
        session,
        crate::proto::task::ReplyTo {
            node: node_id,
            conn,
        },
        std::time::Duration::from_millis(config.map_or(10, |c| c.lease_idle_ms)),
    );
    let core = Core::new(s, store, node_id, job_id, handle.clone(), worker, direct);
    let (exec_tx, exec_rx) = std::sync::mpsc::channel();
    core.direct.serve.set_tasks(exec_tx.clone());
    let reader_core = core.clone();
    std::thread::Builder::new()
        .name("prism-events".into())
        .spawn(move || {
            let mut r = std::io::BufReader::with_capacity(256 << 10, reader);
            let why = loop {
                match read_event(&mut r) {
                    Ok(Some(ev)) => {
                        if let Some(task) = reader_core.on_event(ev) {
                            let _ = exec_tx.send(task);
                        }
                    }
                    Ok(None) => break "the raylet closed the connection".to_string(),
                    Err(e) => break e,
                }
            };
            reader_core.direct.serve.close();
            reader_core.on_lost(why);
            drop(exec_tx);
        })
        .map_err(|e| Error::Init(format!("cannot start the event thread: {e}")))?;
    Ok((core, exec_rx))
}
