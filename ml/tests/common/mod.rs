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
        Job::spawn_with(role, &[])
    }

    /// Like [`Job::spawn`], with extra environment (e.g. `PRISM_ADDRESS` to
    /// join a running cluster instead of starting an embedded one).
    pub fn spawn_with(role: &str, envs: &[(String, String)]) -> Job {
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
            .envs(envs.iter().cloned())
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

/// The `prism` binary beside this test's directory (built by `cargo test
/// --workspace`, not by `cargo test -p prism-ml` alone).
pub fn prism_bin() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("prism");
    bin.is_file().then_some(bin)
}

/// A `prism start` daemon in its own temp dir; `prism stop`ped (and the
/// dir removed) on drop, so a failing test leaves nothing running.
pub struct Daemon {
    bin: std::path::PathBuf,
    temp: tempfile::TempDir,
}

impl Daemon {
    /// Runs `prism start ARGS` (it returns once the daemon is ready).
    pub fn start(bin: &std::path::Path, args: &[&str]) -> Daemon {
        let d = Daemon {
            bin: bin.to_path_buf(),
            temp: tempfile::tempdir().expect("tempdir"),
        };
        let ok = Command::new(bin)
            .arg("start")
            .args(args)
            .env("PRISM_TEMP_DIR", d.temp.path())
            .env_remove("PRISM_ADDRESS")
            .stdout(Stdio::null())
            .status()
            .expect("run prism start");
        assert!(ok.success(), "prism start {args:?} failed");
        d
    }

    /// The daemon's session directory.
    pub fn session(&self) -> std::path::PathBuf {
        std::fs::read_dir(self.temp.path())
            .expect("temp dir")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("ready.json").is_file())
            .expect("a session directory with ready.json")
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.session().join("logs/prism.log")).unwrap_or_default()
    }

    /// (head address, join token) from a head's session.
    pub fn cluster(&self) -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.session().join("cluster.json")).expect("cluster.json"),
        )
        .expect("cluster.json is JSON");
        (
            v["head_address"].as_str().unwrap_or_default().to_string(),
            v["token"].as_str().unwrap_or_default().to_string(),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new(&self.bin)
            .arg("stop")
            .env("PRISM_TEMP_DIR", self.temp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
