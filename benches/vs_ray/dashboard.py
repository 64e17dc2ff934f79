"""Ray's dashboard state API under the same load as Prism's
benches/dashboard_load.rs: 10,000 finished tasks, 1,000 actors (created,
then killed), 100 placement groups; then p50/p95 of GET requests for pages
of 100 rows. Run by dashboard.sh against a local `ray start --head`."""
import os
import statistics
import sys
import time
import urllib.request

import ray
from ray.util.placement_group import placement_group

TASKS = int(os.environ.get("PRISM_BENCH_TASKS", 10_000))
ACTORS = int(os.environ.get("PRISM_BENCH_ACTORS", 1_000))
GROUPS = int(os.environ.get("PRISM_BENCH_GROUPS", 100))
SAMPLES = int(os.environ.get("PRISM_BENCH_SAMPLES", 100))


@ray.remote
def noop(i):
    return i


@ray.remote(num_cpus=0)
class Cell:
    def get(self):
        return 0


def main():
    ray.init(address="auto")
    t = time.time()
    for start in range(0, TASKS, 1000):
        ray.get([noop.remote(i) for i in range(start, min(TASKS, start + 1000))])
    for _ in range((ACTORS + 49) // 50):
        hs = [Cell.remote() for _ in range(min(50, ACTORS))]
        ray.get([h.get.remote() for h in hs])
        for h in hs:
            ray.kill(h, no_restart=True)
    pgs = []
    for _ in range(GROUPS):
        pg = placement_group([{"CPU": 0.01}], strategy="PACK")
        ray.get(pg.ready(), timeout=30)
        pgs.append(pg)
    print(f"loaded {TASKS} tasks, {ACTORS} actors (killed), {GROUPS} placement groups in {time.time() - t:.1f} s")
    time.sleep(5)  # let task events reach the GCS
    base = "http://127.0.0.1:8265"
    print("| Ray request | p50 ms | p95 ms | bytes |\n|---|---:|---:|---:|")
    for path in ["/api/v0/tasks?limit=100", "/api/v0/actors?limit=100", "/api/v0/placement_groups?limit=100",
                 "/api/v0/nodes?limit=100", "/api/cluster_status", "/"]:
        ms, size = [], 0
        for _ in range(SAMPLES):
            t0 = time.perf_counter()
            with urllib.request.urlopen(base + path, timeout=120) as r:
                size = len(r.read())
            ms.append((time.perf_counter() - t0) * 1e3)
        ms.sort()
        p95 = ms[min(len(ms) - 1, round((len(ms) - 1) * 0.95))]
        print(f"| `{path}` | {statistics.median(ms):.1f} | {p95:.1f} | {size} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
