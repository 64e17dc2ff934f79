#!/usr/bin/env bash
# Serving figures, same machine, same run: no-op HTTP requests/s and
# p50/p99 (wrk, 10 s per row) at 1, 16 and 64 connections with 1 and 2
# replicas, for nginx (a static 5-byte file: the ceiling), Prism's
# serve_noop example and Ray Serve 2.60.0 (installed into .venv-serve once;
# loopback only, no usage stats); then handle calls, batching, scale from
# zero, autoscaling and idle memory (serve/benches/serve_load.rs and
# serve_handles_ray.py). Needs wrk and nginx (apt). Prints markdown tables.
# DURATION=3s for a quick look.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dur=${DURATION:-10s}
out=${OUT:-$here/out}
mkdir -p "$out"
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
if [ ! -x "$here/.venv-serve/bin/python" ]; then
    python3 -m venv "$here/.venv-serve"
    "$here/.venv-serve/bin/pip" install --quiet "ray[serve]==2.60.0"
fi
export RAY_USAGE_STATS_ENABLED=0
(cd "$root" && cargo build --release --quiet -p prism-serve --example serve_noop)

pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done
            "$here/.venv-serve/bin/ray" stop --force >/dev/null 2>&1 || true; }
trap cleanup EXIT

wait_up() { # url
    for _ in $(seq 1 600); do curl -sf -d x "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "nothing answers at $1" >&2; return 1
}
bench() { # system replicas url
    for c in 1 16 64; do
        t=$(( c < 2 ? 1 : 2 ))
        r=$(wrk -t"$t" -c"$c" -d"$dur" --latency -s "$here/post.lua" "$3")
        echo "$r" > "$out/serve-$1-$2-$c.txt"
        rps=$(echo "$r" | awk '/Requests\/sec/ {print $2}')
        p50=$(echo "$r" | awk '$1=="50%" {print $2}')
        p99=$(echo "$r" | awk '$1=="99%" {print $2}')
        bad=$(echo "$r" | awk '/Non-2xx/ {print $5}')
        echo "| $1 | $2 | $c | $rps | $p50 | $p99 | ${bad:-0} |"
    done
}

echo "| system | replicas | connections | requests/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|---|---|"
# nginx: a static 5-byte file, the ceiling for this machine.
ngx=$(mktemp -d); chmod 755 "$ngx"; printf hello > "$ngx/noop"; chmod 644 "$ngx/noop"
cat > "$ngx/nginx.conf" <<CONF
worker_processes 2; pid $ngx/nginx.pid; error_log $ngx/error.log; daemon off;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:18080; root $ngx;
  location /noop { error_page 405 =200 \$uri; } } }
CONF
nginx -c "$ngx/nginx.conf" & pids+=($!)
wait_up http://127.0.0.1:18080/noop
bench nginx - http://127.0.0.1:18080/noop
for n in 1 2; do
    PRISM_TEMP_DIR=$(mktemp -d) "$root/target/release/examples/serve_noop" "$n" 18000 > "$out/prism-$n.log" 2>&1 & p=$!
    wait_up http://127.0.0.1:18000/noop
    bench prism "$n" http://127.0.0.1:18000/noop
    kill -INT "$p"; wait "$p" 2>/dev/null || true
done
for n in 1 2; do
    "$here/.venv-serve/bin/python" "$here/serve_noop_ray.py" "$n" 18001 > "$out/ray-$n.log" 2>&1 & p=$!
    wait_up http://127.0.0.1:18001/noop
    bench ray-serve "$n" http://127.0.0.1:18001/noop
    kill "$p"; wait "$p" 2>/dev/null || true
    "$here/.venv-serve/bin/ray" stop --force >/dev/null 2>&1 || true
done

# Handles, batching, scale from zero, autoscaling, idle memory.
echo
(cd "$root" && cargo bench --quiet -p prism-serve --bench serve_load 2>/dev/null | grep '^|')
echo
"$here/.venv-serve/bin/python" "$here/serve_handles_ray.py" 2>/dev/null | grep '^|'
