#!/usr/bin/env bash
# Installs libtorch 2.13 (what tch 0.26 binds) when it is not there yet, and
# prints the LIBTORCH path on stdout.
#
# Default (CPU): into .libtorch/. tch cannot download libtorch on these
# machines, and distribution packages are too old, so we take the library out
# of PyPI's torch wheel without its Python dependencies, plus the two small
# CUDA runtime wheels that libtorch_cpu.so links against (~540 MB download).
#
# --cuda: into .libtorch-cuda/, the full wheel set (CUDA libraries, NCCL;
# ~2.7 GB) for `--features cuda` builds on a GPU machine, with libnccl.so
# linked next to libtorch (binaries carry that directory as their rpath).
# Untested on a GPU so far: no GPU has been lent to this project's sessions.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--cuda" ]; then
    ROOT=$PWD/.libtorch-cuda
    LIBTORCH=$ROOT/py/torch
    if [ ! -f "$ROOT/complete" ]; then
        echo "installing libtorch 2.13 with CUDA and NCCL into $ROOT (one time, ~2.7 GB)" >&2
        rm -rf "$ROOT"
        python3 -m pip install --quiet --disable-pip-version-check \
            --target "$ROOT/py" torch==2.13.0 >&2
        nccl=$(find "$ROOT/py/nvidia" -name 'libnccl.so*' | head -n 1)
        if [ -z "$nccl" ]; then
            echo "no libnccl.so.* among the installed wheels" >&2
            exit 1
        fi
        ln -sf "$nccl" "$LIBTORCH/lib/libnccl.so"
        touch "$ROOT/complete"
    fi
    echo "$LIBTORCH"
    exit 0
fi
ROOT=$PWD/.libtorch
LIBTORCH=$ROOT/py/torch
if [ ! -f "$ROOT/complete" ]; then
    echo "installing libtorch 2.13 into $ROOT (one time, ~540 MB download)" >&2
    rm -rf "$ROOT"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$ROOT/py" \
        torch==2.13.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 >&2
    # CPU-only trim: the CUDA halves of libtorch are never linked (--as-needed).
    for lib in libtorch_cuda.so libtorch_cuda_linalg.so libtorch_nvshmem.so \
        libc10_cuda.so libtorch_python.so libcaffe2_nvrtc.so; do
        rm -f "$LIBTORCH/lib/$lib"
    done
    touch "$ROOT/complete"
fi
echo "$LIBTORCH"
