#!/usr/bin/env bash
# Ray's `ray microbenchmark` and `prism microbenchmark` back to back on this
# machine, then one table: metric, Ray, Prism, ratio. Not part of the test
# suite (it takes many minutes). Usage:
#   benches/vs_ray/run.sh                # everything
#   TESTS_TO_RUN="tasks" benches/vs_ray/run.sh   # rows whose name contains "tasks"
set -euo pipefail
cd "$(dirname "$0")"
here=$PWD
root=$(cd ../.. && pwd)
ray_version=2.60.0
out=${OUT:-$here/out}
mkdir -p "$out"

# Ray, pinned, in a local venv; loopback only, no usage stats.
if [ ! -x "$here/.venv/bin/ray" ] || ! "$here/.venv/bin/python" -c "import numpy, grpc" 2>/dev/null; then
    python3 -m venv "$here/.venv"
    "$here/.venv/bin/pip" install --quiet "ray[client]==$ray_version" numpy
fi
export RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0

echo "== ray microbenchmark (ray $ray_version)"
# Its last rows (Ray Client) sometimes fail to start a server on a busy
# 2-core machine: the rows printed before are kept, and Prism still runs.
(cd /tmp && TESTS_TO_RUN="${TESTS_TO_RUN:-}" "$here/.venv/bin/ray" microbenchmark 2>&1 \
    || echo "(ray microbenchmark exited with an error; the rows above are kept)") | tee "$out/ray.txt"
"$here/.venv/bin/ray" stop --force >/dev/null 2>&1 || true

echo "== prism microbenchmark"
(cd "$root" && cargo build --release -p prism-cli --bin prism)
filter=()
if [ -n "${TESTS_TO_RUN:-}" ]; then filter=(--filter "$TESTS_TO_RUN"); fi
"$root/target/release/prism" microbenchmark --json "${filter[@]}" > "$out/prism.json"

python3 "$here/compare.py" "$out/ray.txt" "$out/prism.json" | tee "$out/table.md"
echo "(machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $(date -u +%Y-%m-%d))"
