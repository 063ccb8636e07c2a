"""DDP training worker: sharded data, synchronised parameters, checkpoints, faults, traces.

Run with torchrun, for example::

    python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        -m helpers.distributed.ddp --epochs 2 --out results.json

Rank 0 writes one JSON document (``--out``) with the data shards, the
parameter hash of every rank, the loss per epoch and the test accuracy.

Fault injection: ``--kill-at-step S`` (or the environment variable
``DIST_KILL_AT_STEP``) makes rank ``--kill-rank`` send itself SIGKILL at
global step S, on the first attempt only. Under ``--max-restarts`` torchrun
restarts the whole group, and every rank resumes from the checkpoint that
rank 0 wrote atomically every ``--checkpoint-every`` steps.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from ..models import MLP
from ..training import load_checkpoint, save_checkpoint
from .runtime import (
    WorkerContext,
    accuracy,
    gather_objects,
    mnist_subset,
    parameter_hash,
    positive_float,
    process_group,
    step_seed,
    write_results,
)

KILL_ENV = "DIST_KILL_AT_STEP"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=8192, help="training samples taken from the start of MNIST")
    parser.add_argument("--n-test", type=int, default=10_000, help="test samples used for the final accuracy")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="samples per rank per step")
    parser.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bucket-cap-mb", type=positive_float, default=25.0, help="DDP gradient bucket size in MiB")
    parser.add_argument("--checkpoint", type=Path, default=None, help="checkpoint file shared by all ranks")
    parser.add_argument("--checkpoint-every", type=int, default=20, help="steps between checkpoints")
    parser.add_argument("--kill-at-step", type=int, default=None, help=f"global step at which to kill a rank (or ${KILL_ENV})")
    parser.add_argument("--kill-rank", type=int, default=1, help="rank that kills itself, in 0..WORLD_SIZE-1")
    parser.add_argument("--profile-dir", type=Path, default=None, help="write one Chrome trace per rank here")
    parser.add_argument("--profile-steps", type=int, default=5, help="steps recorded by the profiler")
    parser.add_argument("--out", type=Path, default=None, help="JSON results written by rank 0")
    args = parser.parse_args(argv)
    if args.kill_at_step is None and os.environ.get(KILL_ENV):
        try:
            args.kill_at_step = int(os.environ[KILL_ENV])
        except ValueError:
            parser.error(f"${KILL_ENV} must be an integer step, got {os.environ[KILL_ENV]!r}")
    for name in ("epochs", "batch_size", "checkpoint_every", "profile_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.kill_at_step is not None:
        check_fault_injection(parser, args)
    return args


def check_fault_injection(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject a kill step or kill rank at which the fault would never happen.

    The rank is checked against ``WORLD_SIZE``, which torchrun sets in every
    worker. Outside torchrun only the lower bound can be checked.
    """
    if args.kill_at_step < 0:
        parser.error(f"--kill-at-step (or ${KILL_ENV}) must be 0 or more, got {args.kill_at_step}")
    if args.kill_rank < 0:
        parser.error(f"--kill-rank must be 0 or more, got {args.kill_rank}")
    world_size = os.environ.get("WORLD_SIZE", "")
    if world_size.isdigit() and args.kill_rank >= int(world_size):
        parser.error(
            f"--kill-rank {args.kill_rank} is outside the world size {world_size}. "
            f"Pass a rank in 0..{int(world_size) - 1}"
        )


def shard_report(sampler: DistributedSampler, n_train: int) -> dict:
    """Return each rank's epoch-0 shard size and whether the shards are disjoint and cover the data."""
    sampler.set_epoch(0)
    shards = gather_objects(list(iter(sampler)))
    sets = [set(shard) for shard in shards]
    union = set().union(*sets)
    disjoint = sum(len(s) for s in sets) == len(union)
    return {
        "sizes": [len(shard) for shard in shards],
        "first_indices": [shard[:5] for shard in shards],
        "disjoint": disjoint,
        "covers": union == set(range(n_train)),
    }


def make_profiler(args: argparse.Namespace, ctx: WorkerContext):
    """Return a torch.profiler context that exports ``rank<N>.json``, or a no-op context."""
    if args.profile_dir is None or ctx.restart_count > 0:
        return nullcontext()
    args.profile_dir.mkdir(parents=True, exist_ok=True)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if ctx.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    trace_path = args.profile_dir / f"rank{ctx.rank}.json"
    return torch.profiler.profile(
        activities=activities,
        schedule=torch.profiler.schedule(wait=1, warmup=1, active=args.profile_steps, repeat=1),
        on_trace_ready=lambda prof: prof.export_chrome_trace(str(trace_path)),
    )


def kill_self(ctx: WorkerContext, step: int) -> None:
    print(f"[rank {ctx.rank}] fault injection: SIGKILL at step {step}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def train(args: argparse.Namespace, ctx: WorkerContext) -> dict:
    train_x, train_y, test_x, test_y = mnist_subset(args.n_train, args.n_test)
    dataset = TensorDataset(train_x, train_y)
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=args.seed)
    shards = shard_report(sampler, args.n_train)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler)

    torch.manual_seed(args.seed)
    model = MLP().to(ctx.device)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    ddp_model = DistributedDataParallel(model, device_ids=device_ids, bucket_cap_mb=args.bucket_cap_mb)
    optimizer = torch.optim.Adam(ddp_model.parameters(), lr=args.lr)

    step = 0
    if args.checkpoint is not None and args.checkpoint.exists():
        state = load_checkpoint(args.checkpoint, map_location=ctx.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    resumed_from = step
    if ctx.is_main and resumed_from:
        print(f"attempt {ctx.restart_count}: resumed from checkpoint at step {resumed_from}", flush=True)

    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * args.epochs
    epoch_losses, epoch_seconds, step_seconds = [], [], []
    with make_profiler(args, ctx) as profiler:
        for epoch in range(step // steps_per_epoch, args.epochs):
            sampler.set_epoch(epoch)
            started = time.perf_counter()
            loss_sum = torch.zeros(2, device=ctx.device)
            for index, (images, labels) in enumerate(loader):
                if epoch * steps_per_epoch + index < step:
                    continue  # Finished before the checkpoint this run resumed from.
                if step == args.kill_at_step and ctx.rank == args.kill_rank and ctx.restart_count == 0:
                    kill_self(ctx, step)
                step_started = time.perf_counter()
                torch.manual_seed(step_seed(args.seed, ctx.rank, step))
                images, labels = images.to(ctx.device), labels.to(ctx.device)
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(ddp_model(images), labels)
                loss.backward()
                optimizer.step()
                step += 1
                loss_sum += torch.stack([loss.detach() * len(labels), torch.tensor(float(len(labels)), device=ctx.device)])
                step_seconds.append(time.perf_counter() - step_started)
                if profiler is not None:
                    profiler.step()
                if args.checkpoint is not None and ctx.is_main and step % args.checkpoint_every == 0:
                    save_checkpoint(args.checkpoint, {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()})
            torch.distributed.all_reduce(loss_sum)
            epoch_losses.append(loss_sum[0].item() / loss_sum[1].item())
            epoch_seconds.append(time.perf_counter() - started)
            if ctx.is_main:
                print(f"epoch {epoch + 1}/{args.epochs}  loss {epoch_losses[-1]:.4f}  {epoch_seconds[-1]:.2f} s", flush=True)

    hashes = gather_objects(parameter_hash(model))
    return {
        "backend": ctx.backend,
        "device": ctx.device.type,
        "world_size": ctx.world_size,
        "restart_count": ctx.restart_count,
        "resumed_from_step": resumed_from,
        "steps": step,
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "global_batch_size": args.batch_size * ctx.world_size,
        "shards": shards,
        "parameter_hashes": hashes,
        "hashes_equal": len(set(hashes)) == 1,
        "epoch_losses": epoch_losses,
        "epoch_seconds": epoch_seconds,
        "median_step_ms": 1000 * sorted(step_seconds)[len(step_seconds) // 2] if step_seconds else None,
        "test_accuracy": accuracy(model, test_x, test_y),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with process_group() as ctx:
        results = train(args, ctx)
        if ctx.is_main:
            write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
