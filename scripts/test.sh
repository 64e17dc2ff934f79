#!/usr/bin/env bash
# The whole test suite (what CI runs): formatting, clippy, the architecture
# check, then unit, property, multi-process integration tests,
# doctests, and every benchmark once in test mode (so benches cannot rot).
# Needs the Rust toolchain and python3 with pip (libtorch for prism-ml is
# installed once into .libtorch/ by scripts/setup-libtorch.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# A clean build gains nothing from incremental state, which would add ~10 GB
# to a disk that ~80 test binaries already fill (CI once failed with ld's
# Bus error on a full disk).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
LIBTORCH=$(scripts/setup-libtorch.sh)
export LIBTORCH
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The dashboard's browser test drives headless Chromium, the launcher's ssh
# test real OpenSSH servers and its Slurm test a private Slurm (Debian's
# packages); where they cannot be installed those tests say so and skip.
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x /usr/sbin/sshd ] || need+=(openssh-server openssh-client)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
[ -x /usr/sbin/slurmctld ] || need+=(slurm-wlm munge)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null) \
      || echo "note: could not install ${need[*]}; the tests that need them will skip" >&2
  else
    echo "note: ${need[*]} not installed and apt-get is not usable here; the tests that need them will skip" >&2
  fi
fi
# The Kubernetes manifests are checked against the API's schemas in strict
# mode by kubernetes-validate (PyPI; it carries the schemas, so the check
# runs offline), installed once into .tools/.
K8S_VALIDATE=.tools/k8s-validate
if [ ! -f "$K8S_VALIDATE/complete" ]; then
  rm -rf "$K8S_VALIDATE"
  if python3 -m pip install --quiet --disable-pip-version-check --target "$K8S_VALIDATE" \
      kubernetes-validate==1.37.0 >/dev/null 2>&1; then
    touch "$K8S_VALIDATE/complete"
  else
    echo "note: could not install kubernetes-validate; the manifests' schema check will skip" >&2
  fi
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The NCCL path (feature `cuda`) must keep compiling without a GPU; its test
# runs only on a GPU machine and says why it skipped elsewhere.
cargo clippy -p prism-ml --features cuda --all-targets -- -D warnings
scripts/check-architecture.sh
# Every public item of prism, prism-ml and prism-dashboard is documented
# (#![warn(missing_docs)] under clippy's -D warnings above); the docs build
# without a broken or private link.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --quiet
# The user guide builds (mdbook from crates.io, installed once into .tools/;
# ~90 s on 2 cores). Its links, its generated reference page and its code
# are checked by tests/docs_book.rs and tests/readme_tour.rs.
MDBOOK=$(command -v mdbook || echo .tools/mdbook/bin/mdbook)
if [ ! -x "$MDBOOK" ]; then
  cargo install --quiet --locked mdbook --version 0.5.4 --no-default-features \
    --features search --root .tools/mdbook
fi
"$MDBOOK" build docs >/dev/null
# `cargo test --all-targets` builds examples as test harnesses; the tests
# that run an example (readme_tour, readme_ml) need the real binaries.
cargo build --workspace --examples
cargo test --workspace --all-targets
cargo test --workspace --doc
