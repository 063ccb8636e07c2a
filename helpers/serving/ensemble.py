"""Ensembles of classifiers: probability averaging and majority voting."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from helpers import data, models, training
from helpers.device import seed_everything

MODES = ("average", "vote")


class Ensemble(nn.Module):
    """Combines members' softmax outputs; ``forward`` returns probabilities [N, 10].

    ``average`` returns the mean probability. ``vote`` returns each class's
    share of the members' votes, with ties broken by the mean probability
    (added at 1e-3 scale, too small to outweigh one vote).
    """

    def __init__(self, members: Sequence[nn.Module], mode: str = "average"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown ensemble mode {mode!r}; expected one of {list(MODES)}")
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = torch.stack([torch.softmax(member(x), dim=1) for member in self.members])
        mean = probabilities.mean(dim=0)
        if self.mode == "average":
            return mean
        votes = torch.nn.functional.one_hot(probabilities.argmax(dim=2), mean.shape[1]).float().mean(dim=0)
        return votes + 1e-3 * mean


SMALL_MLP_CONFIG = {"hidden": [256, 128], "dropout": 0.1}


def trained_small_mlp(device: torch.device | str = "cpu", root: str | Path | None = None) -> nn.Module:
    """Return a narrower MLP (256-128) trained 3 epochs with seed 1, cached on disk.

    It is the third ensemble member: a different width and seed than the
    book's reference MLP, so its errors differ. The first call trains it
    (seconds on an idle 2-core CPU); later calls load the cached file.
    """
    root = Path(root) if root is not None else data.default_data_root()
    path = root / "models" / "mlp-256-128-e3-seed1.safetensors"
    model = models.MLP(**SMALL_MLP_CONFIG)
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        return model.to(device).eval()
    seed_everything(1)
    train_loader, test_loader = data.device_loaders(device, batch_size=512, root=root)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=4e-3)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=4e-3, total_steps=3 * len(train_loader))
    training.fit(model, train_loader, test_loader, 3, optimizer=optimizer, scheduler=scheduler, progress=False, log=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)
    return model.eval()


@torch.inference_mode()
def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 2000) -> float:
    """Return the top-1 accuracy of ``model`` (logits or probabilities) on normalised inputs."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if len(inputs) == 0:
        raise ValueError("inputs are empty; accuracy needs at least one example")
    if len(inputs) != len(labels):
        raise ValueError(f"inputs and labels differ in length: {len(inputs)} and {len(labels)}")
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(inputs), batch_size):
        outputs = model(inputs[start: start + batch_size].to(device))
        correct += int((outputs.argmax(dim=1).cpu() == labels[start: start + batch_size]).sum())
    return correct / len(inputs)
