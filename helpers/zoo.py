"""Trained reference models, trained once and cached on disk.

Later chapters need a trained MLP or CNN but are not about training it.
``trained_model`` trains it with a fixed recipe on first use and stores the
weights under ``<data root>/models``; later calls (other notebooks, tests)
load the cached file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import data, models, training
from .device import seed_everything


@dataclass(frozen=True)
class Recipe:
    """Training settings of a reference model."""

    epochs: int
    batch_size: int
    max_lr: float


RECIPES = {
    "mlp": Recipe(epochs=4, batch_size=512, max_lr=4e-3),
    "cnn": Recipe(epochs=2, batch_size=256, max_lr=3e-3),
}


def build_model(kind: str) -> nn.Module:
    """Return an untrained model of ``kind`` ("mlp" or "cnn")."""
    if kind == "mlp":
        return models.MLP()
    if kind == "cnn":
        return models.SmallCNN()
    raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(RECIPES)}")


def _cache_path(kind: str, root: Path) -> Path:
    recipe = RECIPES[kind]
    name = f"{kind}-e{recipe.epochs}-b{recipe.batch_size}-lr{recipe.max_lr:g}-seed0.pt"
    return root / "models" / name


def trained_model(
    kind: str = "mlp",
    device: torch.device | str = "cpu",
    root: str | Path | None = None,
    retrain: bool = False,
) -> nn.Module:
    """Return a trained reference model in eval mode, training it if not cached.

    Measured on 2 CPU cores with seed 0: the MLP reaches 98.2% test accuracy
    in about 6 s of training, the CNN 99.0% in about 45 s; later calls load
    the cached weights in milliseconds.
    """
    model = build_model(kind)
    root = Path(root) if root is not None else data.default_data_root()
    path = _cache_path(kind, root)
    if path.exists() and not retrain:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.to(device).eval()

    recipe = RECIPES[kind]
    seed_everything(0)
    train_loader, test_loader = data.device_loaders(device, batch_size=recipe.batch_size, root=root)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.max_lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.max_lr, total_steps=len(train_loader) * recipe.epochs, pct_start=0.25
    )
    training.fit(
        model, train_loader, test_loader, recipe.epochs,
        optimizer=optimizer, scheduler=scheduler, progress=False, log=None,
    )
    training.save_checkpoint(path, {k: v.cpu() for k, v in model.state_dict().items()})
    return model.eval()
