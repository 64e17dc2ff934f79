#!/usr/bin/env bash
# The pure crates must stay pure: no async runtime, network stack or libtorch.
# The core runtime and the CLI must not pull in libtorch either: only
# prism-ml (and examples built on it) may depend on tch.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
deps_matching() { # crate, regex
  cargo tree -p "$1" -e normal --prefix none 2>/dev/null | grep -E "$2" || true
}
for crate in prism-scheduler prism-objectstore; do
  bad=$(deps_matching "$crate" '^(tokio|quinn|quinn-proto|rustls|tch|torch-sys) ')
  if [ -n "$bad" ]; then
    echo "architecture violation: $crate depends on:" >&2
    echo "$bad" >&2
    status=1
  fi
done
for crate in prism prism-macros prism-cli prism-serve; do
  bad=$(deps_matching "$crate" '^(tch|torch-sys) ')
  if [ -n "$bad" ]; then
    echo "architecture violation: $crate depends on libtorch (only prism-ml may):" >&2
    echo "$bad" >&2
    status=1
  fi
done
# Job binaries link prism (and prism-ml): neither may pull in the HTTP
# stack, which only the dashboard (and the CLI that runs it) needs.
for crate in prism prism-ml; do
  bad=$(deps_matching "$crate" '^(axum|hyper|prometheus-client|prism-dashboard) ')
  if [ -n "$bad" ]; then
    echo "architecture violation: $crate depends on an HTTP stack (only prism-dashboard and prism-serve may):" >&2
    echo "$bad" >&2
    status=1
  fi
done
[ $status -eq 0 ] && echo "architecture check: pure crates have no tokio/quinn/tch dependency; core crates and prism-serve have no tch; job binaries have no HTTP stack unless they serve"
exit $status
