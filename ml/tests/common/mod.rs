//! Drivers for prism-ml's tests: this test binary re-executed with
//! `PRISM_TEST_ROLE`, running the ignored `child_role` test on its own
//! embedded cluster (its workers are this binary too). Killed (SIGKILL)
//! and reaped on drop, so a failing test leaves no process behind; the
//! driver's workers die with its raylet.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A driver-role assertion that also prints what passed.
pub fn check(cond: bool, what: &str) {
    assert!(cond, "{what}");
    println!("ok: {what}");
}

/// A running driver role; killed and reaped on drop.
pub struct Job {
    child: Option<Child>,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Job {
    pub fn spawn(role: &str) -> Job {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("stdout");
        let f = std::fs::File::create(&out).expect("stdout file");
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--ignored",
                "--exact",
                "child_role",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("PRISM_TEST_ROLE", role)
            .env("PRISM_TEMP_DIR", dir.path())
            .env_remove("PRISM_ADDRESS")
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the driver");
        Job {
            child: Some(child),
            out,
            _dir: dir,
        }
    }

    /// Waits for exit (killing it after `timeout`); returns success and stdout.
    pub fn finish(&mut self, timeout: Duration) -> (bool, String) {
        let mut child = self.child.take().expect("finished once");
        let deadline = Instant::now() + timeout;
        let mut exited = false;
        while Instant::now() < deadline {
            if child.try_wait().expect("try_wait").is_some() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !exited {
            let _ = child.kill();
        }
        let status = child.wait().expect("reap the driver");
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        (exited && status.success(), out)
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `role` as a driver on its own embedded cluster; it must print ALL OK.
pub fn run_role(role: &str, timeout: Duration) -> String {
    let (ok, out) = Job::spawn(role).finish(timeout);
    assert!(ok && out.contains("ALL OK"), "role {role} failed:\n{out}");
    out
}
