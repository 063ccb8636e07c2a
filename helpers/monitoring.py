"""Monitoring a served model: out-of-distribution scores, AUROC and a drift alarm.

Scores follow one convention: higher means "more like the training data"
(in-distribution). The unknown set of the book is Fashion-MNIST, the same
shape as MNIST but clothing instead of digits.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import datasets

from . import data

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def fashion_mnist_tensors(
    train: bool = False,
    root: str | Path | None = None,
    debian_dir: str | Path = DEBIAN_FASHION_MNIST,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return Fashion-MNIST images as uint8 ``[N, 28, 28]`` and labels as int64 ``[N]``.

    When Debian's ``dataset-fashion-mnist`` package is installed, its archives
    are decompressed into ``<root>/FashionMNIST/raw`` and torchvision reads
    them offline. Debian re-gzipped the archives, so their MD5 sums differ
    from torchvision's list, but the extracted IDX files are the upstream
    ones. Without the package, torchvision downloads the data set.
    """
    root = Path(root) if root is not None else data.default_data_root()
    raw = root / "FashionMNIST" / "raw"
    debian_dir = Path(debian_dir)
    if debian_dir.is_dir():
        raw.mkdir(parents=True, exist_ok=True)
        for archive in sorted(debian_dir.glob("*-ubyte.gz")):
            target = raw / archive.name[: -len(".gz")]
            if target.exists():
                continue
            partial = target.with_name(target.name + ".part")
            with gzip.open(archive, "rb") as source, open(partial, "wb") as out:
                shutil.copyfileobj(source, out)
            os.replace(partial, target)
        dataset = datasets.FashionMNIST(str(root), train=train, download=False)
    else:
        dataset = datasets.FashionMNIST(str(root), train=train, download=True)
    return dataset.data, dataset.targets.long()


@torch.no_grad()
def logits_of(model: nn.Module, images: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Return the logits of ``model`` for ``images`` (on the model's device), on CPU."""
    model.eval()
    # A dynamically quantised model has no nn.Parameter, so fall back to the images' device.
    device = next(model.parameters(), images).device
    parts = [model(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(parts)


def _require_finite(name: str, values: torch.Tensor) -> None:
    """Raise ``ValueError`` when ``values`` contains NaN or infinity, which would hide an alarm."""
    if not torch.is_tensor(values):
        raise TypeError(f"{name} must be a tensor, got {type(values).__name__}")
    bad = (~torch.isfinite(values)).sum().item() if values.is_floating_point() else 0
    if bad:
        raise ValueError(f"{name} contains {bad} NaN or infinite values; drop or fix them before scoring")


def _require_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number above zero (or zero when allowed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        limit = "zero or positive" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {limit} finite number, got {value!r}")


def msp_score(logits: torch.Tensor) -> torch.Tensor:
    """Return the maximum softmax probability (Hendrycks and Gimpel, 2017)."""
    return F.softmax(logits, dim=1).max(dim=1).values


def energy_score(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Return the negative free energy ``T * logsumexp(logits / T)`` (Liu et al., 2020)."""
    _require_positive("temperature", temperature)
    return temperature * torch.logsumexp(logits / temperature, dim=1)


@torch.no_grad()
def layer_inputs(model: nn.Module, layer: nn.Module, images: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Return what ``layer`` receives when ``model`` runs on ``images`` (on CPU)."""
    captured = []
    handle = layer.register_forward_hook(lambda _module, inputs, _output: captured.append(inputs[0].float().cpu()))
    try:
        logits_of(model, images, batch_size)
    finally:
        handle.remove()
    return torch.cat(captured)


@dataclass
class MahalanobisScorer:
    """Negative Mahalanobis distance to the nearest class mean (Lee et al., 2018).

    Fit it on features of training images, for example the activations of a
    hidden layer. All classes share one covariance, which a small ridge term
    keeps invertible.
    """

    class_means: torch.Tensor = field(repr=False)
    precision: torch.Tensor = field(repr=False)

    @classmethod
    def fit(cls, features: torch.Tensor, labels: torch.Tensor, ridge: float = 1e-3) -> "MahalanobisScorer":
        """Estimate class means and the shared precision matrix from ``features``."""
        if len(features) != len(labels):
            raise ValueError(f"features and labels differ in length ({len(features)} vs {len(labels)})")
        _require_positive("ridge", ridge, allow_zero=True)
        _require_finite("features", features)
        features = features.double()
        classes = labels.unique().tolist()
        means = torch.stack([features[labels == c].mean(0) for c in classes])
        centred = features - means[torch.searchsorted(torch.tensor(classes), labels)]
        covariance = centred.T @ centred / len(features)
        covariance += ridge * torch.eye(covariance.shape[0], dtype=covariance.dtype)
        return cls(class_means=means, precision=torch.linalg.inv(covariance))

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """Return the score of each row of ``features`` (higher: closer to a class)."""
        diffs = features.double().unsqueeze(1) - self.class_means.unsqueeze(0)
        distances = torch.einsum("ncd,de,nce->nc", diffs, self.precision, diffs)
        return (-distances.min(dim=1).values).float()


def auroc(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    """Return the AUROC of separating in-distribution (positive) from OOD scores.

    It is the probability that a random in-distribution sample scores higher
    than a random OOD sample, ties counting one half (the Mann-Whitney U
    statistic divided by the number of pairs).
    """
    if len(in_scores) == 0 or len(out_scores) == 0:
        raise ValueError("auroc needs at least one in-distribution and one OOD score")
    _require_finite("in_scores", in_scores)
    _require_finite("out_scores", out_scores)
    scores = torch.cat([in_scores.double(), out_scores.double()])
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=scores.dtype)
    # Tied scores share the mean of their ranks.
    unique, inverse, counts = scores.unique(return_inverse=True, return_counts=True)
    rank_sums = torch.zeros(len(unique), dtype=scores.dtype).index_add_(0, inverse, ranks)
    ranks = (rank_sums / counts)[inverse]
    n_in, n_out = len(in_scores), len(out_scores)
    u_statistic = ranks[:n_in].sum().item() - n_in * (n_in + 1) / 2
    return u_statistic / (n_in * n_out)


class DriftAlarm:
    """Alarm when the mean score of a sliding window leaves the reference range.

    ``reference`` contains scores (for example the MSP) of data the model is known
    to handle. A window of ``window`` recent scores raises the alarm when its
    mean lies more than ``z_threshold`` standard errors below the reference
    mean; with independent samples and the default threshold of 5, a false
    alarm on a stable stream is very unlikely (about 3e-7 per check under a
    normal approximation).
    """

    def __init__(self, reference: torch.Tensor, window: int = 200, z_threshold: float = 5.0):
        if isinstance(window, bool) or not isinstance(window, int):
            raise TypeError(f"window must be an integer number of samples, got {window!r}")
        if window < 2:
            raise ValueError(f"window must be at least 2 samples, got {window!r}")
        if len(reference) < 2:
            raise ValueError(f"reference needs at least 2 scores, got {len(reference)}")
        _require_finite("reference", reference)
        _require_positive("z_threshold", z_threshold, allow_zero=True)
        self.window = window
        self.z_threshold = z_threshold
        self.mean = reference.double().mean().item()
        self.standard_error = reference.double().std().item() / math.sqrt(window)
        self._recent: list[float] = []

    def update(self, scores: torch.Tensor) -> bool:
        """Add ``scores`` to the window; return True when the window mean is out of range.

        Raises ``ValueError`` on NaN or infinite scores, because one of them
        would make the window mean NaN and silence the alarm.
        """
        values = [float(s) for s in scores]
        bad = sum(not math.isfinite(value) for value in values)
        if bad:
            raise ValueError(f"scores contains {bad} NaN or infinite values; drop or fix them before updating the alarm")
        self._recent.extend(values)
        self._recent = self._recent[-self.window :]
        return len(self._recent) == self.window and self.z_score() < -self.z_threshold

    def z_score(self) -> float:
        """Return how many standard errors the window mean lies from the reference mean."""
        if not self._recent:
            return 0.0
        window_mean = sum(self._recent) / len(self._recent)
        return (window_mean - self.mean) / max(self.standard_error, 1e-12)
