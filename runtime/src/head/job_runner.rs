//! The I/O of jobs submitted through the head: job binaries cached by
//! content hash, driver processes started on the head's machine (their
//! output kept in the session's `logs/`), their exits, logs and signals.
//! The job table and every decision about jobs are the head core's.

use crate::ids::JobId;
use crate::proto::head::{JobInfo, JobSubmission};
use crate::raylet::workers::hex;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;
use tracing::warn;

/// The largest job output chunk one `JobLogs` answer carries.
pub const LOG_CHUNK: u64 = 1 << 20;

/// Runs submitted jobs' drivers.
#[derive(Debug, Clone)]
pub struct JobRunner {
    session: PathBuf,
    temp_dir: PathBuf,
    head_address: String,
    token: String,
}

impl JobRunner {
    /// A runner writing into `session`; drivers reach the head at
    /// `head_address` with `token`.
    pub fn new(session: PathBuf, temp_dir: PathBuf, head_address: String, token: String) -> Self {
        JobRunner {
            session,
            temp_dir,
            head_address,
            token,
        }
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

    /// Why a submission cannot run (its binary was never uploaded).
    pub fn check(&self, sub: &JobSubmission) -> Result<(), String> {
        if self.has_binary(&sub.hash) {
            Ok(())
        } else {
            Err(format!("binary {} was not uploaded", hex(&sub.hash)))
        }
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

    /// Starts job `id`'s driver process; its log file takes its output.
    pub fn spawn(&self, id: JobId, sub: &JobSubmission) -> Result<tokio::process::Child, String> {
        let bin = self.binary(&sub.hash);
        // Appended to: a preempted job's next run continues its log.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .map_err(|e| format!("cannot create the job's log: {e}"))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("cannot create the job's log: {e}"))?;
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args(&sub.args)
            .envs(sub.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("PRISM_ADDRESS", &self.head_address)
            .env("PRISM_TOKEN", &self.token)
            .env("PRISM_JOB_ID", id.to_string())
            .env(crate::raylet::workers::vars::NAMESPACE, &sub.namespace)
            .env("PRISM_TEMP_DIR", &self.temp_dir)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err);
        let sock = self.session.join("tasks.sock");
        if sock.exists() {
            cmd.env("PRISM_RAYLET_SOCKET", sock);
        }
        cmd.spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))
    }

    /// A submitted job's output from `offset` (at most [`LOG_CHUNK`]
    /// bytes), and the offset after it.
    pub fn logs(&self, job: &JobInfo, offset: u64) -> Result<(Vec<u8>, u64), String> {
        let id = job.job_id;
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
        Ok((data, next))
    }
}

/// SIGTERM `pid`, then SIGKILL after `grace` if it still runs.
pub fn signal(pid: u32, grace: Duration) {
    // SAFETY: kill(2) on a submitted driver's pid: our child, not reaped
    // before its waiter records the exit.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            warn!(pid, "job ignored SIGTERM; killing it");
            // SAFETY: as above.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    });
}
