"""Measure the memory and time of training steps, on CUDA and on CPU.

On CUDA the caching allocator counts every tensor byte, and
``torch.cuda.max_memory_allocated`` gives the peak directly.

A CPU has no such counter, so two measurements stand side by side:

* tensor accounting: the unique storages of parameters, gradients and
  optimizer state, plus the tensors autograd saves for backward (seen
  through ``torch.autograd.graph.saved_tensors_hooks``). Exact for what it
  counts, but it misses temporaries that live only inside one operation.
* peak resident set size (RSS) of the process during the steps, from
  ``VmHWM`` in ``/proc/self/status`` after resetting it through
  ``/proc/self/clear_refs`` (Linux only). It counts everything, including
  memory that the C allocator keeps after a tensor is freed, and so it is
  an upper bound that is noisier than the CUDA figure.
"""

from __future__ import annotations

import ctypes
import gc
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Return the bytes of the distinct storages behind ``tensors`` (views count once)."""
    seen = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[(tensor.device, storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Return the tensors an optimizer keeps per parameter (Adam's moments, for example)."""
    return [
        value
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor) and value.numel() > 1
    ]


class SavedTensorMeter:
    """Context manager that sums the bytes autograd saves for backward.

    Storages are counted once even when several operations save them, and
    parameters are left out (autograd saves weights by reference, not by
    copy). NOTE: regions under ``torch.utils.checkpoint`` install their own
    hooks, so the tensors they keep are not seen here; measure those with
    ``measure_training_step`` instead.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self._excluded = {(t.device, t.untyped_storage().data_ptr()) for t in exclude}
        self._storages: dict = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = (tensor.device, storage.data_ptr())
        if key not in self._excluded:
            self._storages[key] = storage.nbytes()
        return tensor

    @staticmethod
    def _unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    @property
    def bytes(self) -> int:
        return sum(self._storages.values())

    def __enter__(self) -> "SavedTensorMeter":
        self._storages.clear()
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self._hooks.__exit__(*exc_info)


def rss_bytes() -> tuple[int, int] | None:
    """Return (current, peak) resident set size of this process in bytes, or None off Linux."""
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    if len(values) != 2:
        return None
    return values["VmRSS"], values["VmHWM"]


def reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux ``clear_refs`` value 5); return whether it worked."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def release_freed_memory() -> None:
    """Collect garbage and ask glibc to return freed heap pages, so RSS baselines are fair."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # Not glibc: freed memory may stay resident and inflate later deltas.


@dataclass
class StepMeasurement:
    """Memory (bytes) and time (seconds) of training steps on one device."""

    device: str
    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    peak_bytes: int | None
    peak_method: str
    seconds_per_step: float

    @property
    def accounted_bytes(self) -> int:
        """Sum of the tensor accounting: parameters, gradients, optimizer state, saved activations."""
        return self.parameter_bytes + self.gradient_bytes + self.optimizer_bytes + self.activation_bytes


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_training_step(
    build_model: Callable[[], nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 3,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    autocast_dtype: torch.dtype | None = None,
    lr: float = 1e-3,
) -> StepMeasurement:
    """Build a model, train it with Adam on one batch, and measure memory and step time.

    The model is built inside the measurement, so the peak includes its
    weights, gradients, Adam state, saved activations and temporaries, but
    not the batch (already allocated by the caller). One warm-up step
    creates the Adam state and is not timed. ``forward(model, images)``
    replaces ``model(images)``, for example to run it under activation
    checkpointing; ``autocast_dtype`` runs the forward under autocast.

    ``peak_method`` names what ``peak_bytes`` measures: "cuda_max_allocated", or on
    CPU "rss_peak" (peak RSS growth over the RSS before the model was
    built), or "unavailable" off Linux, where ``peak_bytes`` is None.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if len(images) != len(labels):
        raise ValueError(f"images and labels differ in length ({len(images)} vs {len(labels)})")
    device = images.device
    forward = forward if forward is not None else (lambda model, x: model(x))
    autocast = (
        (lambda: torch.autocast(device.type, dtype=autocast_dtype))
        if autocast_dtype is not None
        else nullcontext
    )

    release_freed_memory()
    if device.type == "cuda":
        # NOTE: CI has no GPU, so this branch runs only when a reader has one.
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        peak_method = "cuda_max_allocated"
    else:
        rss = rss_bytes()
        peak_method = "rss_peak" if rss is not None and reset_peak_rss() else "unavailable"
        baseline = rss[0] if rss is not None else 0

    model = build_model().to(device)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    params = list(model.parameters())
    meter = SavedTensorMeter(exclude=params)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with meter, autocast():
            loss = F.cross_entropy(forward(model, images).float(), labels)
        loss.backward()
        optimizer.step()

    step()
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    seconds = (time.perf_counter() - started) / steps

    if peak_method == "cuda_max_allocated":
        peak = torch.cuda.max_memory_allocated(device) - baseline
    elif peak_method == "rss_peak":
        peak = rss_bytes()[1] - baseline
    else:
        peak = None

    measurement = StepMeasurement(
        device=str(device),
        parameter_bytes=storage_bytes(params),
        gradient_bytes=storage_bytes(p.grad for p in params if p.grad is not None),
        optimizer_bytes=storage_bytes(optimizer_state_tensors(optimizer)),
        activation_bytes=meter.bytes,
        peak_bytes=peak,
        peak_method=peak_method,
        seconds_per_step=seconds,
    )
    del model, optimizer, params
    release_freed_memory()
    return measurement


def matmul_flops_per_second(device: torch.device | str = "cpu", size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Measure the FLOP/s of square matrix products on ``device``: the practical peak for dense layers."""
    for name, value in (("size", size), ("repeats", repeats)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}. Pass 1 or more")
    device = torch.device(device)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _synchronize(device)
    seconds = time.perf_counter() - started
    return 2 * size**3 * repeats / seconds
