"""Worker comparing DDP's per-step all-reduce with local SGD (parameter averaging every K steps).

Every configuration starts from the same initial weights and sees the same
data shards. Communication is counted as the all-reduce payload per rank:
the bytes of the tensors each rank hands to all-reduce. A ring all-reduce
sends about 2 (n - 1) / n times that over the network.

    python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        -m helpers.distributed.local_sgd --periods 4 16 64 --out results.json
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from ..models import MLP
from .runtime import WorkerContext, accuracy, gather_objects, mnist_subset, parameter_hash, positive_float, process_group, step_seed, write_results


class CommCounter:
    """All-reduce calls and payload bytes handed to all-reduce by this rank."""

    def __init__(self):
        self.calls = 0
        self.bytes = 0

    def add(self, tensor: torch.Tensor) -> None:
        self.calls += 1
        self.bytes += tensor.numel() * tensor.element_size()


def counting_allreduce_hook(counter: CommCounter, bucket):
    """DDP communication hook: count the bucket, then run DDP's default averaging all-reduce."""
    counter.add(bucket.buffer())
    return default_hooks.allreduce_hook(None, bucket)


def average_parameters(model: torch.nn.Module, counter: CommCounter) -> None:
    """Replace every rank's parameters with their mean over all ranks (one all-reduce)."""
    with torch.no_grad():
        flat = parameters_to_vector(model.parameters())
        counter.add(flat)
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        vector_to_parameters(flat, model.parameters())


def run_config(name: str, period: int | None, args, ctx: WorkerContext, tensors) -> dict:
    """Train one configuration: ``period`` None is DDP, an integer K is local SGD averaging every K steps."""
    train_x, train_y, test_x, test_y = tensors
    dataset = TensorDataset(train_x, train_y)
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler)

    torch.manual_seed(args.seed)
    model = MLP().to(ctx.device)
    counter = CommCounter()
    if period is None:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        trained = DistributedDataParallel(model, device_ids=device_ids)
        trained.register_comm_hook(counter, counting_allreduce_hook)
    else:
        trained = model
    optimizer = torch.optim.Adam(trained.parameters(), lr=args.lr)

    dist.barrier()
    started = time.perf_counter()
    step = 0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for images, labels in loader:
            torch.manual_seed(step_seed(args.seed, ctx.rank, step))
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(trained(images.to(ctx.device)), labels.to(ctx.device))
            loss.backward()
            optimizer.step()
            step += 1
            if period is not None and step % period == 0:
                average_parameters(model, counter)
    if period is not None and step % period != 0:
        average_parameters(model, counter)  # The final model is the consensus of all ranks.
    seconds = time.perf_counter() - started

    hashes = gather_objects(parameter_hash(model))
    return {
        "name": name,
        "period": period,
        "steps": step,
        "allreduce_calls": counter.calls,
        "allreduce_mb_per_rank": counter.bytes / 2**20,
        "seconds": seconds,
        "test_accuracy": accuracy(model, test_x, test_y),
        "hashes_equal": len(set(hashes)) == 1,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=8192)
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="samples per rank per step")
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--periods", type=int, nargs="+", default=[4, 16, 64], help="local SGD averaging periods K in steps")
    parser.add_argument("--out", default=None, help="JSON results written by rank 0")
    args = parser.parse_args(argv)
    if any(period < 1 for period in args.periods):
        parser.error(f"--periods must be positive step counts, got {args.periods}")

    with process_group() as ctx:
        tensors = mnist_subset(args.n_train, args.n_test)
        rows = [run_config("DDP", None, args, ctx, tensors)]
        rows += [run_config(f"local SGD K={period}", period, args, ctx, tensors) for period in args.periods]
        if ctx.is_main:
            for row in rows:
                print(f"{row['name']:<16} acc {row['test_accuracy']:.4f}  all-reduce {row['allreduce_calls']:>4} calls "
                      f"{row['allreduce_mb_per_rank']:8.1f} MiB  {row['seconds']:.2f} s", flush=True)
            write_results(args.out, {"world_size": ctx.world_size, "backend": ctx.backend, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
