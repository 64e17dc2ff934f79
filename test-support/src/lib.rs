//! Helpers for tests that start real `prism` processes on 127.0.0.1, shared
//! by the workspace's integration tests (`tests/`) and `prism-ml`'s
//! (`ml/tests/`). Dev-only: no crate that ships depends on it.
//!
//! Every process is owned by a guard that kills (SIGKILL) and reaps it on
//! drop, so a failing test leaves nothing behind; daemons started through
//! `prism start` (which detach) are found through their pid files and
//! killed the same way. Every [`Sandbox`] and [`Job`] has its own
//! `PRISM_TEMP_DIR`, so tests never see each other's sessions.

mod example;
mod held;
pub use example::run_example;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Fast failure detection for tests: heartbeat every 100 ms, suspect after
/// 3 missed, dead after 10 missed (1 s).
pub const HEARTBEAT_MS: u64 = 100;
pub const DEAD_AFTER: u64 = 10;

/// The `prism` binary of this build: `PRISM_TEST_BIN` if set, else the
/// one next to the test binary's directory (`target/<profile>/prism`, which
/// `cargo test --workspace` and the root package's tests build).
pub fn find_prism_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PRISM_TEST_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("prism");
    bin.is_file().then_some(bin)
}

/// [`find_prism_bin`], or a panic that says how to build it.
pub fn prism_bin() -> PathBuf {
    find_prism_bin().expect(
        "no prism binary beside the test binary: run `cargo build -p prism-cli` (cargo test --workspace builds it)",
    )
}

/// A temporary directory for session directories, and everything started in it.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub envs: Vec<(String, String)>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        // A user's own ~/.prism/credentials never leaks into a test.
        let credentials = dir.path().join("credentials").display().to_string();
        Sandbox {
            dir,
            envs: vec![
                ("PRISM_CREDENTIALS".into(), credentials),
                (
                    "PRISM_HEARTBEAT_INTERVAL_MS".into(),
                    HEARTBEAT_MS.to_string(),
                ),
                ("PRISM_SUSPECT_AFTER_MISSED".into(), "3".into()),
                ("PRISM_DEAD_AFTER_MISSED".into(), DEAD_AFTER.to_string()),
                ("RUST_LOG".into(), "info".into()),
                ("RUST_BACKTRACE".into(), "0".into()),
            ],
        }
    }

    pub fn with_env(mut self, k: &str, v: &str) -> Sandbox {
        self.envs.retain(|(key, _)| key != k);
        self.envs.push((k.into(), v.into()));
        self
    }

    pub fn temp(&self) -> &Path {
        self.dir.path()
    }

    /// `prism <args>` with this sandbox's temp dir and settings.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(prism_bin());
        c.args(args).arg("--temp-dir").arg(self.temp());
        c.env_remove("PRISM_ADDRESS")
            .env_remove("PRISM_TOKEN")
            .env_remove("PRISM_USER_TOKEN");
        // Tests' dashboards take any free port, never Ray's 8265.
        c.env("PRISM_DASHBOARD_PORT", "0");
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    /// Runs `prism <args>` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .stdin(Stdio::null())
            .output()
            .expect("run prism")
    }

    /// Runs `prism <args>`, which must succeed; its stdout, trimmed (a
    /// new user's token, say).
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "prism {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Adds user `name` with `role` in `namespace`; their token.
    pub fn add_user(&self, name: &str, role: &str, namespace: &str) -> String {
        self.run_ok(&[
            "user",
            "add",
            name,
            "--role",
            role,
            "--namespace",
            namespace,
        ])
    }

    /// Starts a foreground (`--block`) node as a child process in a session
    /// directory of our choosing, and waits until it is ready.
    pub fn spawn_node(&self, name: &str, args: &[&str]) -> Node {
        let session = self.temp().join(format!("session_test_{name}"));
        std::fs::create_dir_all(&session).unwrap();
        self.spawn_in(name, &session, args)
    }

    /// Like [`Sandbox::spawn_node`] in an existing session directory (a restart).
    pub fn spawn_in(&self, name: &str, session: &Path, args: &[&str]) -> Node {
        let _ = std::fs::remove_file(session.join("ready.json"));
        let log = std::fs::File::create(session.join(format!("{name}.log"))).unwrap();
        let mut c = self.cmd(&[
            "start",
            "--block",
            "--session-dir",
            session.to_str().unwrap(),
        ]);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = c.spawn().expect("spawn prism");
        let mut node = Node {
            name: name.into(),
            session: session.to_path_buf(),
            child: Some(child),
        };
        let ready = wait_until(Duration::from_secs(30), || {
            if let Some(status) = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("{name} exited early ({status}):\n{}", node.log());
            }
            node.session.join("ready.json").exists()
        });
        assert!(ready, "{name} not ready in 30 s:\n{}", node.log());
        node
    }

    pub fn start_head(&self, extra: &[&str]) -> Node {
        let mut args = vec!["--head", "--port", "0"];
        args.extend_from_slice(extra);
        self.spawn_node("head", &args)
    }

    pub fn start_raylet(&self, name: &str, head: &Node, extra: &[&str]) -> Node {
        let (addr, token) = head.cluster();
        let mut args = vec!["--address", addr.as_str(), "--token", token.as_str()];
        args.extend_from_slice(extra);
        self.spawn_node(name, &args)
    }

    /// `prism status --json`, parsed.
    pub fn status(&self) -> Value {
        let out = self.run(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// Nodes in the status with the given state.
    pub fn nodes_in_state(&self, state: &str) -> Vec<Value> {
        self.status()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["state"] == state)
            .cloned()
            .collect()
    }
}

impl Drop for Sandbox {
    /// Kills any daemon a `prism start` left in this sandbox.
    fn drop(&mut self) {
        kill_daemons(self.temp());
    }
}

/// SIGKILLs every daemon recorded in a session directory under `temp`.
pub fn kill_daemons(temp: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for pid in daemon_pids(temp) {
        // SAFETY: kill(2) only sends a signal to a pid taken from our own pid files.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
        pids.push(pid);
    }
    pids
}

/// Pids recorded in `daemon.json` files under `temp` whose process still runs.
pub fn daemon_pids(temp: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return vec![];
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("daemon.json")).ok())
        .filter_map(|s| serde_json::from_str::<Value>(&s).ok())
        .filter_map(|v| v["pid"].as_u64().map(|p| p as u32))
        .filter(|pid| process_running(*pid))
        .collect()
}

/// True if `pid` exists and is not a zombie.
pub fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_string));
            !matches!(state.as_deref(), Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// A `prism start --block` child process; killed and reaped on drop.
pub struct Node {
    pub name: String,
    pub session: PathBuf,
    pub child: Option<Child>,
}

impl Node {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    pub fn ready(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.session.join("ready.json")).unwrap())
            .unwrap()
    }

    pub fn node_id(&self) -> String {
        self.ready()["node_id"].as_str().unwrap().to_string()
    }

    /// The head address and token from this node's session.
    pub fn cluster(&self) -> (String, String) {
        let v: Value = serde_json::from_str(
            &std::fs::read_to_string(self.session.join("cluster.json")).unwrap(),
        )
        .unwrap();
        (
            v["head_address"].as_str().unwrap().into(),
            v["token"].as_str().unwrap().into(),
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.session.join(format!("{}.log", self.name))).unwrap_or_default()
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal without reaping.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) only sends a signal to our own child.
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            // SAFETY: kill(2) on our own child; SIGCONT undoes a SIGSTOP from a test.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGCONT);
            }
        }
        self.kill9();
    }
}

/// A TCP port free on 127.0.0.1 a moment ago (for daemons that need a
/// number in their configuration rather than port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Polls `f` every 20 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A job driver: this test binary re-executed with `PRISM_TEST_ROLE`,
/// running the ignored `child_role` test (its workers are started the same
/// way by the raylet). Killed and reaped on drop.
pub struct Job {
    pub child: Option<std::process::Child>,
    pub out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Job {
    pub fn spawn<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
        role: &str,
        envs: &[(K, V)],
    ) -> Job {
        Job::spawn_exe(&std::env::current_exe().unwrap(), role, envs)
    }

    /// Like [`Job::spawn`] with another copy of this binary.
    pub fn spawn_exe<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
        exe: &Path,
        role: &str,
        envs: &[(K, V)],
    ) -> Job {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("stdout");
        let f = std::fs::File::create(&out).unwrap();
        let err = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let mut c = Command::new(exe);
        c.args([
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
        .stderr(err);
        for (k, v) in envs {
            c.env(k, v);
        }
        Job {
            child: Some(c.spawn().expect("spawn job")),
            out,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// What the driver (and the prism runtime in it) printed on stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.out.with_file_name("stderr")).unwrap_or_default()
    }

    /// Waits for exit (killing it after `timeout`); returns success and
    /// stdout, with stderr appended after a `--- stderr` line.
    pub fn finish(&mut self, timeout: Duration) -> (bool, String) {
        let child = self.child.as_mut().unwrap();
        let done = wait_until(timeout, || child.try_wait().unwrap().is_some());
        if !done {
            let _ = child.kill();
        }
        let status = child.wait().unwrap();
        self.child = None;
        let out = format!("{}\n--- stderr\n{}", self.stdout(), self.stderr());
        (done && status.success(), out)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Child pids of `pid` (from /proc), for orphan checks.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            let after = stat.rsplit(')').next().unwrap_or("");
            let ppid = after.split_whitespace().nth(1).and_then(|s| s.parse().ok());
            if ppid == Some(pid) {
                out.push(p);
            }
        }
    }
    out
}

/// A driver-role assertion that also prints what passed (the parent test
/// shows a failing role's output).
pub fn check(cond: bool, what: &str) {
    assert!(cond, "{what}");
    println!("ok: {what}");
}

/// Runs `role` as a driver on its own embedded cluster; it must print ALL OK.
pub fn run_role(role: &str, timeout: Duration) -> String {
    run_role_with(role, &[], timeout)
}

/// [`run_role`] with extra environment (settings of its embedded cluster).
pub fn run_role_with(role: &str, envs: &[(&str, &str)], timeout: Duration) -> String {
    let mut job = Job::spawn(role, envs);
    let (ok, out) = job.finish(timeout);
    assert!(ok && out.contains("ALL OK"), "role {role} failed:\n{out}");
    out
}

impl Sandbox {
    /// The environment of a driver joining this sandbox's cluster at
    /// `head`, through the raylet whose session is `raylet`.
    pub fn driver_envs(&self, head: &Node, raylet: &Node) -> Vec<(String, String)> {
        let (addr, _) = head.cluster();
        let sock = raylet.session.join("tasks.sock");
        let mut envs = vec![
            ("PRISM_ADDRESS".to_string(), addr),
            (
                "PRISM_RAYLET_SOCKET".to_string(),
                sock.display().to_string(),
            ),
        ];
        envs.extend(self.envs.iter().cloned());
        envs
    }
}

/// In a job role: holds until the test creates the file named by
/// `PRISM_TEST_DONE` (at most 300 s); says whether it did.
pub fn hold_until_done() -> bool {
    let done = std::env::var("PRISM_TEST_DONE").expect("PRISM_TEST_DONE names the release file");
    wait_until(Duration::from_secs(300), || Path::new(&done).exists())
}
