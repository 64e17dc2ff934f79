#!/usr/bin/env bash
# Demo: a head and two raylets on this machine, then `prism status`.
# Everything lives in a temporary directory and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p prism-cli
prism=./target/release/prism
export PRISM_TEMP_DIR=$(mktemp -d /tmp/prism-demo.XXXXXX)
trap '$prism stop >/dev/null; rm -rf "$PRISM_TEMP_DIR"' EXIT

$prism start --head --port 0 --num-cpus 2 --labels zone=a
session=$(ls -d "$PRISM_TEMP_DIR"/session_* | head -n 1)
address=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["head_address"])' "$session/cluster.json")
token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$session/cluster.json")
$prism start --address "$address" --token "$token" --num-cpus 4 --num-gpus 2 --labels zone=b
$prism start --address "$address" --token "$token" --num-cpus 1 --resources '{"accel": 4}'
echo
$prism status
echo
echo "(stopping the demo cluster)"
