import random

import pytest
import torch

from helpers.device import describe_device, pick_device, seed_everything


def test_pick_device_cpu():
    assert pick_device("cpu").type == "cpu"


def test_pick_device_auto_returns_available():
    device = pick_device()
    assert device.type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        assert device.type != "cuda"


@pytest.mark.parametrize("name", ["tpu", "gpu0", "xla"])
def test_pick_device_rejects_unknown(name):
    with pytest.raises(ValueError, match=name):
        pick_device(name)


def test_seed_everything_repeats():
    seed_everything(7)
    first = (random.random(), torch.rand(3))
    seed_everything(7)
    second = (random.random(), torch.rand(3))
    assert first[0] == second[0]
    assert torch.equal(first[1], second[1])


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "0"])
def test_seed_everything_rejects_bad_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        seed_everything(seed)


def test_describe_cpu():
    assert describe_device("cpu").startswith("CPU")
