"""LoRA adapters: identity at start, gradients only in adapters, merging."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.adapters import LoRALinear, add_lora, merge_lora, remove_lora
from helpers.models import MLP, count_parameters


def _mlp():
    torch.manual_seed(0)
    return MLP(hidden=(64, 32), dropout=0.0).eval()


def _batch():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(16, 784, generator=generator), torch.randint(0, 10, (16,), generator=generator)


def test_adapter_starts_as_identity():
    model = _mlp()
    images, _ = _batch()
    before = model(images)
    add_lora(model, rank=4)
    assert torch.equal(model(images), before)


def test_only_adapters_get_gradients():
    model = _mlp()
    add_lora(model, rank=4)
    images, labels = _batch()
    F.cross_entropy(model(images), labels).backward()
    for name, parameter in model.named_parameters():
        is_adapter = name.endswith(("lora_a", "lora_b"))
        assert parameter.requires_grad == is_adapter, name
        assert (parameter.grad is not None) == is_adapter, name


def test_adapter_parameter_count():
    model = _mlp()
    add_lora(model, rank=4)
    widths = [784, 64, 32, 10]
    expected = sum(4 * (a + b) for a, b in zip(widths, widths[1:]))
    assert count_parameters(model, trainable_only=True) == expected


def test_add_lora_names_layers():
    assert sorted(add_lora(_mlp(), rank=2)) == ["hidden.0", "hidden.1", "output"]


def test_training_changes_output_not_base():
    model = _mlp()
    base_weight = model.output.weight.detach().clone()
    add_lora(model, rank=4)
    images, labels = _batch()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    assert torch.equal(model.output.base.weight, base_weight)
    assert model.output.delta_weight().abs().sum() > 0


def _trained_adapted_model():
    model = _mlp()
    add_lora(model, rank=4, alpha=8)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_b.normal_()
    return model


def test_merge_keeps_outputs():
    model = _trained_adapted_model()
    images, _ = _batch()
    adapted = model(images)
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(images), adapted, rtol=1e-4, atol=1e-4)


def test_remove_restores_base_model():
    model = _mlp()
    images, _ = _batch()
    before = model(images)
    adapted = _trained_adapted_model()
    assert not torch.allclose(adapted(images), before)
    remove_lora(adapted)
    assert torch.equal(adapted(images), before)


def test_add_lora_twice_rejected():
    model = _mlp()
    add_lora(model, rank=2)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        add_lora(model, rank=2)
    assert count_parameters(model, trainable_only=True) > 0


@pytest.mark.parametrize("rank", [0, -1, 11, 2.5, True])
def test_rank_out_of_range(rank):
    with pytest.raises(ValueError, match="rank must be an integer from 1 to 10"):
        LoRALinear(nn.Linear(20, 10), rank)


def test_alpha_must_be_positive():
    with pytest.raises(ValueError, match="alpha must be positive"):
        LoRALinear(nn.Linear(20, 10), 2, alpha=0)


def test_wraps_only_linear():
    with pytest.raises(ValueError, match="wraps nn.Linear, got Conv2d"):
        LoRALinear(nn.Conv2d(1, 1, 3), 1)


def test_model_without_linear():
    with pytest.raises(ValueError, match="no nn.Linear layer"):
        add_lora(nn.Sequential(nn.ReLU()), rank=1)


def test_train_modules_stay_trainable():
    model = _mlp()
    wrapped = add_lora(model, rank=2, train_modules=["output"])
    assert sorted(wrapped) == ["hidden.0", "hidden.1"]
    assert type(model.output) is nn.Linear
    assert model.output.weight.requires_grad
    assert model.output.bias.requires_grad
    assert not model.hidden[0].base.weight.requires_grad


def test_train_modules_unknown_name():
    model = _mlp()
    with pytest.raises(ValueError, match=r"train_modules \['head'\] not found"):
        add_lora(model, rank=2, train_modules=["head"])
    assert all(p.requires_grad for p in model.parameters())


def test_rank_too_large_leaves_model_unchanged():
    model = _mlp()
    with pytest.raises(ValueError, match="from 1 to 10 for a 32->10 layer"):
        add_lora(model, rank=16)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
