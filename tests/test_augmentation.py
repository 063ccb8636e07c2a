"""Batched random shifts and rotations."""

import pytest
import torch

from helpers import augmentation


def test_random_affine_keeps_shape():
    images = torch.zeros(3, 1, 28, 28)
    moved = augmentation.random_affine(images, generator=torch.Generator().manual_seed(0))
    assert moved.shape == images.shape
    assert torch.isfinite(moved).all()


@pytest.mark.parametrize("name", ["max_degrees", "max_shift_px", "fill"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_random_affine_rejects_non_finite(name, value):
    with pytest.raises(ValueError, match=name):
        augmentation.random_affine(torch.zeros(2, 1, 28, 28), **{name: value})
