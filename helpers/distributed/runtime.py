"""Process-group setup and shared utilities for the torchrun worker modules."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from .. import data


@dataclass(frozen=True)
class WorkerContext:
    """The rank, group size, device and restart attempt of one worker process."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str
    restart_count: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def choose_backend(world_size: int) -> tuple[str, torch.device, int]:
    """Return (backend, device type, usable GPUs): NCCL when every rank gets its own GPU, else gloo.

    NCCL cannot run two ranks on one GPU, so a machine with fewer GPUs than
    ranks trains on the CPU with gloo.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int):
        raise TypeError(f"world_size must be an integer, got {world_size!r}")
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1 (the number of ranks), got {world_size}")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus >= world_size:
        return "nccl", torch.device("cuda"), gpus
    return "gloo", torch.device("cpu"), gpus


@contextmanager
def process_group() -> Iterator[WorkerContext]:
    """Join the process group that torchrun describes in the environment, and leave it on exit."""
    missing = [name for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR") if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"environment variables {missing} are not set; start this module with "
            "`python -m torch.distributed.run --nproc_per_node=N -m <module>` "
            "or helpers.distributed.launch.run_workers"
        )
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    backend, device, _ = choose_backend(world_size)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    restart_count = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    store, rank, world_size = next(dist.rendezvous("env://"))
    # A fresh key prefix per restart attempt: without it a restarted rank
    # could read the gloo address that a killed rank published before the
    # restart and fail with "connection refused".
    store = dist.PrefixStore(f"attempt{restart_count}/", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size)
    context = WorkerContext(
        rank=rank,
        local_rank=local_rank,
        world_size=world_size,
        device=device,
        backend=backend,
        restart_count=restart_count,
    )
    try:
        yield context
    finally:
        dist.destroy_process_group()


def mnist_subset(n_train: int, n_test: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the first ``n_train`` training and ``n_test`` test samples, normalised, on the CPU."""
    if n_train < 1 or n_train > 60_000:
        raise ValueError(f"n_train must be in 1..60000, got {n_train}")
    if n_test < 1 or n_test > 10_000:
        raise ValueError(f"n_test must be in 1..10000, got {n_test}")
    if dist.is_initialized():
        # One rank fetches and extracts the archives; the others wait, so no
        # two processes write the same files at once.
        if dist.get_rank() == 0:
            data.fetch_mnist()
        dist.barrier()
    train_images, train_labels = data.mnist_tensors(True)
    test_images, test_labels = data.mnist_tensors(False)
    return (
        data.normalize_images(train_images[:n_train]),
        train_labels[:n_train],
        data.normalize_images(test_images[:n_test]),
        test_labels[:n_test],
    )


def parameter_hash(model: nn.Module) -> str:
    """Return the SHA-256 of all parameters' bytes in ``state_dict`` order (first 16 hex digits)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def gather_objects(value) -> list:
    """Return ``value`` from every rank, in rank order, on every rank."""
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 2000) -> float:
    """Return the accuracy of ``model`` on tensors, evaluated in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = model(images[start:start + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == labels[start:start + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(labels)


def positive_float(text: str) -> float:
    """Parse a command-line value that must be a finite number above zero (an argparse ``type``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}. Pass a positive number such as 0.001") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above zero, got {text!r}")
    return value


def step_seed(seed: int, rank: int, step: int) -> int:
    """Return the RNG seed of one training step on one rank.

    Seeding every step from (seed, rank, step) makes dropout masks independent
    of how the run got there, so a run resumed from a checkpoint repeats the
    uninterrupted run bit for bit on the same machine.
    """
    return seed * 1_000_003 + rank * 7_919 + step


def write_results(path: str | Path | None, results: dict) -> None:
    """Write ``results`` as JSON to ``path`` atomically (call on rank 0 only)."""
    if path is None:
        print(json.dumps(results, indent=1))
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, path)
