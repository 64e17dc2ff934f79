#!/usr/bin/env bash
# Installs libtorch 2.13 (what tch 0.26 binds) into .libtorch/ when it is not
# there yet. tch cannot download libtorch on these machines, and distribution
# packages are too old, so we take the library out of PyPI's torch wheel
# without its Python dependencies, plus the two small CUDA runtime wheels that
# libtorch_cpu.so links against. Prints the LIBTORCH path on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
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
