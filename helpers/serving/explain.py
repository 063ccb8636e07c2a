"""Attribution maps with Captum, and a deletion test of their quality."""

from __future__ import annotations

import numbers

import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from .inputs import normalize

METHODS = ("saliency", "integrated_gradients")


def attribute(
    model: nn.Module,
    pixels: torch.Tensor,
    target: torch.Tensor | int,
    method: str = "integrated_gradients",
    steps: int = 32,
) -> torch.Tensor:
    """Return attributions [N, 1, 28, 28] for pixels in [0, 1] and class ``target``.

    Saliency is the absolute input gradient. Integrated Gradients integrates
    from a black image (all pixels 0) to the input in ``steps`` steps, so its
    attributions sum to roughly the logit difference between the two.
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; expected one of {list(METHODS)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    device = next(model.parameters()).device
    inputs = normalize(pixels).to(device).requires_grad_(True)
    # NOTE: this extra forward pass on one image finds the class count. It
    # would update the running statistics of a BatchNorm model left in train mode.
    with torch.no_grad():
        classes = model(inputs[:1]).shape[1]
    _check_target(target, classes)
    if isinstance(target, torch.Tensor):
        target = target.to(device)
    if method == "saliency":
        result = Saliency(model).attribute(inputs, target=target, abs=True)
    else:
        baseline = normalize(torch.zeros_like(pixels)).to(device)
        result = IntegratedGradients(model).attribute(
            # Captum needs at least one full set of examples per internal batch;
            # 8 steps at a time bounds memory for large batches.
            inputs, baselines=baseline, target=target, n_steps=steps, internal_batch_size=len(pixels) * min(steps, 8)
        )
    return result.detach().cpu()


def _check_target(target: torch.Tensor | int, classes: int) -> None:
    """Reject a class index outside [0, classes), which Captum would wrap (-1) or fail on."""
    if isinstance(target, torch.Tensor):
        if target.dtype.is_floating_point or target.dtype == torch.bool:
            raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
        bad = target[(target < 0) | (target >= classes)]
        if bad.numel():
            raise ValueError(f"target class indices must be in [0, {classes - 1}], got {bad.tolist()}")
        return
    if isinstance(target, bool) or not isinstance(target, numbers.Integral):
        raise TypeError(f"target must be an int or an integer tensor, got {target!r}")
    if not 0 <= target < classes:
        raise ValueError(f"target must be a class index in [0, {classes - 1}], got {target}")


def delete_top_pixels(pixels: torch.Tensor, scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Return a copy of ``pixels`` with the ``fraction`` highest-scoring pixels set to 0.

    ``scores`` of the same shape rank the pixels of each image; pass random
    scores to delete random pixels.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")
    flat_pixels = pixels.reshape(pixels.shape[0], -1).clone()
    flat_scores = scores.reshape(scores.shape[0], -1)
    count = int(round(fraction * flat_pixels.shape[1]))
    if count:
        top = flat_scores.topk(count, dim=1).indices
        flat_pixels.scatter_(1, top, 0.0)
    return flat_pixels.reshape(pixels.shape)
