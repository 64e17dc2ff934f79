#!/usr/bin/env python3
"""PyTorch's side of benches/vs_torch: gloo all-reduce bandwidth, DDP step
time and pipeline-parallel step time (torch.distributed.pipelining, GPipe and
1F1B) on this machine's CPUs, one torch thread per process, loopback only.

    python3 torch_bench.py            # human-readable table
    python3 torch_bench.py --json     # [{"name", "value", "unit"}, ...]

Row names match `cargo run --release -p prism-ml --example ml_bench -- --json`
so compare.py can join them. Progress goes to stderr.

All-reduce: float32 tensors of 1, 16 and 128 MiB, SUM, with 2 and 4 processes
(gloo over 127.0.0.1). After warm-up, `iters` back-to-back all-reduces are
timed on every rank; the time per all-reduce is the slowest rank's total /
iters. algbw = bytes / time, busbw = algbw * 2(n-1)/n (the nccl-tests
definition), in GB/s (1e9 bytes/s).

DDP step: zero_grad + forward + cross-entropy + backward (+ DDP's gradient
all-reduce) + SGD(lr 0.01, momentum 0.9) step, timed one step at a time; the
row is the median over the timed steps (slowest rank's median for DDP).
Random inputs and labels are generated in-process once before timing.
"""
import argparse
import json
import os
import socket
import statistics
import sys
import time

MIB = 1 << 20

# (size in MiB, warm-up iterations, timed iterations)
ALLREDUCE_SIZES = [(1, 20, 400), (16, 3, 30), (128, 2, 6)]
ALLREDUCE_WORLDS = [2, 4]

# name, layer widths, per-worker batch (DDP, 2 workers), warm-up, timed steps
MLPS = [
    ("small", [64, 256, 256, 10], 64, 50, 500),
    ("large", [1024, 4096, 4096, 1024], 32, 3, 15),
]
DDP_WORLD = 2

# Pipeline: 8 x (Linear(1024, 1024) + ReLU) + Linear(1024, 10) at batch 64,
# p stages cut as Prism's equal-layer cut does (p = 2: 4 | 5 layers), m
# micro-batches; (warm-up, timed) steps as ml_bench's 3 + 20.
PIPE_WIDTHS = [1024] * 9 + [10]
PIPE_STAGES, PIPE_MICROS = (2, 4), (2, 4, 8, 16)
PIPE_BATCH, PIPE_WARMUP, PIPE_STEPS = 64, 3, 20


def pipe_cut(layers, p):
    """Stage i's layers [a, b): Prism's `ps::ranges`."""
    return [(layers * i // p, layers * (i + 1) // p) for i in range(p)]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_thread_env():
    # Children inherit these; torch.set_num_threads(1) is also called in each.
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[k] = "1"
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")


def init_pg(rank, world, port):
    import torch.distributed as dist

    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=world)
    return dist


def mlp(widths):
    import torch.nn as nn

    layers = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def time_steps(model, batch, widths, warmup, steps):
    """Median ms per training step over `steps` after `warmup` steps."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, widths[0])
    y = torch.randint(0, widths[-1], (batch,))
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt * 1e3)
    q = statistics.quantiles(times, n=4)
    log(f"    {widths} batch {batch}: median {q[1]:.3f} ms, p25 {q[0]:.3f}, p75 {q[2]:.3f}, min {min(times):.3f}")
    return statistics.median(times), loss.item()


# ---------------------------------------------------------------- workers
# Each worker puts (rank, result) on the queue; result is a dict or an error.


def allreduce_worker(rank, world, port, q):
    try:
        import torch

        torch.set_num_threads(1)
        dist = init_pg(rank, world, port)
        out = {}
        for mib, warmup, iters in ALLREDUCE_SIZES:
            t = torch.zeros(mib * MIB // 4, dtype=torch.float32)
            for _ in range(warmup):
                dist.all_reduce(t)
            dist.barrier()
            t0 = time.perf_counter()
            for _ in range(iters):
                dist.all_reduce(t)
            el = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
            dist.all_reduce(el, op=dist.ReduceOp.MAX)
            out[mib] = el.item() / iters
        dist.destroy_process_group()
        q.put((rank, out))
    except BaseException as e:  # noqa: BLE001 - report to the parent
        q.put((rank, f"{type(e).__name__}: {e}"))


def ddp_worker(rank, world, port, q):
    try:
        import torch
        from torch.nn.parallel import DistributedDataParallel as DDP

        torch.set_num_threads(1)
        dist = init_pg(rank, world, port)
        out = {}
        for name, widths, batch, warmup, steps in MLPS:
            torch.manual_seed(0)  # same initial weights on every rank
            model = DDP(mlp(widths))
            torch.manual_seed(1 + rank)  # different data per rank
            med, _ = time_steps(model, batch, widths, warmup, steps)
            m = torch.tensor([med], dtype=torch.float64)
            dist.all_reduce(m, op=dist.ReduceOp.MAX)
            out[name] = m.item()
            del model
        dist.destroy_process_group()
        q.put((rank, out))
    except BaseException as e:  # noqa: BLE001
        q.put((rank, f"{type(e).__name__}: {e}"))


def single_worker(rank, world, port, q):
    try:
        import torch

        torch.set_num_threads(1)
        out = {}
        for name, widths, batch, warmup, steps in MLPS:
            torch.manual_seed(0)
            model = mlp(widths)
            med, _ = time_steps(model, batch * DDP_WORLD, widths, warmup, steps)
            out[name] = med
        q.put((rank, out))
    except BaseException as e:  # noqa: BLE001
        q.put((rank, f"{type(e).__name__}: {e}"))


def pipeline_worker(rank, world, port, q):
    """torch.distributed.pipelining: GPipe then 1F1B, one stage per rank, for
    each micro-batch count."""
    try:
        import torch
        import torch.nn.functional as F
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        torch.set_num_threads(1)
        dist = init_pg(rank, world, port)
        torch.manual_seed(0)
        full = mlp(PIPE_WIDTHS)
        # Sequential holds Linear, ReLU, Linear, ReLU, ...: layer i is 2i
        # (the last Linear has no ReLU).
        mods = list(full.children())
        a, b = pipe_cut(len(PIPE_WIDTHS) - 1, world)[rank]
        stage_mod = torch.nn.Sequential(*mods[2 * a : 2 * b])
        x = torch.randn(PIPE_BATCH, PIPE_WIDTHS[0])
        y = torch.randint(0, PIPE_WIDTHS[-1], (PIPE_BATCH,))
        out = {}
        # torch's schedules want at least as many micro-batches as stages.
        schedules = (("gpipe", ScheduleGPipe), ("1f1b", Schedule1F1B))
        runs = [(n, k, m) for m in PIPE_MICROS if m >= world for n, k in schedules]
        for name, kind, micro in runs:
            stage = PipelineStage(stage_mod, rank, world, torch.device("cpu"))
            sched = kind(stage, n_microbatches=micro, loss_fn=F.cross_entropy)
            opt = torch.optim.SGD(stage_mod.parameters(), lr=0.01, momentum=0.9)
            # The stage's own clock, as Prism's stages keep it: the thread's
            # CPU time in its passes, loss, gradient scaling and optimizer
            # step, not waiting for a neighbour (the schedules wait for
            # their receives outside these calls) or for a core.
            busy = [0.0]

            def timed(fn):
                def run(*a, **k):
                    began = time.thread_time()
                    try:
                        return fn(*a, **k)
                    finally:
                        busy[0] += time.thread_time() - began

                return run

            stage.forward_one_chunk = timed(stage.forward_one_chunk)
            stage.backward_one_chunk = timed(stage.backward_one_chunk)
            stage.perform_reduce_grad = timed(stage.perform_reduce_grad)
            sched._maybe_compute_loss = timed(sched._maybe_compute_loss)
            times, busies = [], []
            for i in range(PIPE_WARMUP + PIPE_STEPS):
                dist.barrier()
                t0 = time.perf_counter()
                busy[0] = 0.0
                began = time.thread_time()
                opt.zero_grad(set_to_none=True)
                busy[0] += time.thread_time() - began
                if rank == 0:
                    sched.step(x)
                else:
                    sched.step(target=y, losses=[])
                began = time.thread_time()
                opt.step()
                busy[0] += time.thread_time() - began
                dt = time.perf_counter() - t0
                if i >= PIPE_WARMUP:
                    times.append(dt * 1e3)
                    busies.append(busy[0])
            m = torch.tensor([statistics.median(times)], dtype=torch.float64)
            dist.all_reduce(m, op=dist.ReduceOp.MAX)
            # Each stage's busy share of the step as the slowest rank saw
            # it (Prism divides by the driver's step), each step's mean
            # over the stages, then the median step (as ml_bench does).
            steps = torch.tensor(times, dtype=torch.float64) / 1e3
            dist.all_reduce(steps, op=dist.ReduceOp.MAX)
            per_step = (1 - torch.tensor(busies, dtype=torch.float64) / steps) / world
            dist.all_reduce(per_step, op=dist.ReduceOp.SUM)
            share = statistics.median(per_step.tolist())
            out[(name, micro)] = (m.item(), share)
            log(f"    pipeline {name} m={micro} rank {rank}: median {statistics.median(times):.2f} ms")
        dist.destroy_process_group()
        q.put((rank, out))
    except BaseException as e:  # noqa: BLE001
        q.put((rank, f"{type(e).__name__}: {e}"))


def pipe_single_worker(rank, world, port, q):
    try:
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(0)
        med, _ = time_steps(mlp(PIPE_WIDTHS), PIPE_BATCH, PIPE_WIDTHS, PIPE_WARMUP, PIPE_STEPS)
        q.put((rank, {"single": med}))
    except BaseException as e:  # noqa: BLE001
        q.put((rank, f"{type(e).__name__}: {e}"))


def launch(target, world, timeout=600):
    """Runs `target` in `world` fresh spawned processes; returns rank 0's result."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, world, port, q)) for r in range(world)]
    for p in procs:
        p.start()
    results = {}
    deadline = time.time() + timeout
    try:
        while len(results) < world:
            rank, res = q.get(timeout=max(1, deadline - time.time()))
            if isinstance(res, str):
                raise RuntimeError(f"{target.__name__} rank {rank}: {res}")
            results[rank] = res
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return results[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print JSON rows")
    ap.add_argument(
        "--only", choices=["allreduce", "ddp", "pipeline"], help="run one part of the benchmark"
    )
    args = ap.parse_args()
    one_thread_env()
    import torch

    log(f"torch {torch.__version__}, {os.cpu_count()} CPUs, gloo, 1 thread per process")
    rows = []

    def row(name, value, unit):
        rows.append({"name": name, "value": round(value, 4), "unit": unit})
        log(f"  {name}: {value:.3f} {unit}")

    if args.only in (None, "allreduce"):
        for n in ALLREDUCE_WORLDS:
            log(f"== gloo all-reduce, {n} processes")
            res = launch(allreduce_worker, n)
            for mib, _, _ in ALLREDUCE_SIZES:
                algbw = mib * MIB / res[mib] / 1e9
                busbw = algbw * 2 * (n - 1) / n
                log(f"  {mib} MiB: {res[mib] * 1e3:.2f} ms, algbw {algbw:.3f} GB/s")
                row(f"allreduce busbw {n} workers {mib} MiB", busbw, "GB/s")

    if args.only in (None, "ddp"):
        log(f"== DDP, {DDP_WORLD} processes")
        ddp = launch(ddp_worker, DDP_WORLD)
        log("== single process (no DDP), global batch")
        single = launch(single_worker, 1)
        for name, _, batch, _, _ in MLPS:
            row(f"ddp step {name} mlp {DDP_WORLD}x{batch}", ddp[name], "ms")
            row(f"single step {name} mlp {DDP_WORLD * batch}", single[name], "ms")

    if args.only in (None, "pipeline"):
        single = launch(pipe_single_worker, 1)["single"]
        row(f"single step 8x1024 {PIPE_BATCH}", single, "ms")
        for p in PIPE_STAGES:
            log(f"== torch.distributed.pipelining, {p} stages")
            pipe = launch(pipeline_worker, p)
            for (name, m), (ms, idle) in pipe.items():
                row(f"pipeline step 8x1024 p={p} m={m} {name}", ms, "ms")
                # 1 - (the single process's step / p) / the pipeline's: the
                # share of the step the stages are not computing, bubble and
                # overhead together (theory: (p-1)/(m+p-1) bubble alone).
                row(f"pipeline bubble+overhead p={p} m={m} {name}", 1 - single / (p * ms), "fraction")
                # By the stages' own clocks (as ml_bench's rows of that name).
                row(f"pipeline stage idle p={p} m={m} {name}", idle, "fraction")

    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print(f"{r['name']:<40} {r['value']:>10.3f} {r['unit']}")


if __name__ == "__main__":
    main()
