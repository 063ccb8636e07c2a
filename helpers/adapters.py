"""Low-rank adapters (LoRA) for fine-tuning a frozen model.

LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models",
2021) keeps a pretrained weight ``W`` frozen and learns an update of rank
``r``: ``y = x W^T + (alpha / r) * x A^T B^T`` with ``A`` of shape
``[r, in]`` and ``B`` of shape ``[out, r]``. ``B`` starts at zero, so the
adapted model starts exactly as the pretrained one, and only
``r * (in + out)`` numbers per layer are trained. After training the update
can be merged into ``W``, so inference costs nothing extra.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def _check_rank(rank: int, alpha: float | None, layer: nn.Linear) -> None:
    max_rank = min(layer.in_features, layer.out_features)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= max_rank:
        raise ValueError(
            f"rank must be an integer from 1 to {max_rank} for a "
            f"{layer.in_features}->{layer.out_features} layer, got {rank!r}"
        )
    if alpha is not None and not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha!r}")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha / rank) * B @ A``."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"LoRALinear wraps nn.Linear, got {type(base).__name__}")
        _check_rank(rank, alpha, base)
        alpha = float(rank) if alpha is None else alpha

        self.base = base
        for parameter in self.base.parameters():
            parameter.requires_grad_(False)
        self.rank = rank
        self.scaling = alpha / rank
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, **factory))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, **factory))
        # Same initialisation as the LoRA reference code: A like nn.Linear, B zero.
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """Return the learned update of the weight, ``scaling * B @ A``, shaped like ``base.weight``."""
        return self.scaling * (self.lora_b @ self.lora_a)

    def merged(self) -> nn.Linear:
        """Return a plain ``nn.Linear`` whose weight includes the update."""
        base = self.base
        layer = nn.Linear(
            base.in_features, base.out_features, bias=base.bias is not None,
            device=base.weight.device, dtype=base.weight.dtype,
        )
        with torch.no_grad():
            layer.weight.copy_(base.weight + self.delta_weight())
            if base.bias is not None:
                layer.bias.copy_(base.bias)
        return layer

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scaling={self.scaling:g}"


def _replace_modules(model: nn.Module, replace, skip: frozenset[str] = frozenset()) -> list[str]:
    """Call ``replace(module)`` on every submodule; where it returns a module, swap it in.

    Modules named in ``skip`` and everything inside them are left alone.
    """
    replaced = []
    for parent_name, parent in list(model.named_modules()):
        if isinstance(parent, LoRALinear) or _is_inside(parent_name, skip):
            continue  # An adapter's base layer is already adapted.
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if name in skip:
                continue
            new = replace(child)
            if new is not None:
                setattr(parent, child_name, new)
                replaced.append(name)
    return replaced


def _is_inside(name: str, prefixes: frozenset[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def add_lora(
    model: nn.Module, rank: int, alpha: float | None = None, train_modules: Sequence[str] = ()
) -> list[str]:
    """Freeze ``model`` and wrap each of its ``nn.Linear`` layers in ``LoRALinear``, in place.

    ``train_modules`` names submodules (as in ``named_modules``) that are
    not wrapped but trained in full, such as a new classification head.
    Afterwards only the adapters' ``lora_a`` and ``lora_b`` and the
    parameters of ``train_modules`` have ``requires_grad``. Returns the
    names of the wrapped layers.
    """
    if any(isinstance(module, LoRALinear) for module in model.modules()):
        raise ValueError(
            f"{type(model).__name__} already has LoRA adapters. Call merge_lora or remove_lora first"
        )
    modules = dict(model.named_modules())
    missing = [name for name in train_modules if name not in modules or not name]
    if missing:
        raise ValueError(
            f"train_modules {missing} not found in {type(model).__name__}. "
            f"Use names from named_modules(), such as {sorted(n for n in modules if n)[:5]}"
        )

    skip = frozenset(train_modules)
    targets = [m for n, m in modules.items() if type(m) is nn.Linear and not _is_inside(n, skip)]
    if not targets:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to adapt")
    # Check every layer first, so that a bad rank leaves the model unchanged.
    for layer in targets:
        _check_rank(rank, alpha, layer)

    for parameter in model.parameters():
        parameter.requires_grad_(False)
    replaced = _replace_modules(
        model,
        lambda module: LoRALinear(module, rank, alpha) if type(module) is nn.Linear else None,
        skip=skip,
    )
    for name in train_modules:
        modules[name].requires_grad_(True)
    return replaced


def merge_lora(model: nn.Module) -> list[str]:
    """Replace each ``LoRALinear`` in ``model`` with its merged ``nn.Linear``, in place.

    Returns the names of the merged layers. The merged layers are trainable
    again, like any freshly built ``nn.Linear``.
    """
    return _replace_modules(
        model,
        lambda module: module.merged() if isinstance(module, LoRALinear) else None,
    )


def remove_lora(model: nn.Module) -> list[str]:
    """Replace each ``LoRALinear`` with its frozen base layer, dropping the update, in place."""
    return _replace_modules(
        model,
        lambda module: module.base if isinstance(module, LoRALinear) else None,
    )
