"""Measure the distributed-training figures of the book in one run.

Prints, side by side:

* DDP against local SGD: test accuracy and all-reduce volume per rank;
* restart recovery: a rank killed mid-run, torchrun --max-restarts, and the
  accuracy gap to an uninterrupted run;
* per-rank memory of DDP, ZeRO-1 and FSDP;
* one epoch with 1 process (1 and 2 threads) against 2 processes.

    python benchmarks/distributed_training.py [--n-train 60000 --epochs 3]

On a machine with at least 2 GPUs the workers use NCCL, else gloo on the CPU.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from helpers.data import fetch_mnist
from helpers.distributed.launch import run_workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=8192, help="training samples")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--kill-at-step", type=int, default=90, help="global step at which rank 1 is killed")
    args = parser.parse_args()
    fetch_mnist()
    common = ["--n-train", str(args.n_train), "--epochs", str(args.epochs)]
    cores = os.cpu_count() or 1

    print("== DDP vs local SGD (2 processes) ==")
    rows = run_workers("local_sgd", [*common, "--periods", "4", "16", "64"]).results["rows"]
    print(f"{'method':<16} {'accuracy':>8} {'all-reduce calls':>16} {'MiB per rank':>12} {'seconds':>8}")
    for row in rows:
        print(f"{row['name']:<16} {row['test_accuracy']:>8.4f} {row['allreduce_calls']:>16d} "
              f"{row['allreduce_mb_per_rank']:>12.1f} {row['seconds']:>8.2f}")

    print("\n== restart recovery (2 processes, --max-restarts=1) ==")
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        clean = run_workers("ddp", [*common, "--checkpoint", str(Path(folder) / "clean.pt")]).results
        clean_s = time.perf_counter() - started
        started = time.perf_counter()
        killed = run_workers(
            "ddp", [*common, "--checkpoint", str(Path(folder) / "killed.pt")],
            max_restarts=1, env={"DIST_KILL_AT_STEP": str(args.kill_at_step)},
        ).results
        killed_s = time.perf_counter() - started
    print(f"{'run':<14} {'accuracy':>8} {'restarts':>8} {'resumed at':>10} {'wall s':>7}  parameter hash")
    print(f"{'uninterrupted':<14} {clean['test_accuracy']:>8.4f} {0:>8d} {'-':>10} {clean_s:>7.1f}  {clean['parameter_hashes'][0]}")
    print(f"{'killed':<14} {killed['test_accuracy']:>8.4f} {killed['restart_count']:>8d} "
          f"{killed['resumed_from_step']:>10d} {killed_s:>7.1f}  {killed['parameter_hashes'][0]}")
    print(f"accuracy gap: {abs(killed['test_accuracy'] - clean['test_accuracy']):.4f}")

    print("\n== per-rank memory, MiB (params / grads / optimizer state) ==")
    for row in run_workers("sharding", common[:2]).results["rows"]:
        ranks = "  ".join(f"{m['params_mb']:.2f}/{m['grads_mb']:.2f}/{m['optimizer_mb']:.2f}" for m in row["per_rank"])
        print(f"{row['strategy']:<7} {ranks}  accuracy {row['test_accuracy']:.4f}")

    print("\n== one epoch: processes x threads ==")
    tuning = ["--n-train", str(args.n_train), "--batch-sizes", "32", "128", "512", "--bucket-caps", "1", "25"]
    layouts = [(1, 1), (1, cores), (2, max(1, cores // 2))]
    print(f"{'processes':>9} {'threads':>7} {'batch':>5} {'bucket MiB':>10} {'s/epoch':>8} {'samples/s':>10}")
    for nproc, threads in layouts:
        for row in run_workers("tuning", tuning, nproc=nproc, threads_per_process=threads).results["rows"]:
            bucket = "-" if row["bucket_cap_mb"] is None else f"{row['bucket_cap_mb']:g}"
            print(f"{nproc:>9d} {threads:>7d} {row['batch_size']:>5d} {bucket:>10} "
                  f"{row['epoch_seconds']:>8.2f} {row['samples_per_s']:>10,.0f}")


if __name__ == "__main__":
    main()
