#!/usr/bin/env bash
# Prism's dashboard vs Ray's, same machine, same load (10,000 finished
# tasks, 1,000 killed actors, 100 placement groups), one after the other:
# p50/p95 of state API pages of 100 rows. Installs Ray (with its dashboard)
# into .venv-dashboard once; loopback only, no usage stats.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ray_version=2.60.0
venv="$here/.venv-dashboard"
if [ ! -x "$venv/bin/ray" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "ray[default]==$ray_version"
fi
export RAY_USAGE_STATS_ENABLED=0
"$venv/bin/ray" stop --force >/dev/null 2>&1 || true
"$venv/bin/ray" start --head --num-cpus 2 --include-dashboard true --dashboard-host 127.0.0.1 >/dev/null
trap '"$venv/bin/ray" stop --force >/dev/null 2>&1 || true' EXIT
"$venv/bin/python" "$here/dashboard.py"
"$venv/bin/ray" stop --force >/dev/null 2>&1 || true
cd "$here/../.."
PRISM_BENCH_CACHE_MS=0 cargo bench --bench dashboard_load
