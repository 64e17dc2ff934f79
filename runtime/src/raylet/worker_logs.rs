//! Worker output: each worker's stdout and stderr go to its own file in the
//! raylet's session (`logs/worker-<pid>.log`) and, in batches, to the driver
//! of its job, wherever that driver is: straight down its connection when
//! it is on this node, else to its node's raylet ([`PeerRequest::Logs`]).
//! A batch is what the pipe holds when it is read: lines leave as soon as
//! the worker pauses (so a driver that exits right after a result still
//! prints the lines written before it). Runs of identical lines are folded
//! ([`LogFolder`], pure); a fold is shown when its run ends or pauses.

use super::dispatch::WorkerId;
use super::service::TaskService;
use crate::ids::JobId;
use crate::proto::raylet::PeerRequest;
use crate::proto::state::{LogChunk, LogLine, MAX_LOG_CHUNK};
use crate::proto::task::LocalEvent;
use crate::proto::task::TASK_LABEL_MARK;
use crate::transport::rpc::call;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tracing::debug;

/// Identical lines shown before the rest of a run is folded.
pub const SHOWN_REPEATS: u32 = 3;
/// How long a run of identical lines may pause before its fold is shown.
const FOLD_IDLE: Duration = Duration::from_millis(500);
/// Most lines in one batch.
const BATCH_LINES: usize = 256;

/// Folds runs of identical lines: the first [`SHOWN_REPEATS`] pass, the
/// rest become one line with `repeated` set, emitted when the run ends.
#[derive(Debug, Default)]
pub struct LogFolder {
    last: Option<(String, bool)>,
    run: u32,
}

impl LogFolder {
    /// Takes one line; returns what to show now.
    pub fn push(&mut self, prefix: &str, text: String, stderr: bool, out: &mut Vec<LogLine>) {
        if self.last.as_ref() == Some(&(text.clone(), stderr)) {
            self.run += 1;
            if self.run <= SHOWN_REPEATS {
                out.push(line(prefix, text, stderr, 0));
            }
            return;
        }
        self.flush(prefix, out);
        self.last = Some((text.clone(), stderr));
        self.run = 1;
        out.push(line(prefix, text, stderr, 0));
    }

    /// Whether lines are folded and not shown yet.
    pub fn pending(&self) -> bool {
        self.run > SHOWN_REPEATS
    }

    /// Ends the current run: its folded lines, if any, as one line.
    pub fn flush(&mut self, prefix: &str, out: &mut Vec<LogLine>) {
        if self.run > SHOWN_REPEATS {
            if let Some((text, stderr)) = &self.last {
                out.push(line(
                    prefix,
                    text.clone(),
                    *stderr,
                    self.run - SHOWN_REPEATS,
                ));
            }
        }
        self.run = self.run.min(SHOWN_REPEATS);
    }
}

fn line(prefix: &str, text: String, stderr: bool, repeated: u32) -> LogLine {
    LogLine {
        prefix: prefix.to_string(),
        text,
        stderr,
        repeated,
    }
}

/// How a driver prints a line: `(prefix) text`, and for a fold
/// `(prefix) text [repeated N×]`.
pub fn render(l: &LogLine) -> String {
    if l.repeated > 0 {
        format!("{} {} [repeated {}×]", l.prefix, l.text, l.repeated)
    } else {
        format!("{} {}", l.prefix, l.text)
    }
}

/// The file a worker's output goes to.
pub fn log_path(dir: &std::path::Path, pid: u32) -> PathBuf {
    dir.join(format!("worker-{pid}.log"))
}

impl TaskService {
    /// The raylet's worker log directory.
    pub(super) fn log_dir(&self) -> PathBuf {
        self.env
            .task_socket
            .parent()
            .map(|p| p.join("logs"))
            .unwrap_or_else(|| PathBuf::from("logs"))
    }

    /// The log file of the worker with `pid`, if it exists.
    pub(super) fn worker_log(&self, pid: u32) -> Option<String> {
        let p = log_path(&self.log_dir(), pid);
        p.exists().then(|| p.display().to_string())
    }

    /// Part of the log of the worker with `pid` (alive or not).
    pub async fn read_log(&self, pid: u32, offset: u64) -> LogChunk {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let path = log_path(&self.log_dir(), pid);
        let mut f = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) => {
                return LogChunk::Missing(format!(
                    "no log for pid {pid} on node {}: {}: {e}",
                    self.node(),
                    path.display()
                ))
            }
        };
        let mut data = Vec::new();
        let read = async {
            f.seek(std::io::SeekFrom::Start(offset)).await?;
            f.take(MAX_LOG_CHUNK).read_to_end(&mut data).await
        };
        match read.await {
            Ok(n) => LogChunk::Data {
                data,
                next: offset + n as u64,
            },
            Err(e) => LogChunk::Missing(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Starts copying a new worker's output to its file and its driver.
    pub(super) fn capture_output(
        self: &Arc<Self>,
        worker: WorkerId,
        job: JobId,
        child: &mut tokio::process::Child,
    ) {
        let pid = child.id().unwrap_or(0);
        let dir = self.log_dir();
        let path = log_path(&dir, pid);
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let me = self.clone();
        tokio::spawn(async move {
            let _ = tokio::fs::create_dir_all(&dir).await;
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await
                .ok();
            let file = Arc::new(tokio::sync::Mutex::new(file));
            let mut streams = Vec::new();
            if let Some(o) = out {
                streams.push(tokio::spawn(me.clone().pump(
                    o,
                    false,
                    worker,
                    job,
                    pid,
                    file.clone(),
                )));
            }
            if let Some(e) = err {
                streams.push(tokio::spawn(me.clone().pump(
                    e,
                    true,
                    worker,
                    job,
                    pid,
                    file.clone(),
                )));
            }
            for s in streams {
                let _ = s.await;
            }
        });
    }

    async fn pump(
        self: Arc<Self>,
        stream: impl AsyncRead + Unpin,
        stderr: bool,
        worker: WorkerId,
        job: JobId,
        pid: u32,
        file: Arc<tokio::sync::Mutex<Option<tokio::fs::File>>>,
    ) {
        let mut lines = BufReader::new(stream);
        let mut partial = Vec::new();
        let node = self.node();
        let mut folder = LogFolder::default();
        let mut batch = Vec::new();
        let mut fold_due: Option<tokio::time::Instant> = None;
        let mut label = String::new();
        let mut last_task: Option<String> = None;
        let mut marked: Option<String> = None;
        loop {
            // With lines in hand: take only what is already there, then
            // send. With none: wait, for as long as a fold may pause.
            let wait = if batch.is_empty() {
                fold_due
            } else {
                Some(tokio::time::Instant::now())
            };
            let next = async {
                match wait {
                    Some(d) => tokio::time::timeout_at(d, next_line(&mut lines, &mut partial))
                        .await
                        .ok(),
                    None => Some(next_line(&mut lines, &mut partial).await),
                }
            };
            match next.await {
                Some(Ok(Some(text))) => {
                    // The worker names the task whose output follows (after
                    // what its last task left without a newline, if any).
                    let (text, mark) = match text.find(TASK_LABEL_MARK) {
                        Some(i) => (
                            text[..i].to_string(),
                            Some(text[i + TASK_LABEL_MARK.len()..].to_string()),
                        ),
                        None => (text, None),
                    };
                    if text.is_empty() && mark.is_some() {
                        marked = mark;
                        continue;
                    }
                    if let Some(f) = file.lock().await.as_mut() {
                        let _ = f.write_all(format!("{text}\n").as_bytes()).await;
                    }
                    // The worker's actor, or the task it ran last (a
                    // short task may end before its output is read); the
                    // dispatcher is asked only when that task changes.
                    let task = marked
                        .clone()
                        .or_else(|| self.last_task.get(&worker).map(|n| n.clone()));
                    if label.is_empty() || task != last_task {
                        let name = self.disp().worker_actor_class(worker).or(task.clone());
                        let name = name.as_deref().unwrap_or("worker");
                        let now = format!("({name} pid={pid} node={})", node.short());
                        if now != label {
                            folder.flush(&label, &mut batch);
                            label = now;
                        }
                        last_task = task;
                    }
                    folder.push(&label, text, stderr, &mut batch);
                    if mark.is_some() {
                        marked = mark;
                    }
                    fold_due = folder
                        .pending()
                        .then(|| tokio::time::Instant::now() + FOLD_IDLE);
                    if batch.len() >= BATCH_LINES {
                        self.deliver_logs(job, std::mem::take(&mut batch));
                    }
                }
                // Nothing more right now: send what we have, or show a
                // paused run's fold.
                None => {
                    if batch.is_empty() {
                        folder.flush(&label, &mut batch);
                        fold_due = None;
                    }
                    self.deliver_logs(job, std::mem::take(&mut batch));
                }
                // The worker closed its output (it exited).
                Some(_) => {
                    folder.flush(&label, &mut batch);
                    self.deliver_logs(job, batch);
                    return;
                }
            }
        }
    }

    /// Hands lines to the job's driver: down its connection if it is here,
    /// else to its node's raylet; dropped (they are in the file) if neither.
    pub(super) fn deliver_logs(self: &Arc<Self>, job: JobId, lines: Vec<LogLine>) {
        if lines.is_empty() {
            return;
        }
        if let Some(conn) = self.local_jobs.get(&job).map(|c| *c) {
            self.send(
                super::dispatch::Owner::Local(conn),
                &LocalEvent::Logs(lines),
            );
            return;
        }
        let node = self.jobs.get(&job).and_then(|j| j.driver_node);
        let Some(node) = node.filter(|n| *n != self.node()) else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let Some(addr) = me.peers.addr(node, Duration::from_secs(1)).await else {
                return;
            };
            let req = PeerRequest::Logs { job_id: job, lines };
            let sent = async {
                let conn = me.peers.connect(addr).await?;
                call::<_, bool>(&*conn, &req, 1 << 20)
                    .await
                    .map_err(|e| e.to_string())
            };
            if let Err(e) = tokio::time::timeout(Duration::from_secs(5), sent)
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
            {
                debug!(%node, "cannot send worker output to the driver's node: {e}");
            }
        });
    }
}

/// The next line of a worker's output, bytes that are not UTF-8 replaced (a
/// task may print raw bytes; that must not end the reading); `None` at its
/// end. Cancel-safe: a line cut short by a timeout stays in `partial`.
async fn next_line(
    r: &mut (impl tokio::io::AsyncBufRead + Unpin),
    partial: &mut Vec<u8>,
) -> std::io::Result<Option<String>> {
    let n = r.read_until(b'\n', partial).await?;
    if n == 0 && partial.is_empty() {
        return Ok(None);
    }
    let mut line = std::mem::take(partial);
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(v: &[LogLine]) -> Vec<(String, u32)> {
        v.iter().map(|l| (l.text.clone(), l.repeated)).collect()
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf8_are_replaced_and_reading_goes_on() {
        let data: &[u8] = b"ok\n\xff\xferaw\r\nlast";
        let mut r = tokio::io::BufReader::new(data);
        let mut p = Vec::new();
        let mut got = Vec::new();
        while let Some(line) = next_line(&mut r, &mut p).await.unwrap() {
            got.push(line);
        }
        assert_eq!(got, ["ok", "\u{fffd}\u{fffd}raw", "last"]);
    }

    #[test]
    fn runs_of_identical_lines_fold_after_three() {
        let mut f = LogFolder::default();
        let mut out = Vec::new();
        for _ in 0..40 {
            f.push("(f)", "same".into(), false, &mut out);
        }
        f.push("(f)", "other".into(), false, &mut out);
        f.flush("(f)", &mut out);
        let want: Vec<(String, u32)> = vec![
            ("same".into(), 0),
            ("same".into(), 0),
            ("same".into(), 0),
            ("same".into(), 37),
            ("other".into(), 0),
        ];
        assert_eq!(texts(&out), want);
        assert_eq!(render(&out[3]), "(f) same [repeated 37×]");
    }

    #[test]
    fn a_run_split_across_batches_is_folded_once() {
        let mut f = LogFolder::default();
        let mut out = Vec::new();
        for _ in 0..5 {
            f.push("(f)", "x".into(), false, &mut out);
        }
        f.flush("(f)", &mut out);
        let first = texts(&out);
        assert_eq!(first.last(), Some(&("x".to_string(), 2)));
        out.clear();
        for _ in 0..2 {
            f.push("(f)", "x".into(), false, &mut out);
        }
        f.flush("(f)", &mut out);
        assert_eq!(texts(&out), vec![("x".to_string(), 2)]);
    }

    #[test]
    fn stderr_and_stdout_lines_differ() {
        let mut f = LogFolder::default();
        let mut out = Vec::new();
        f.push("(f)", "x".into(), false, &mut out);
        f.push("(f)", "x".into(), true, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out[1].stderr);
    }
}
