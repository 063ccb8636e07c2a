"""Worker timing one training epoch for several batch sizes and DDP bucket sizes.

Run it once with one process and once with two to compare; with one process
the model trains without DDP, as a single-process run would.

    python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        -m helpers.distributed.tuning --batch-sizes 32 128 512 --out results.json
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from ..models import MLP
from .runtime import WorkerContext, mnist_subset, positive_float, process_group, write_results

WARMUP_STEPS = 3


def time_epoch(batch_size: int, bucket_cap_mb: float, args, ctx: WorkerContext, dataset) -> dict:
    """Return the wall time of one epoch over ``dataset`` split across the ranks."""
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=args.seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    torch.manual_seed(args.seed)
    model = MLP().to(ctx.device)
    if ctx.world_size > 1:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=device_ids, bucket_cap_mb=bucket_cap_mb)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    def train_step(images, labels):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images.to(ctx.device)), labels.to(ctx.device)).backward()
        optimizer.step()

    batches = list(loader)
    for images, labels in batches[:WARMUP_STEPS]:
        train_step(images, labels)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    started = time.perf_counter()
    for images, labels in batches:
        train_step(images, labels)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    seconds = time.perf_counter() - started
    return {
        "processes": ctx.world_size,
        "batch_size": batch_size,
        "bucket_cap_mb": bucket_cap_mb if ctx.world_size > 1 else None,
        "steps": len(batches),
        "epoch_seconds": seconds,
        "samples_per_s": len(dataset) / seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=8192)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 512], help="samples per rank per step")
    parser.add_argument("--bucket-caps", type=positive_float, nargs="+", default=[25.0], help="DDP bucket sizes in MiB: the last is used for every batch size, the others only with the first batch size")
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSON results written by rank 0")
    args = parser.parse_args(argv)
    if any(size < 1 for size in args.batch_sizes):
        parser.error(f"--batch-sizes must be positive, got {args.batch_sizes}")

    with process_group() as ctx:
        train_x, train_y, _, _ = mnist_subset(args.n_train, 1)
        dataset = TensorDataset(train_x, train_y)
        default_cap = args.bucket_caps[-1]
        rows = [time_epoch(size, default_cap, args, ctx, dataset) for size in args.batch_sizes]
        if ctx.world_size > 1:
            rows += [time_epoch(args.batch_sizes[0], cap, args, ctx, dataset) for cap in args.bucket_caps[:-1]]
        if ctx.is_main:
            for row in rows:
                print(f"processes {row['processes']}  batch {row['batch_size']:>4}  bucket {row['bucket_cap_mb']}  "
                      f"{row['epoch_seconds']:.2f} s/epoch  {row['samples_per_s']:,.0f} samples/s", flush=True)
            write_results(args.out, {"world_size": ctx.world_size, "backend": ctx.backend, "device": ctx.device.type, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
