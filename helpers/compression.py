"""Model compression: dynamic int8 quantisation and magnitude pruning, measured.

Dynamic quantisation stores ``nn.Linear`` weights as int8 and quantises the
activations on the fly. It runs on CPU only. Pruning zeroes the smallest
weights. A dense file of a pruned model is as large as before, so the size
that pruning saves shows up only after compression (gzip here) or in a sparse
format.
"""

from __future__ import annotations

import copy
import gzip
import io
import time
import warnings

import torch
from torch import nn
from torch.nn.utils import prune


def quantize_int8(model: nn.Module) -> nn.Module:
    """Return a copy of ``model`` with its ``nn.Linear`` layers dynamically quantised to int8 (CPU)."""
    model = copy.deepcopy(model).cpu().eval()
    with warnings.catch_warnings():
        # torch 2.14 warns on every call that quantized tensor dtypes and
        # torch.ao.quantization are deprecated in favour of torchao. The API
        # still works, and the warning would otherwise fill every notebook.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantiz.*deprecated", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def prune_global(model: nn.Module, amount: float) -> nn.Module:
    """Return a copy of ``model`` with the ``amount`` fraction of smallest weights set to zero.

    Global L1 (magnitude) pruning over the weights of every ``nn.Linear`` and
    ``nn.Conv2d``; biases are kept. The pruning masks are folded into the
    weights, so the result is an ordinary model with zeros in it.
    """
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be a fraction in [0, 1), got {amount!r}")
    model = copy.deepcopy(model).eval()
    targets = [
        (module, "weight") for module in model.modules() if isinstance(module, (nn.Linear, nn.Conv2d))
    ]
    if not targets:
        raise ValueError("model has no nn.Linear or nn.Conv2d layer to prune")
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    for module, name in targets:
        prune.remove(module, name)
    return model


def sparsity(model: nn.Module) -> float:
    """Return the fraction of weight entries (Linear and Conv2d) that are exactly zero."""
    total = zeros = 0
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            weight = module.weight
            total += weight.numel()
            zeros += (weight == 0).sum().item()
    return zeros / total if total else 0.0


def serialized_bytes(model: nn.Module) -> int:
    """Return the size in bytes of ``torch.save(model.state_dict())``."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def gzipped_bytes(model: nn.Module) -> int:
    """Return the size in bytes of the saved state dict after gzip (level 6)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return len(gzip.compress(buffer.getvalue(), compresslevel=6))


@torch.no_grad()
def latency_ms(model: nn.Module, example: torch.Tensor, repeats: int = 50, warmup: int = 5) -> float:
    """Return the median wall time in milliseconds of one forward pass on ``example`` (CPU)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats!r}")
    model.eval()
    for _ in range(warmup):
        model(example)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model(example)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return times[len(times) // 2]


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Return the accuracy of ``model`` on CPU tensors ``images``/``labels`` (integer class indices)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if len(images) == 0:
        raise ValueError("accuracy needs at least one image, got an empty tensor")
    if len(images) != len(labels):
        raise ValueError(f"images and labels differ in length ({len(images)} vs {len(labels)})")
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must be integer class indices, got {labels.dtype}; convert them with labels.long()")
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size])
        correct += (logits.argmax(1) == labels[start : start + batch_size]).sum().item()
    return correct / len(images)
