"""Dynamic int8 quantisation and magnitude pruning."""

import pytest
import torch

from helpers import compression, data, zoo


@pytest.fixture(scope="module")
def mlp_and_data():
    images, labels = data.mnist_tensors(train=False)
    return zoo.trained_model("mlp"), data.normalize_images(images[:2000]), labels[:2000]


def test_int8_keeps_accuracy(mlp_and_data):
    model, x, y = mlp_and_data
    quantized = compression.quantize_int8(model)
    assert compression.accuracy(quantized, x, y) >= compression.accuracy(model, x, y) - 0.01


def test_int8_shrinks_file(mlp_and_data):
    model, _, _ = mlp_and_data
    quantized = compression.quantize_int8(model)
    assert compression.serialized_bytes(quantized) < 0.3 * compression.serialized_bytes(model)


def test_prune_reaches_sparsity(mlp_and_data):
    model, _, _ = mlp_and_data
    pruned = compression.prune_global(model, 0.7)
    assert abs(compression.sparsity(pruned) - 0.7) < 0.01
    assert compression.sparsity(model) < 0.01


def test_pruned_file_compresses(mlp_and_data):
    model, _, _ = mlp_and_data
    pruned = compression.prune_global(model, 0.7)
    assert compression.gzipped_bytes(pruned) < 0.6 * compression.gzipped_bytes(model)


def test_moderate_pruning_keeps_accuracy(mlp_and_data):
    model, x, y = mlp_and_data
    pruned = compression.prune_global(model, 0.5)
    assert compression.accuracy(pruned, x, y) >= compression.accuracy(model, x, y) - 0.01


def test_prune_rejects_bad_amount(mlp_and_data):
    model, _, _ = mlp_and_data
    with pytest.raises(ValueError, match="amount"):
        compression.prune_global(model, 1.5)


def test_latency_is_positive(mlp_and_data):
    model, x, _ = mlp_and_data
    assert compression.latency_ms(model, x[:1], repeats=3) > 0


@pytest.mark.parametrize("batch_size", [0, -1])
def test_accuracy_rejects_bad_batch_size(mlp_and_data, batch_size):
    model, x, y = mlp_and_data
    with pytest.raises(ValueError, match="batch_size"):
        compression.accuracy(model, x[:4], y[:4], batch_size=batch_size)


def test_accuracy_rejects_empty(mlp_and_data):
    model, x, y = mlp_and_data
    with pytest.raises(ValueError, match="at least one image"):
        compression.accuracy(model, x[:0], y[:0])


def test_accuracy_rejects_float_labels(mlp_and_data):
    model, x, y = mlp_and_data
    with pytest.raises(TypeError, match="integer class indices"):
        compression.accuracy(model, x[:4], y[:4].float())
