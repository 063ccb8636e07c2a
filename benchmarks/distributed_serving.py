"""Measure the Ray Serve figures of the book in one run: latency percentiles and a replica kill.

    python benchmarks/distributed_serving.py [--requests 500 --concurrency 8]

Starts Ray locally (loopback only), deploys the book's model server with 2
replicas, sends a steady load, then kills one replica under load and counts
requests sent, succeeded, retried and failed. Ray is always shut down.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from helpers.data import mnist_tensors
from helpers.distributed import ray_serving
from helpers.distributed.load import run_load
from helpers.serving.settings import ServingSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per load run")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent client connections")
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    images, _ = mnist_tensors(False)
    payload = {"pixels": (images[0].float() / 255).tolist()}

    with tempfile.TemporaryDirectory() as folder:
        registry = Path(folder) / "registry"
        ray_serving.prepare_registry(registry)
        settings = ServingSettings(registry_dir=registry, bootstrap=False)
        with ray_serving.serve_session(num_cpus=2) as url:
            started = time.perf_counter()
            ray_serving.deploy(settings, Path(folder) / "settings.json", num_replicas=args.replicas)
            print(f"deploy {args.replicas} replicas: {time.perf_counter() - started:.1f} s")
            endpoint = f"{url}/v1/predict"
            run_load(endpoint, payload, requests=20, concurrency=2)  # Warm-up.

            steady = run_load(endpoint, payload, requests=args.requests, concurrency=args.concurrency)
            outcome = {}
            thread = threading.Thread(target=lambda: outcome.setdefault("report", run_load(
                endpoint, payload, requests=args.requests, concurrency=args.concurrency, deadline_s=120, id_prefix="kill")))
            thread.start()
            time.sleep(0.5)
            ray_serving.kill_replica(ray_serving.replica_actor_names()[0])
            thread.join()
            recovery_s = ray_serving.wait_for_replicas(args.replicas)
            killed = outcome["report"]

    print(f"\n{'run':<13} {'requests':>8} {'attempts':>8} {'ok':>5} {'retried':>7} {'failed':>6} "
          f"{'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'req/s':>6}")
    for name, report in (("steady", steady), ("replica kill", killed)):
        p = report.percentiles()
        print(f"{name:<13} {report.requests:>8d} {report.attempts:>8d} {report.succeeded:>5d} {report.retried:>7d} "
              f"{report.failed:>6d} {p['p50']:>7.1f} {p['p90']:>7.1f} {p['p99']:>7.1f} "
              f"{report.requests / report.seconds:>6.0f}")
    print(f"replicas back to {args.replicas} {recovery_s:.1f} s after the kill load ended")


if __name__ == "__main__":
    main()
