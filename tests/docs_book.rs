//! The user guide (`docs/`, an mdBook) stays whole and true: its
//! configuration page is exactly what `prism reference` generates from the
//! settings table and the CLI's flags, every page is in the summary, and
//! every link between pages (and to a heading) lands. `scripts/test.sh`
//! builds the book with mdbook; `tests/readme_tour.rs` runs its code.

use prism_test_support::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/src")
}

#[test]
fn the_configuration_page_is_what_prism_reference_generates() {
    let out = std::process::Command::new(prism_bin())
        .arg("reference")
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let page = std::fs::read_to_string(src().join("reference.md")).unwrap();
    assert!(
        page == generated,
        "docs/src/reference.md is stale: regenerate it with\n  \
         cargo run -p prism-cli -- reference > docs/src/reference.md"
    );
    for var in [
        "PRISM_HEARTBEAT_INTERVAL_MS",
        "PRISM_TEMP_DIR",
        "--dashboard-port",
    ] {
        assert!(page.contains(var), "{var} is missing from the reference");
    }
}

/// `[text](target)` links of a Markdown page, outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

/// mdBook's anchor for a heading: lower case, spaces to dashes, only
/// alphanumerics, dashes and underscores kept.
fn anchors(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| {
            h.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

fn pages() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    v.sort();
    v
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn every_page_is_in_the_summary_and_every_link_lands() {
    let summary = std::fs::read_to_string(src().join("SUMMARY.md")).unwrap();
    let listed: BTreeSet<String> = links(&summary).into_iter().collect();
    for page in pages() {
        let n = name(&page);
        if n != "SUMMARY.md" {
            assert!(listed.contains(&n), "{n} is not in SUMMARY.md");
        }
    }
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() {
                page.clone()
            } else {
                src().join(file)
            };
            assert!(
                target.is_file(),
                "{}: the link ({link}) goes nowhere",
                name(&page)
            );
            if !anchor.is_empty() {
                let there = std::fs::read_to_string(&target).unwrap();
                assert!(
                    anchors(&there).contains(anchor),
                    "{}: no heading #{anchor} in {}",
                    name(&page),
                    name(&target)
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 15, "only {checked} links checked");
}
