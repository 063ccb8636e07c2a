"""Dynamic batching against one-request-per-forward, measured in one run.

Two servers run side by side on loopback with the same model (the book's
CNN): one with dynamic batching, one that runs a forward pass per request.
For each concurrency the two are measured in alternating rounds, so load
from other processes affects both alike, and the script prints throughput,
p50/p99 latency and the throughput ratio.

    python benchmarks/serving_batching.py [--rounds 3] [--requests 600]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from helpers.data import mnist_tensors
from helpers.serving import loadgen
from helpers.serving.launch import start_server
from helpers.serving.settings import ServingSettings


def measure(url: str, body: bytes, concurrency: int, requests: int) -> loadgen.LoadResult:
    request = loadgen.build_request(url, "/v1/predict", body)
    return loadgen.run_load(url, request, concurrency, requests, max_seconds=120)


def merge(results: list[loadgen.LoadResult]) -> loadgen.LoadResult:
    merged = loadgen.LoadResult(concurrency=results[0].concurrency, seconds=sum(r.seconds for r in results))
    for result in results:
        merged.latencies_ms += result.latencies_ms
        merged.errors += result.errors
        for status, count in result.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + count
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per concurrency")
    parser.add_argument("--requests", type=int, default=600, help="requests per round at concurrency 8 and 64")
    parser.add_argument("--model", default="cnn", choices=["mlp", "cnn"], help="model in production")
    args = parser.parse_args()

    images, _ = mnist_tensors(train=False)
    body = loadgen.json_body({"pixels": (images[0].float() / 255).round(decimals=3).tolist()})
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        paths = {}
        for batching in (True, False):
            settings = ServingSettings(
                registry_dir=folder / "registry", batching=batching, bootstrap_model=args.model
            )
            paths[batching] = settings.to_json(folder / f"settings-{batching}.json")
        with start_server(settings_path=paths[True]) as batched, start_server(settings_path=paths[False]) as single:
            print(f"model {args.model}; {args.rounds} alternating rounds per concurrency")
            print(f"{'concurrency':>11} {'mode':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>6}")
            for concurrency in (1, 8, 64):
                requests = args.requests if concurrency > 1 else args.requests // 4
                runs = {True: [], False: []}
                ratios = []
                for _ in range(args.rounds):
                    for batching, server in ((True, batched), (False, single)):
                        runs[batching].append(measure(server.url, body, concurrency, requests))
                    ratios.append(runs[True][-1].throughput / max(runs[False][-1].throughput, 1e-9))
                for batching in (True, False):
                    result = merge(runs[batching]).summary()
                    mode = "batched" if batching else "single"
                    print(f"{concurrency:>11} {mode:>8} {result['throughput_rps']:>8.1f} "
                          f"{result['p50_ms']:>8.2f} {result['p99_ms']:>8.2f} {result['failed']:>6}")
                print(f"{concurrency:>11} {'ratio':>8} {statistics.median(ratios):>8.2f}  "
                      f"(median of per-round ratios {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
