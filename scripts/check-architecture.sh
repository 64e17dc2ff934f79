#!/usr/bin/env bash
# The pure crates must stay pure: no async runtime, network stack or libtorch.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for crate in prism-scheduler prism-objectstore; do
  bad=$(cargo tree -p "$crate" -e normal --prefix none 2>/dev/null | grep -E '^(tokio|quinn|quinn-proto|rustls|tch|torch-sys) ' || true)
  if [ -n "$bad" ]; then
    echo "architecture violation: $crate depends on:" >&2
    echo "$bad" >&2
    status=1
  fi
done
[ $status -eq 0 ] && echo "architecture check: pure crates have no tokio/quinn/tch dependency"
exit $status
