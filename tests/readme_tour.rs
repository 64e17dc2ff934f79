//! The README's and the guide's code is the code CI runs: every ```rust
//! block of README.md and of the guide (`docs/src/*.md`) must be a
//! `// readme:<name>` region of `examples/tour.rs`, `examples/guide.rs` or
//! `ml/examples/readme_ml.rs`, verbatim; the README must show every region
//! of the tour and of the ML example; and the tour and the guide's example
//! must run to the end on an embedded cluster (no GPU needed) in a temp dir
//! of their own (`ml/tests/examples_run.rs` runs the ML one).

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

const SOURCES: [&str; 3] = [
    "examples/tour.rs",
    "examples/guide.rs",
    "ml/examples/readme_ml.rs",
];

/// Every region of every source: `(file, name, text)`.
fn all_regions() -> Vec<(&'static str, String, String)> {
    SOURCES
        .iter()
        .flat_map(|file| {
            let source = std::fs::read_to_string(root().join(file)).unwrap();
            regions(&source)
                .into_iter()
                .map(move |(name, text)| (*file, name, text))
        })
        .collect()
}

/// Fails naming each ```rust block of `page` that is no region.
fn blocks_are_regions(page: &Path, regions: &[(&str, String, String)]) -> usize {
    let text = std::fs::read_to_string(page).unwrap();
    let blocks = rust_blocks(&text);
    for b in &blocks {
        assert!(
            regions.iter().any(|(_, _, r)| r == b),
            "this ```rust block of {} is in no example that CI runs \
             (add it as a `// readme:` region of one of {SOURCES:?}):\n{b}",
            page.display()
        );
    }
    blocks.len()
}

#[test]
fn readme_blocks_are_the_examples_regions() {
    let regions = all_regions();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let blocks = rust_blocks(&readme);
    for (file, name, text) in &regions {
        if *file == "examples/guide.rs" {
            continue;
        }
        assert!(
            blocks.contains(text),
            "README.md has no ```rust block equal to region `{name}` of {file}; \
             copy it over:\n{text}"
        );
    }
    blocks_are_regions(&root().join("README.md"), &regions);
}

#[test]
fn the_guides_blocks_are_the_examples_regions() {
    let regions = all_regions();
    let mut checked = 0;
    for page in std::fs::read_dir(root().join("docs/src")).unwrap() {
        let page = page.unwrap().path();
        if page.extension().is_some_and(|e| e == "md") {
            checked += blocks_are_regions(&page, &regions);
        }
    }
    assert!(checked >= 8, "only {checked} rust blocks in the guide");
}

/// `target/<profile>/examples/<name>`, built by `cargo build --examples`
/// (`cargo test --all-targets` links examples as test harnesses instead).
fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("examples").join(name);
    assert!(
        bin.is_file(),
        "{} is missing: `cargo build --example {name}` first (scripts/test.sh does; `cargo test --all-targets` builds examples only as test harnesses)",
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

/// Runs an example to its end; returns its stdout.
fn run_example(name: &str, done: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let child = Command::new(example_bin(name))
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
            "{name} did not finish in 120 s:\n{}\n{}",
            read(&out),
            read(&err)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (read(&out), read(&err));
    assert!(
        status.success() && stdout.contains(done),
        "{name}: {status}\n{stdout}\n{stderr}"
    );
    stdout
}

#[test]
fn the_tour_runs_to_the_end_on_an_embedded_cluster() {
    let stdout = run_example("tour", "TOUR OK");
    assert!(stdout.contains("no node has 8 GPU"), "{stdout}");
}

#[test]
fn the_guides_example_runs_to_the_end_on_an_embedded_cluster() {
    let stdout = run_example("guide", "GUIDE OK");
    assert!(stdout.contains("328350"), "{stdout}");
}
