"""Ray Serve's side of `cargo bench -p prism-serve --bench serve_load`:
deployment-handle calls/s one at a time and 64 in flight, the first call
of a deployment scaled to zero, and the resident memory of the whole
tree (driver, GCS, raylet, controller, proxy, one replica) when idle."""
import os
import time

import ray
from ray import serve


def tree_rss_mb(pid):
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(k) for k in f.read().split())
        except OSError:
            pass
    return total


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5})
class Echo:
    async def __call__(self, x):
        return x


ray.init(num_cpus=6, include_dashboard=False)
serve.start(http_options={"host": "127.0.0.1", "port": 18002})
h = serve.run(Echo.bind(), name="echo", route_prefix="/echo")
time.sleep(3)
rss = tree_rss_mb(os.getpid())
n = 2000
lat = []
t0 = time.time()
for i in range(n):
    t = time.time()
    assert h.remote(i).result() == i
    lat.append(time.time() - t)
seq = n / (time.time() - t0)
lat.sort()
t0 = time.time()
done = 0
while done < n:
    rs = [h.remote(i) for i in range(64)]
    for i, r in enumerate(rs):
        assert r.result() == i
    done += 64
conc = done / (time.time() - t0)
zero = Echo.options(
    name="zero",
    autoscaling_config={"min_replicas": 0, "max_replicas": 1, "initial_replicas": 0},
)
hz = serve.run(zero.bind(), name="zero", route_prefix="/zero")
t = time.time()
hz.remote(1).result()
cold = time.time() - t
print("| serving (Ray Serve 2.60.0) | value |")
print("|---|---|")
print(f"| handle calls/s, one at a time | {seq:.0f} (p50 {lat[len(lat)//2]*1e6:.0f} µs) |")
print(f"| handle calls/s, 64 in flight | {conc:.0f} |")
print(f"| first call of a deployment scaled to zero | {cold*1e3:.0f} ms |")
print(f"| idle RSS: driver + GCS + raylet + controller + proxy + 1 replica | {rss:.0f} MB |")
serve.shutdown()
