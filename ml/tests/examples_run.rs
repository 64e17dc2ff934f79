//! The ML examples run to their end, each on an embedded cluster in a temp
//! dir of its own: the README's ML block (`ml/examples/readme_ml.rs`, whose
//! region `tests/readme_tour.rs` compares with the README), and the digits
//! MLP served over HTTP (`ml/examples/serve_digits.rs`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the example (and so its embedded cluster) if the test fails.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `ml/examples/<name>`; it must print `done`.
fn run_example(name: &str, done: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        bin.is_file(),
        "{} is missing: `cargo build -p prism-ml --example {name}` first (scripts/test.sh does; `cargo test --all-targets` builds examples only as test harnesses)",
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
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = run.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not finish in 300 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        status.success() && stdout.contains(done),
        "{status}\n{stdout}"
    );
    stdout
}

#[test]
fn the_readme_ml_block_trains_and_scores_on_an_embedded_cluster() {
    run_example("readme_ml", "ML OK");
}

#[test]
fn the_digits_mlp_is_trained_then_served_over_http_with_batching() {
    let out = run_example("serve_digits", "SERVE DIGITS OK");
    println!("{out}");
}
