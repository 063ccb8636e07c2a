import pytest
import torch

from helpers import models


def test_mlp_parameter_count():
    assert models.count_parameters(models.MLP()) == 535_818


def test_mlp_layers_match_tutorial():
    shapes = [tuple(p.shape) for p in models.MLP().parameters()]
    assert shapes == [(512, 784), (512,), (256, 512), (256,), (10, 256), (10,)]


@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (5, 784), (5, 28, 28)])
def test_mlp_accepts_image_shapes(shape):
    assert models.MLP()(torch.zeros(shape)).shape == (5, 10)


def test_cnn_output_shape():
    assert models.SmallCNN()(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_cnn_parameter_count():
    assert models.count_parameters(models.SmallCNN()) == 421_642


def test_trainable_only_count():
    model = models.MLP()
    model.hidden.requires_grad_(False)
    assert models.count_parameters(model, trainable_only=True) == 2570


@pytest.mark.parametrize("hidden", [(), (512, 0), (-3,)])
def test_mlp_rejects_bad_widths(hidden):
    with pytest.raises(ValueError, match="hidden"):
        models.MLP(hidden=hidden)


def test_mlp_rejects_bad_dropout():
    with pytest.raises(ValueError, match="dropout"):
        models.MLP(dropout=1.0)


@pytest.mark.parametrize(
    "config",
    [{"in_features": 0}, {"num_classes": -3}, {"hidden": [1.7]}, {"dropout": float("nan")}],
    ids=["in_features", "num_classes", "float_width", "nan_dropout"],
)
def test_mlp_rejects_bad_config(config):
    with pytest.raises(ValueError, match=next(iter(config)).split("_")[0]):
        models.MLP(**config)


@pytest.mark.parametrize("config", [{"channels": (-1, 5)}, {"channels": (8,)}, {"dropout": 1.5}])
def test_cnn_rejects_bad_config(config):
    with pytest.raises(ValueError, match=next(iter(config))):
        models.SmallCNN(**config)
