"""A shifted "new scene" of MNIST, fine-tuning for it, and a promotion gate."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from helpers import data, training
from helpers.device import seed_everything


def thicken(pixels: torch.Tensor, size: int = 3) -> torch.Tensor:
    """Return [N, 1, 28, 28] pixels with strokes dilated by a ``size`` x ``size`` max filter."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd number, got {size}")
    return F.max_pool2d(pixels, size, stride=1, padding=size // 2)


def rotate(pixels: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Return [N, 1, H, W] images each rotated about its centre by its angle in degrees.

    Positive angles turn counter-clockwise; uncovered corners are 0.
    """
    angles = torch.as_tensor(angles)
    if angles.shape != (len(pixels),):
        raise ValueError(f"angles must hold one angle per image ({len(pixels)}), got shape {tuple(angles.shape)}")
    if not torch.isfinite(angles).all():
        raise ValueError("angles must be finite numbers of degrees; got NaN or infinity")
    radians = torch.deg2rad(angles.to(pixels.dtype))
    cos, sin = torch.cos(radians), torch.sin(radians)
    zero = torch.zeros_like(cos)
    # affine_grid maps output to input coordinates, so the matrix is the
    # inverse rotation; y points down in image coordinates.
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def new_scene(pixels: torch.Tensor, seed: int = 0, min_angle: float = 25.0, max_angle: float = 45.0) -> torch.Tensor:
    """Return thick-stroked digits rotated by a random +-[min_angle, max_angle] degrees.

    ``pixels`` are [N, 1, 28, 28] in [0, 1]; the result has the same scale.
    """
    if not (math.isfinite(min_angle) and math.isfinite(max_angle) and 0 <= min_angle <= max_angle):
        raise ValueError(
            f"need finite angles with 0 <= min_angle <= max_angle, got {min_angle!r} and {max_angle!r}"
        )
    generator = torch.Generator().manual_seed(seed)
    magnitude = min_angle + (max_angle - min_angle) * torch.rand(len(pixels), generator=generator)
    sign = torch.where(torch.rand(len(pixels), generator=generator) < 0.5, -1.0, 1.0)
    return rotate(thicken(pixels), sign * magnitude).clamp(0, 1)


def fine_tune(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 2,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
) -> nn.Module:
    """Return a fine-tuned copy of ``model``; ``model`` itself is left unchanged.

    ``inputs`` are normalised [N, 1, 28, 28] tensors. Mixing old-scene
    samples into them is what keeps the old accuracy.
    """
    seed_everything(seed)
    tuned = copy.deepcopy(model).train()
    device = next(tuned.parameters()).device
    inputs, labels = inputs.to(device), labels.to(device)
    loader = data.DeviceLoader(inputs, labels, batch_size=batch_size, shuffle=True, seed=seed)
    # fit() evaluates after every epoch; a small slice keeps that cheap, and
    # the real evaluation happens on held-out data afterwards.
    check = data.DeviceLoader(inputs[:512], labels[:512], batch_size=512)
    optimizer = torch.optim.Adam(tuned.parameters(), lr=lr)
    training.fit(tuned, loader, check, epochs, optimizer=optimizer, progress=False, log=None)
    return tuned.eval()


@dataclass(frozen=True)
class GateResult:
    """Outcome of ``promotion_gate``: ``passed`` and the reasons it failed."""

    passed: bool
    reasons: tuple[str, ...]


def promotion_gate(
    old_before: float, old_after: float, new_after: float, max_old_drop: float = 0.01, min_new: float = 0.85
) -> GateResult:
    """Pass a candidate only if it keeps the old scene and reaches ``min_new`` on the new one.

    Accuracies are fractions in [0, 1]. The old-scene accuracy may drop by
    at most ``max_old_drop`` from the production model's.
    """
    reasons = []
    if old_after < old_before - max_old_drop:
        reasons.append(f"old-scene accuracy fell from {old_before:.4f} to {old_after:.4f}, more than {max_old_drop}")
    if new_after < min_new:
        reasons.append(f"new-scene accuracy {new_after:.4f} is below {min_new}")
    return GateResult(not reasons, tuple(reasons))
