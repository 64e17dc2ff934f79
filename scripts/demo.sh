#!/usr/bin/env bash
# Demo: DDP training of an MLP on the 8x8 digits (2 worker actors, ring
# all-reduce through the shared-memory object store, checkpoints) on an
# embedded single-machine cluster; then the quickstart (π with 2,000 tasks,
# a map-reduce word count, nested tasks) embedded, and the same program
# submitted to a head and two raylets started on this machine; then the DDP
# run submitted there, recorded by the head (prism runs) and registered as
# digits@champion (prism models). Installs
# libtorch (for tch) into .libtorch/ the first time. Everything else lives
# in a temporary directory and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
LIBTORCH=$(scripts/setup-libtorch.sh)
export LIBTORCH
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cargo build --release -p ddp-digits -p prism-cli --bin ddp-digits --bin prism --example quickstart
prism=./target/release/prism
quickstart=./target/release/examples/quickstart
export PRISM_TEMP_DIR=$(mktemp -d /tmp/prism-demo.XXXXXX)
trap '$prism stop >/dev/null 2>&1 || true; rm -rf "$PRISM_TEMP_DIR"' EXIT

echo "== 1. DDP on the digits: 2 trainer actors on an embedded cluster"
./target/release/ddp-digits
echo

echo "== 2. prism::init() with no address: tasks on an embedded cluster"
$quickstart
echo

echo "== 3. A cluster: a head and two raylets, then prism submit"
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

echo "== 4. Tracked runs and the model registry: DDP submitted to the cluster"
$prism submit -- ./target/release/ddp-digits --epochs 10
echo
$prism runs list
echo
$prism models show digits
echo
echo "(stopping the demo cluster)"
