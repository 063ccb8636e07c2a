"""Device selection and seeding."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def pick_device(preferred: str | None = None) -> torch.device:
    """Return the best available device: CUDA, then MPS, then CPU.

    ``preferred`` ("cuda", "mps", "cpu" or None for automatic) forces one;
    asking for a device that is not available raises ``ValueError``.
    """
    if preferred in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")

    try:
        device = torch.device(preferred)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"unknown device {preferred!r}; use 'auto', 'cuda', 'cuda:N', 'mps' or 'cpu'"
        ) from error
    if device.type not in ("cuda", "mps", "cpu"):
        raise ValueError(f"unsupported device {preferred!r}; use 'auto', 'cuda', 'mps' or 'cpu'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {preferred!r} was requested but CUDA is not available; "
            "use 'auto' or 'cpu'"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"device {preferred!r} was requested but MPS is not available; "
            "use 'auto' or 'cpu'"
        )
    return device


def describe_device(device: torch.device | str) -> str:
    """Return a human-readable name of the device, e.g. the GPU model."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"{props.name} (CUDA {props.major}.{props.minor}, {props.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "Apple MPS"
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'s' if threads != 1 else ''})"


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch so that CPU runs repeat exactly.

    NOTE: runs repeat bit for bit only with the same thread count and
    hardware; on CUDA, exact repeats also need deterministic algorithms and
    ``CUBLAS_WORKSPACE_CONFIG`` set before CUDA starts.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
