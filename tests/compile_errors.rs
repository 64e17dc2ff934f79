//! What a user sees when their code is wrong: files under `tests/ui/` are
//! type-checked by `rustc` against this build's `prism` (no linking, a
//! fraction of a second each) and their diagnostics asserted.

use std::path::{Path, PathBuf};
use std::process::Command;

/// This build's `libprism-*.rlib` and its dependencies' directory
/// (`target/<profile>/deps`, where the test binary lives).
fn prism_rlib() -> (PathBuf, PathBuf) {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let newest = std::fs::read_dir(&deps)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("libprism-") && name.ends_with(".rlib")
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| panic!("no libprism-*.rlib in {}", deps.display()))
        .path();
    (newest, deps)
}

/// Type-checks `source` as a binary crate; returns (success, stderr).
fn check(source: &Path) -> (bool, String) {
    let (rlib, deps) = prism_rlib();
    let out_dir = tempfile::tempdir().unwrap();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "bin",
            "--emit=metadata",
        ])
        .args(["--error-format", "short", "--crate-name", "ui"])
        .arg("--out-dir")
        .arg(out_dir.path())
        .arg("--extern")
        .arg(format!("prism={}", rlib.display()))
        .arg("-L")
        .arg(format!("dependency={}", deps.display()))
        .arg(source)
        .output()
        .expect("run rustc");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ui(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ui")
        .join(name)
}

#[test]
fn a_type_without_rkyv_derives_gets_prisms_message_first_at_the_parameter() {
    let path = ui("missing_derive.rs");
    let (ok, stderr) = check(&path);
    assert!(!ok, "compiled: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error[")).collect();
    let first = errors
        .first()
        .unwrap_or_else(|| panic!("no error: {stderr}"));
    assert!(
        first.contains("missing_derive.rs:10:12")
            && first.contains("`Point` cannot cross processes")
            && first.contains("must derive rkyv's `Archive`, `Serialize` and `Deserialize`"),
        "the first error is not the clear one:\n{stderr}"
    );
    for e in &errors {
        assert!(
            e.contains("`Point` cannot"),
            "every error is one of Prism's messages, none about rkyv's or Arg's internals:\n{stderr}"
        );
    }
}

#[test]
fn an_actor_method_taking_such_a_type_gets_the_same_message_first() {
    let (ok, stderr) = check(&ui("missing_derive_actor.rs"));
    assert!(!ok, "compiled: {stderr}");
    let first = stderr
        .lines()
        .find(|l| l.contains("error["))
        .unwrap_or_default();
    assert!(
        first.contains("missing_derive_actor.rs:18:27")
            && first.contains("`Point` cannot cross processes"),
        "the first error is not the clear one:\n{stderr}"
    );
}

#[test]
fn the_same_program_with_an_archivable_type_compiles() {
    // The control: the harness itself type-checks a good program.
    let source = std::fs::read_to_string(ui("missing_derive.rs")).unwrap();
    let fixed = source
        .replace("#[derive(Debug, Clone)]", "#[derive(Debug, Clone, Copy)]")
        .replace("fn norm(p: Point)", "fn norm(p: (f64, f64))")
        .replace("(p.x * p.x + p.y * p.y)", "(p.0 * p.0 + p.1 * p.1)")
        .replace(
            "norm::remote(Point { x: 3.0, y: 4.0 })",
            "norm::remote((3.0, 4.0))",
        );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archivable.rs");
    std::fs::write(&path, format!("#![allow(dead_code)]\n{fixed}")).unwrap();
    let (ok, stderr) = check(&path);
    assert!(ok, "{stderr}");
}
