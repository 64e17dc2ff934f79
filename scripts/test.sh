#!/usr/bin/env bash
# The whole test suite: unit, property, multi-process integration tests,
# doctests, and every benchmark once in test mode (so benches cannot rot).
# Needs only the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets
cargo test --workspace --doc
