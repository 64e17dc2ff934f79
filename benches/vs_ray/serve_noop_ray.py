"""Ray Serve's side of the serving figures: one no-op deployment (the same
5-byte answer as Prism's serve_noop example) on 127.0.0.1:PORT/noop.
Usage: python serve_noop_ray.py REPLICAS PORT  (serves until killed)."""
import sys
import time

import ray
from ray import serve

replicas, port = int(sys.argv[1]), int(sys.argv[2])
ray.init(num_cpus=replicas + 1, include_dashboard=False)
serve.start(http_options={"host": "127.0.0.1", "port": port})


@serve.deployment(num_replicas=replicas, max_ongoing_requests=64)
class Noop:
    async def __call__(self, request):
        return b"hello"


serve.run(Noop.bind(), route_prefix="/noop")
print(f"serving {replicas} no-op replica(s) at http://127.0.0.1:{port}/noop", flush=True)
while True:
    time.sleep(3600)
