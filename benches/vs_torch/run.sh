#!/usr/bin/env bash
# PyTorch 2.13 (gloo all-reduce bandwidth, DDP step time, CPU only, one thread
# per process) and Prism's ML layer on the same machine, back to back, then
# one table: metric, PyTorch, Prism, ratio. Not part of the test suite. Usage:
#   benches/vs_torch/run.sh                 # both sides
#   SKIP_PRISM=1 benches/vs_torch/run.sh    # PyTorch only (no Rust build)
#   SKIP_TORCH=1 benches/vs_torch/run.sh    # Prism only, reuse out/torch.json
set -euo pipefail
cd "$(dirname "$0")"
here=$PWD
root=$(cd ../.. && pwd)
out=${OUT:-$here/out}
py=$here/.py
mkdir -p "$out"

# PyTorch 2.13 from PyPI into .py with pip --target (once). PyPI only has the
# CUDA 13 build: its Python extension links libtorch_cuda.so, which needs the
# CUDA libraries below to load even on a machine without a GPU. Triton,
# cuda-bindings, setuptools and the CUDA toolkit metapackage are not needed
# for CPU work and are left out (--no-deps). About 2.3 GB download.
torch_pkgs=(
    torch==2.13.0
    # pure-Python dependencies that `import torch` uses (numpy only silences a warning)
    typing_extensions==4.16.0 sympy==1.14.0 mpmath==1.4.1 networkx==3.6.1
    jinja2==3.1.6 MarkupSafe==3.0.4 fsspec==2026.9.0 filelock==4.2.11 numpy==2.4.6
    # CUDA runtime + CUPTI: needed by libtorch_cpu.so itself
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
    # needed by libtorch_cuda.so (and so by torch._C), pins from torch's metadata
    nvidia-cudnn-cu13==9.20.0.48 nvidia-nccl-cu13==2.29.7 nvidia-nvshmem-cu13==3.4.5
    nvidia-cusparselt-cu13==0.8.1 nvidia-cublas==13.1.1.3 nvidia-cufft==12.0.0.61
    nvidia-cufile==1.15.1.6 nvidia-curand==10.4.0.35 nvidia-cusparse==12.6.3.3
    nvidia-nvjitlink==13.0.88 nvidia-cuda-nvrtc==13.0.88
)
export PYTHONPATH=$py${PYTHONPATH:+:$PYTHONPATH}
if [ -z "${SKIP_TORCH:-}" ]; then
    if [ ! -f "$py/complete" ]; then
        echo "== installing PyTorch 2.13 into $py (one time, ~2.3 GB download)" >&2
        rm -rf "$py"
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
            --target "$py" "${torch_pkgs[@]}"
        python3 -c "import torch, torch.distributed as d; assert d.is_gloo_available()"
        touch "$py/complete"
    fi
    echo "== PyTorch (load average before: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    python3 "$here/torch_bench.py" --json > "$out/torch.json"
    echo "== (load average after: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
fi

prism_json=""
if [ -n "${SKIP_PRISM:-}" ]; then
    echo "== Prism skipped (SKIP_PRISM set)" >&2
elif ! command -v cargo >/dev/null; then
    echo "== Prism skipped (no cargo)" >&2
else
    echo "== Prism ml_bench" >&2
    LIBTORCH=$("$root/scripts/setup-libtorch.sh")
    export LIBTORCH
    export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    if (cd "$root" && cargo run --release -p prism-ml --example ml_bench -- --json) > "$out/prism.json"; then
        prism_json=$out/prism.json
    else
        echo "== Prism ml_bench failed; PyTorch side only" >&2
    fi
fi

python3 "$here/compare.py" "$out/torch.json" $prism_json | tee "$out/table.md"
echo "(machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $(date -u +%Y-%m-%d))"
