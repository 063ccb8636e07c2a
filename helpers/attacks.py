"""Adversarial examples (FGSM, PGD) and adversarial training, in pixel space.

Every attack here works on images in pixels scaled to ``[0, 1]`` and shaped
``[N, 1, 28, 28]``, and ``eps`` is an L-infinity budget in that unit (0.1 is
about 25 of 255 grey levels). The book's models expect normalised inputs, so
wrap them in ``PixelInput`` first: the normalisation then becomes part of the
model and the gradient flows through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import data, models, training
from .device import seed_everything


class PixelInput(nn.Module):
    """A model that takes ``[0, 1]`` pixels and normalises them for ``model``."""

    def __init__(self, model: nn.Module, mean: float = data.MNIST_MEAN, std: float = data.MNIST_STD):
        super().__init__()
        self.model = model
        self.mean = mean
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def pixel_images(images: torch.Tensor) -> torch.Tensor:
    """Scale uint8 images ``[N, 28, 28]`` to float pixels ``[N, 1, 28, 28]`` in [0, 1]."""
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}; pass the raw MNIST tensors")
    return (images.float() / 255.0).unsqueeze(1)


def _check_eps(eps: float) -> None:
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be in [0, 1] (pixel units), got {eps!r}")


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Return d(cross-entropy summed over the batch)/dx without touching parameter grads."""
    if len(x) != len(y):
        raise ValueError(f"images and labels differ in length ({len(x)} vs {len(y)})")
    x = x.detach().requires_grad_(True)
    logits = model(x)
    classes = logits.shape[1]
    # Checked here because cross_entropy raises a bare IndexError on CPU and a
    # device-side assert on CUDA for a label outside [0, classes).
    if len(y) and (y.min().item() < 0 or y.max().item() >= classes):
        raise ValueError(f"labels must be class indices in [0, {classes - 1}], got values from {y.min().item()} to {y.max().item()}")
    loss = F.cross_entropy(logits, y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Return FGSM examples: one step of size ``eps`` along the sign of the loss gradient.

    Goodfellow, Shlens and Szegedy, "Explaining and Harnessing Adversarial
    Examples" (2015). The result is clipped to the valid pixel range.
    """
    _check_eps(eps)
    if eps == 0:
        return x.detach().clone()
    grad = _input_gradient(model, x, y)
    return (x + eps * grad.sign()).clamp(0.0, 1.0).detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 20,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return L-infinity PGD examples (Madry et al., 2018).

    Each of ``steps`` iterations moves ``step_size`` (default ``2.5 * eps /
    steps``, the ratio Madry et al. use) along the gradient sign, then projects
    back into the ``eps`` ball around ``x`` and into ``[0, 1]``. With
    ``random_start`` the search starts from a uniform point in the ball drawn
    from ``generator``; without it, PGD starts at ``x`` and is deterministic.
    """
    _check_eps(eps)
    _check_positive_int("steps", steps)
    if step_size is not None and not (math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a positive finite number (pixel units), got {step_size!r}")
    if eps == 0:
        return x.detach().clone()
    step_size = 2.5 * eps / steps if step_size is None else step_size
    x = x.detach()
    x_adv = x.clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
        x_adv = (x_adv + (2 * noise - 1) * eps).clamp(0.0, 1.0)
    for _ in range(steps):
        grad = _input_gradient(model, x_adv, y)
        x_adv = x_adv + step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    return x_adv.detach()


Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]


def attack_by_name(name: str, steps: int = 20, seed: int = 0) -> Attack:
    """Return the attack called ``name``: "fgsm" or "pgd" (PGD with ``steps`` iterations)."""
    if name == "fgsm":
        return fgsm
    if name == "pgd":
        _check_positive_int("steps", steps)

        def run_pgd(model, x, y, eps):
            generator = torch.Generator().manual_seed(seed)
            return pgd(model, x, y, eps, steps=steps, generator=generator)
        return run_pgd
    raise ValueError(f"unknown attack {name!r}; expected 'fgsm' or 'pgd'")


def robust_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    attack: str | Attack = "pgd",
    steps: int = 20,
    batch_size: int = 500,
) -> float:
    """Return the accuracy of ``model`` (pixel input) on ``attack``-ed images.

    ``eps=0`` gives clean accuracy. The model is switched to eval mode so that
    dropout does not randomise the gradient.
    """
    _check_positive_int("batch_size", batch_size)
    if len(images) == 0:
        raise ValueError("robust_accuracy needs at least one image, got an empty tensor")
    if len(images) != len(labels):
        raise ValueError(f"images and labels differ in length ({len(images)} vs {len(labels)})")
    attack_fn = attack_by_name(attack, steps) if isinstance(attack, str) else attack
    model.eval()
    # A dynamically quantised model has no nn.Parameter, so fall back to the images' device.
    device = next(model.parameters(), images).device
    correct = 0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        y = labels[start : start + batch_size].to(device)
        x_adv = attack_fn(model, x, y, eps)
        with torch.no_grad():
            correct += (model(x_adv).argmax(1) == y).sum().item()
    return correct / len(images)


def accuracy_vs_epsilon(
    named_models: dict[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilons: Sequence[float],
    attacks: Sequence[str] = ("fgsm", "pgd"),
    steps: int = 20,
) -> pd.DataFrame:
    """Return a table of accuracy per model and attack (columns) against eps (rows)."""
    table = {}
    for model_name, model in named_models.items():
        for attack in attacks:
            column = f"{model_name} {attack.upper()}"
            table[column] = [
                robust_accuracy(model, images, labels, eps, attack, steps) for eps in epsilons
            ]
    frame = pd.DataFrame(table, index=pd.Index(list(epsilons), name="eps"))
    return frame


@dataclass(frozen=True)
class AdversarialRecipe:
    """Training settings of the adversarially trained MLP (PGD inside the training loop)."""

    eps: float = 0.1
    train_steps: int = 5
    epochs: int = 3
    batch_size: int = 256
    max_lr: float = 2e-3
    train_samples: int = 60_000

    def __post_init__(self) -> None:
        _check_eps(self.eps)
        for name in ("train_steps", "epochs", "batch_size", "train_samples"):
            _check_positive_int(name, getattr(self, name))
        if not (math.isfinite(self.max_lr) and self.max_lr > 0):
            raise ValueError(f"max_lr must be a positive finite learning rate, got {self.max_lr!r}")


ROBUST_MLP_RECIPE = AdversarialRecipe()


def adversarial_training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    generator: torch.Generator | None = None,
) -> float:
    """Run one step of Madry-style adversarial training and return the loss.

    The PGD examples are found with the model in eval mode (dropout off, so the
    attack sees the network it is attacking), then the weights are updated on
    those examples only, in train mode.
    """
    model.eval()
    x_adv = pgd(model, x, y, eps, steps=steps, generator=generator)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x_adv), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def _robust_cache_path(recipe: AdversarialRecipe, root: Path) -> Path:
    name = (
        f"mlp-pgd-eps{recipe.eps:g}-k{recipe.train_steps}-e{recipe.epochs}"
        f"-b{recipe.batch_size}-lr{recipe.max_lr:g}-n{recipe.train_samples}-seed0.pt"
    )
    return root / "models" / name


def train_adversarial_mlp(
    device: torch.device | str = "cpu",
    recipe: AdversarialRecipe = ROBUST_MLP_RECIPE,
    root: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> nn.Module:
    """Train ``PixelInput(MLP())`` with PGD adversarial training; return it in eval mode."""
    device = torch.device(device)
    root = Path(root) if root is not None else data.default_data_root()
    seed_everything(0)
    images, labels = data.mnist_tensors(train=True, root=root)
    x_all = pixel_images(images[: recipe.train_samples]).to(device)
    y_all = labels[: recipe.train_samples].to(device)
    model = PixelInput(models.MLP()).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.max_lr)
    batches_per_epoch = (len(x_all) + recipe.batch_size - 1) // recipe.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.max_lr, total_steps=batches_per_epoch * recipe.epochs, pct_start=0.3
    )
    shuffle = torch.Generator().manual_seed(0)
    noise = torch.Generator().manual_seed(1)
    for epoch in range(1, recipe.epochs + 1):
        order = torch.randperm(len(x_all), generator=shuffle).to(device)
        loss_sum = 0.0
        for start in range(0, len(order), recipe.batch_size):
            index = order[start : start + recipe.batch_size]
            loss_sum += adversarial_training_step(
                model, optimizer, x_all[index], y_all[index], recipe.eps, recipe.train_steps, noise
            )
            scheduler.step()
        if log is not None:
            log(f"epoch {epoch}/{recipe.epochs}: adversarial loss {loss_sum / batches_per_epoch:.4f}")
    return model.eval()


def robust_mlp(
    device: torch.device | str = "cpu",
    root: str | Path | None = None,
    retrain: bool = False,
    recipe: AdversarialRecipe = ROBUST_MLP_RECIPE,
) -> nn.Module:
    """Return the PGD-trained MLP (pixel input, eval mode), training it once if not cached.

    The weights are cached under ``<data root>/models`` like ``helpers.zoo``
    caches the reference models, in a file named after the recipe.
    """
    root = Path(root) if root is not None else data.default_data_root()
    path = _robust_cache_path(recipe, root)
    if path.exists() and not retrain:
        model = PixelInput(models.MLP())
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.to(device).eval()
    model = train_adversarial_mlp(device, recipe, root)
    training.save_checkpoint(path, {k: v.cpu() for k, v in model.state_dict().items()})
    return model
