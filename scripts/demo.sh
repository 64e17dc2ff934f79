#!/usr/bin/env bash
# Demo: the quickstart (π with 2,000 tasks, a map-reduce word count, nested
# tasks) on an embedded single-machine cluster with no setup; then the same
# program submitted to a head and two raylets started on this machine.
# Everything lives in a temporary directory and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p prism-cli --bin prism --example quickstart
prism=./target/release/prism
quickstart=./target/release/examples/quickstart
export PRISM_TEMP_DIR=$(mktemp -d /tmp/prism-demo.XXXXXX)
trap '$prism stop >/dev/null 2>&1 || true; rm -rf "$PRISM_TEMP_DIR"' EXIT

echo "== 1. prism::init() with no address: an embedded cluster in the driver"
$quickstart
echo

echo "== 2. A cluster: a head and two raylets, then prism submit"
$prism start --head --port 0 --num-cpus 2 --labels zone=a
session=$(ls -d "$PRISM_TEMP_DIR"/session_* | head -n 1)
address=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["head_address"])' "$session/cluster.json")
token=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$session/cluster.json")
$prism start --address "$address" --token "$token" --num-cpus 2 --num-gpus 2 --labels zone=b
$prism start --address "$address" --token "$token" --num-cpus 1 --resources '{"accel": 4}'
echo
$prism submit -- "$quickstart"
echo
$prism status
echo
$prism job list
echo
echo "(stopping the demo cluster)"
