"""Batched random shifts and rotations of images, applied on the device.

``random_affine`` draws one rotation and one shift per image and applies all
of them in a single ``grid_sample`` call, so that augmentation costs one
kernel per batch instead of a Python loop per image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import data

# Background value of normalised MNIST images (a black pixel).
NORMALISED_BLACK = (0.0 - data.MNIST_MEAN) / data.MNIST_STD


def random_affine(
    images: torch.Tensor,
    max_degrees: float = 15.0,
    max_shift_px: float = 3.0,
    generator: torch.Generator | None = None,
    fill: float = NORMALISED_BLACK,
) -> torch.Tensor:
    """Return ``images`` ``[N, 1, H, W]`` each rotated and shifted by its own random amount.

    Angles are uniform in ``[-max_degrees, max_degrees]`` and shifts uniform in
    ``[-max_shift_px, max_shift_px]`` pixels on each axis. Pixels that come in
    from outside the image take the value ``fill``.
    """
    if images.dim() != 4:
        raise ValueError(f"expected images shaped [N, C, H, W], got {list(images.shape)}")
    for name, value in (("max_degrees", max_degrees), ("max_shift_px", max_shift_px), ("fill", fill)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}; a NaN or infinite value makes every image NaN")
    count, _, height, width = images.shape
    draws = torch.rand(count, 3, generator=generator).to(images.device) * 2 - 1
    angle = draws[:, 0] * math.radians(max_degrees)
    # affine_grid works in [-1, 1] coordinates, where the image spans 2 units.
    shift_x = draws[:, 1] * max_shift_px * 2 / width
    shift_y = draws[:, 2] * max_shift_px * 2 / height
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], dim=1), torch.stack([sin, cos, shift_y], dim=1)], dim=1
    ).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    moved = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return moved + fill


class AugmentedLoader:
    """Wraps a loader of normalised ``(images, labels)`` and augments every batch with ``random_affine``."""

    def __init__(self, loader, max_degrees: float = 15.0, max_shift_px: float = 3.0, seed: int = 0):
        self.loader = loader
        self.max_degrees = max_degrees
        self.max_shift_px = max_shift_px
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels in self.loader:
            yield random_affine(images, self.max_degrees, self.max_shift_px, self.generator), labels
