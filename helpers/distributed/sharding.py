"""Worker measuring per-rank memory of parameters, gradients and optimizer state.

Three ways to hold the training state of the MLP on every rank:

* DDP: every rank stores all of it.
* ZeRO-1 (``ZeroRedundancyOptimizer``): the Adam state is split across ranks
  by whole parameters.
* FSDP (``fully_shard``, the ZeRO-3 idea): parameters, gradients and Adam
  state are split element-wise; full layers exist only briefly during the
  forward and backward pass.

Memory is counted as the bytes of the tensors each rank keeps between steps,
measured after a backward pass and an optimizer step.

    python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        -m helpers.distributed.sharding --out results.json
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch.distributed.fsdp import fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from ..models import MLP
from .runtime import WorkerContext, accuracy, gather_objects, mnist_subset, positive_float, process_group, step_seed, write_results

STRATEGIES = ("DDP", "ZeRO-1", "FSDP")


def local_bytes(tensor: torch.Tensor | None) -> int:
    """Return the bytes this rank stores for ``tensor`` (its shard when it is a DTensor)."""
    if tensor is None:
        return 0
    if isinstance(tensor, DTensor):
        tensor = tensor.to_local()
    return tensor.numel() * tensor.element_size()


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    if isinstance(optimizer, ZeroRedundancyOptimizer):
        optimizer = optimizer.optim  # The local optimizer holds only this rank's partition.
    return sum(
        local_bytes(value)
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    )


def build(strategy: str, ctx: WorkerContext, lr: float):
    """Return (module to call, optimizer) for ``strategy``."""
    model = MLP().to(ctx.device)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    if strategy == "DDP":
        wrapped = DistributedDataParallel(model, device_ids=device_ids)
        return wrapped, torch.optim.Adam(wrapped.parameters(), lr=lr)
    if strategy == "ZeRO-1":
        wrapped = DistributedDataParallel(model, device_ids=device_ids)
        return wrapped, ZeroRedundancyOptimizer(wrapped.parameters(), optimizer_class=torch.optim.Adam, lr=lr)
    if strategy == "FSDP":
        for layer in model.hidden:
            fully_shard(layer)
        fully_shard(model.output)
        fully_shard(model)
        return model, torch.optim.Adam(model.parameters(), lr=lr)
    raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")


def run_strategy(strategy: str, args, ctx: WorkerContext, tensors) -> dict:
    train_x, train_y, test_x, test_y = tensors
    dataset = TensorDataset(train_x, train_y)
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler)
    torch.manual_seed(args.seed)
    model, optimizer = build(strategy, ctx, args.lr)

    memory = {}
    started = time.perf_counter()
    step = 0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for images, labels in loader:
            torch.manual_seed(step_seed(args.seed, ctx.rank, step))
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images.to(ctx.device)), labels.to(ctx.device)).backward()
            optimizer.step()
            step += 1
            if not memory:
                parameters = list(model.parameters())
                memory = {
                    "params_mb": sum(local_bytes(p) for p in parameters) / 2**20,
                    "grads_mb": sum(local_bytes(p.grad) for p in parameters) / 2**20,
                    "optimizer_mb": optimizer_state_bytes(optimizer) / 2**20,
                }
    seconds = time.perf_counter() - started

    if strategy == "FSDP":
        # Evaluate with full parameters gathered on every rank.
        model.unshard()
    test_accuracy = accuracy(model, test_x, test_y)
    if strategy == "FSDP":
        model.reshard()
    per_rank = gather_objects(memory)
    return {
        "strategy": strategy,
        "per_rank": per_rank,
        "total_mb": sum(sum(rank.values()) for rank in per_rank) / len(per_rank),
        "seconds": seconds,
        "test_accuracy": test_accuracy,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=8192)
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64, help="samples per rank per step")
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--out", default=None, help="JSON results written by rank 0")
    args = parser.parse_args(argv)

    with process_group() as ctx:
        tensors = mnist_subset(args.n_train, args.n_test)
        rows = [run_strategy(strategy, args, ctx, tensors) for strategy in args.strategies]
        if ctx.is_main:
            for row in rows:
                ranks = "  ".join(
                    f"rank{rank}: {m['params_mb']:.2f}/{m['grads_mb']:.2f}/{m['optimizer_mb']:.2f}"
                    for rank, m in enumerate(row["per_rank"])
                )
                print(f"{row['strategy']:<7} MiB params/grads/optimizer  {ranks}  acc {row['test_accuracy']:.4f}", flush=True)
            write_results(args.out, {"world_size": ctx.world_size, "backend": ctx.backend, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
