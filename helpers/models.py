"""The book's MNIST models."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """The classic MNIST multilayer perceptron.

    With the default arguments this is the tutorial network
    784-512-256-10 with ReLU and dropout 0.2 after each hidden layer:
    535,818 parameters. ``hidden`` changes the widths and the depth.
    """

    def __init__(
        self,
        hidden: Sequence[int] = (512, 256),
        dropout: float = 0.2,
        in_features: int = 28 * 28,
        num_classes: int = 10,
    ):
        super().__init__()
        if not hidden or not all(_is_positive_int(width) for width in hidden):
            raise ValueError(f"hidden must list positive integer layer widths, got {hidden!r}")
        _check_positive_int(in_features, "in_features")
        _check_positive_int(num_classes, "num_classes")
        _check_dropout(dropout)
        widths = [in_features, *map(int, hidden)]
        self.hidden = nn.ModuleList(
            nn.Linear(width_in, width_out) for width_in, width_out in zip(widths, widths[1:])
        )
        self.output = nn.Linear(widths[-1], num_classes)
        self.dropout = nn.Dropout(dropout)
        self.in_features = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, self.in_features)
        for layer in self.hidden:
            x = self.dropout(F.relu(layer(x)))
        return self.output(x)


class SmallCNN(nn.Module):
    """Two 3x3 convolution blocks and a classifier: about 0.42M parameters."""

    def __init__(self, channels: Sequence[int] = (32, 64), dropout: float = 0.2, num_classes: int = 10):
        super().__init__()
        if len(channels) != 2 or not all(_is_positive_int(c) for c in channels):
            raise ValueError(f"channels must be two positive integers, got {channels!r}")
        _check_positive_int(num_classes, "num_classes")
        _check_dropout(dropout)
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c2 * 7 * 7, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.reshape(-1, 1, 28, 28)))


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_positive_int(value, name: str) -> None:
    if not _is_positive_int(value):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_dropout(dropout) -> None:
    # The negated comparison also rejects NaN.
    if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Return the number of parameters (optionally only those with gradients)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
