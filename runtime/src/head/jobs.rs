//! The head's job service: caches uploaded job binaries by content hash,
//! runs submitted jobs as driver processes on the head's machine (their
//! output kept in the session's `logs/`), and tracks every job in the
//! [`JobTable`].

use super::job_table::JobTable;
use crate::ids::JobId;
use crate::proto::head::{JobInfo, JobSubmission};
use crate::raylet::workers::describe_exit;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// The largest job output chunk one `JobLogs` answer carries.
pub const LOG_CHUNK: u64 = 1 << 20;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Jobs on this head.
#[derive(Debug)]
pub struct JobManager {
    table: Mutex<JobTable>,
    session: PathBuf,
    temp_dir: PathBuf,
    head_address: String,
    token: String,
}

impl JobManager {
    /// A manager writing into `session`.
    pub fn new(
        session: PathBuf,
        temp_dir: PathBuf,
        head_address: String,
        token: String,
    ) -> Arc<JobManager> {
        Arc::new(JobManager {
            table: Mutex::new(JobTable::default()),
            session,
            temp_dir,
            head_address,
            token,
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, JobTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn binary(&self, hash: &[u8; 32]) -> PathBuf {
        self.session.join("binaries").join(hex(hash))
    }

    fn log_path(&self, id: JobId) -> PathBuf {
        self.session.join("logs").join(format!("job-{id}.log"))
    }

    /// Whether the binary is cached already.
    pub fn has_binary(&self, hash: &[u8; 32]) -> bool {
        self.binary(hash).exists()
    }

    /// Stores an uploaded binary after checking its hash.
    pub fn store_binary(&self, hash: &[u8; 32], bytes: &[u8]) -> Result<(), String> {
        let got = ring::digest::digest(&ring::digest::SHA256, bytes);
        if got.as_ref() != hash {
            return Err("the uploaded binary does not match its SHA-256".into());
        }
        let path = self.binary(hash);
        let dir = path.parent().expect("binaries dir");
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let tmp = path.with_extension(format!("tmp{}", rand::random::<u32>()));
        std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &path).map_err(|e| e.to_string())
    }

    /// Starts a submitted job's driver.
    pub fn submit(self: &Arc<Self>, sub: JobSubmission) -> Result<JobId, String> {
        let bin = self.binary(&sub.hash);
        if !bin.exists() {
            return Err(format!("binary {} was not uploaded", hex(&sub.hash)));
        }
        let id = JobId::random();
        let entrypoint = std::iter::once(sub.name.clone())
            .chain(sub.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        self.table().add(now_ms(), id, entrypoint, true, None);
        let log = std::fs::File::create(self.log_path(id)).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args(&sub.args)
            .envs(sub.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PRISM_ADDRESS", &self.head_address)
            .env("PRISM_TOKEN", &self.token)
            .env("PRISM_JOB_ID", id.to_string())
            .env("PRISM_TEMP_DIR", &self.temp_dir)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2);
        let sock = self.session.join("tasks.sock");
        if sock.exists() {
            cmd.env("PRISM_RAYLET_SOCKET", sock);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let why = format!("cannot start {}: {e}", bin.display());
                self.table().start_failed(now_ms(), id, why.clone());
                return Err(why);
            }
        };
        self.table().started(id, child.id().unwrap_or(0));
        info!(job = %id, "job started");
        let me = self.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let code = status.as_ref().ok().and_then(|s| s.code());
            let detail = describe_exit(status);
            info!(job = %id, %detail, "job ended");
            me.table().exited(now_ms(), id, code, detail);
        });
        Ok(id)
    }

    /// A driver started by hand.
    pub fn register(&self, id: JobId, entrypoint: String, pid: u32) {
        self.table().add(now_ms(), id, entrypoint, false, Some(pid));
    }

    /// A registered driver's connection closed.
    pub fn disconnected(&self, id: JobId) {
        self.table().disconnected(now_ms(), id);
    }

    /// Jobs that ended within `window`.
    pub fn ended_recently(&self, window: Duration) -> Vec<JobId> {
        let since = now_ms().saturating_sub(window.as_millis() as u64);
        self.table()
            .list()
            .into_iter()
            .filter(|j| j.end_ms.is_some_and(|e| e >= since))
            .map(|j| j.job_id)
            .collect()
    }

    /// The job table.
    pub fn list(&self) -> Vec<JobInfo> {
        self.table().list()
    }

    /// Output from `offset`, and the job's row.
    pub fn logs(&self, id: JobId, offset: u64) -> Result<(Vec<u8>, u64, JobInfo), String> {
        let job = self
            .table()
            .get(id)
            .cloned()
            .ok_or_else(|| format!("no job {id}"))?;
        if !job.submitted {
            return Err(format!(
                "job {id} was not submitted through the head: its output is on its own terminal"
            ));
        }
        use std::io::{Read, Seek, SeekFrom};
        let mut data = Vec::new();
        if let Ok(mut f) = std::fs::File::open(self.log_path(id)) {
            f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
            f.take(LOG_CHUNK)
                .read_to_end(&mut data)
                .map_err(|e| e.to_string())?;
        }
        let next = offset + data.len() as u64;
        Ok((data, next, job))
    }

    /// Stops a job: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&self, id: JobId, grace: Duration) -> Result<(), String> {
        let pid = self.table().stop(now_ms(), id)?;
        if let Some(pid) = pid {
            // SAFETY: kill(2) on the driver's pid; a submitted driver is our
            // child and is not reaped before its waiter records the exit.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
            let table_pid = pid;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                if std::path::Path::new(&format!("/proc/{table_pid}")).exists() {
                    warn!(pid = table_pid, "job ignored SIGTERM; killing it");
                    // SAFETY: as above.
                    unsafe {
                        libc::kill(table_pid as libc::pid_t, libc::SIGKILL);
                    }
                }
            });
        }
        Ok(())
    }
}
