//! The README's code is the code CI runs: every `// readme:<name>` region of
//! `examples/tour.rs` and `ml/examples/readme_ml.rs` must appear verbatim as
//! a ```rust block of README.md, every ```rust block of README.md must be
//! one of them, and the tour must run to the end on an embedded cluster (no
//! GPU needed) in a temp dir of its own (`ml/tests/readme_ml.rs` runs the
//! other).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `name → text` for each region, less the marker line's indentation.
fn regions(source: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, usize, Vec<String>)> = None;
    for line in source.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match (trimmed.strip_prefix("// readme:"), open.take()) {
            (Some("end"), Some((name, _, lines))) => out.push((name, lines.join("\n"))),
            (Some("end"), None) => panic!("`// readme:end` without a region"),
            (Some(name), None) => open = Some((name.to_string(), indent, Vec::new())),
            (Some(name), Some((outer, ..))) => panic!("region {name} opened inside {outer}"),
            (None, Some((name, at, mut lines))) => {
                let kept = if line.len() >= at && line[..at].trim().is_empty() {
                    &line[at..]
                } else {
                    assert!(
                        line.trim().is_empty(),
                        "region {name}: `{line}` left of its marker"
                    );
                    ""
                };
                lines.push(kept.to_string());
                open = Some((name, at, lines));
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a region is not closed");
    out
}

/// The bodies of the README's ```rust blocks.
fn rust_blocks(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in readme.lines() {
        match (block.as_mut(), line.trim_end()) {
            (None, "```rust") => block = Some(Vec::new()),
            (Some(_), "```") => out.push(block.take().unwrap().join("\n")),
            (Some(b), _) => b.push(line),
            (None, _) => {}
        }
    }
    out
}

const SOURCES: [&str; 2] = ["examples/tour.rs", "ml/examples/readme_ml.rs"];

#[test]
fn readme_blocks_are_the_examples_regions() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let blocks = rust_blocks(&readme);
    let mut all = Vec::new();
    for file in SOURCES {
        let source = std::fs::read_to_string(root().join(file)).unwrap();
        for (name, text) in regions(&source) {
            assert!(
                blocks.contains(&text),
                "README.md has no ```rust block equal to region `{name}` of {file}; \
                 copy it over:\n{text}"
            );
            all.push(text);
        }
    }
    for b in &blocks {
        assert!(
            all.contains(b),
            "this ```rust block of README.md is in no example that CI runs \
             (add it as a `// readme:` region of one of {SOURCES:?}):\n{b}"
        );
    }
}

/// `target/<profile>/examples/tour`, built by `cargo test --all-targets`.
fn tour_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/tour");
    assert!(
        bin.is_file(),
        "{} is missing: `cargo build --example tour` (cargo test --all-targets builds it)",
        bin.display()
    );
    bin
}

/// Kills the tour (and so its embedded cluster) if the test fails.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn the_tour_runs_to_the_end_on_an_embedded_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let child = Command::new(tour_bin())
        .env("PRISM_TEMP_DIR", dir.path())
        .env_remove("PRISM_ADDRESS")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut tour = Reaped(child);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = tour.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the tour did not finish in 120 s:\n{}\n{}",
            read(&out),
            read(&err)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (read(&out), read(&err));
    assert!(
        status.success() && stdout.contains("TOUR OK"),
        "{status}\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("no node has 8 GPU"), "{stdout}");
}
