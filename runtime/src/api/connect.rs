//! Opening this process's connection to its raylet's task socket.

use super::core::Core;
use super::error::{Error, Result};
use crate::ids::JobId;
use crate::object_store::StoreClient;
use crate::proto::task::{LocalEvent, LocalRequest, TaskSpec};
use crate::raylet::task_server::MAX_TASK_FRAME;
use crate::transport::rpc::{read_msg, write_frame};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// Tasks the raylet sends a worker.
pub(crate) type TaskRx = std::sync::mpsc::Receiver<(TaskSpec, Vec<u32>)>;

/// Connects, says hello, and starts the reader and writer tasks.
pub(crate) fn connect(
    handle: &tokio::runtime::Handle,
    socket: &Path,
    hello: LocalRequest,
    job_id: JobId,
) -> Result<(Arc<Core>, TaskRx)> {
    let worker = matches!(hello, LocalRequest::HelloWorker { .. });
    let (stream, welcome) = handle.block_on(async {
        let mut s = UnixStream::connect(socket).await.map_err(|e| {
            Error::Init(format!(
                "cannot connect to the raylet at {}: {e}",
                socket.display()
            ))
        })?;
        write_frame(&mut s, &hello)
            .await
            .map_err(|e| Error::Init(e.to_string()))?;
        let ev = read_msg::<LocalEvent, _>(&mut s, MAX_TASK_FRAME)
            .await
            .map_err(|e| Error::Init(e.to_string()))?;
        Ok::<_, Error>((s, ev))
    })?;
    let (node_id, store_socket) = match welcome {
        Some(LocalEvent::Welcome {
            node_id,
            store_socket,
        }) => (node_id, store_socket),
        Some(LocalEvent::Refused { message }) => {
            return Err(Error::Init(format!("the raylet refused: {message}")))
        }
        other => return Err(Error::Init(format!("unexpected hello answer {other:?}"))),
    };
    let store = StoreClient::connect(Path::new(&store_socket))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let core = Core::new(tx, store, node_id, job_id, handle.clone(), worker);
    let (r, w) = stream.into_split();
    handle.spawn(async move {
        let mut w = BufWriter::new(w);
        while let Some(frame) = rx.recv().await {
            if w.write_all(&frame).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if w.write_all(&more).await.is_err() {
                    return;
                }
            }
            if w.flush().await.is_err() {
                return;
            }
        }
    });
    let (exec_tx, exec_rx) = std::sync::mpsc::channel();
    let reader_core = core.clone();
    handle.spawn(async move {
        let mut r = BufReader::with_capacity(256 << 10, r);
        let why = loop {
            match read_msg::<LocalEvent, _>(&mut r, MAX_TASK_FRAME).await {
                Ok(Some(ev)) => {
                    if let Some(task) = reader_core.on_event(ev) {
                        let _ = exec_tx.send(task);
                    }
                }
                Ok(None) => break "the raylet closed the connection".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        reader_core.on_lost(why);
        drop(exec_tx);
    });
    Ok((core, exec_rx))
}
