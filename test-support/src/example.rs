//! Running a crate's example binary to its end, as a newcomer would.

use std::process::{Command, Stdio};
use std::time::Duration;

/// Kills the example (and so its embedded cluster) if the test fails.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `target/<profile>/examples/<name>` on an embedded cluster in a temp
/// dir of its own (at most 300 s); it must succeed and print `done`.
/// Returns its stdout.
pub fn run_example(name: &str, done: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        bin.is_file(),
        "{} is missing: `cargo build --workspace --examples` first (scripts/test.sh does; `cargo test --all-targets` builds examples only as test harnesses)",
        bin.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let child = Command::new(bin)
        .env("PRISM_TEMP_DIR", dir.path())
        .env_remove("PRISM_ADDRESS")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut run = Reaped(child);
    let mut status = None;
    crate::wait_until(Duration::from_secs(300), || {
        status = run.0.try_wait().unwrap();
        status.is_some()
    });
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()) && stdout.contains(done),
        "{name}: {status:?} (None: did not finish in 300 s)\n{stdout}"
    );
    stdout
}
