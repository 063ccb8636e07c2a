"""Export parity: torch.export and ONNX Runtime match PyTorch on real digits."""

import pytest
import torch

from helpers import data, zoo
from helpers.serving import export


@pytest.fixture(scope="module")
def inputs(mnist_root):
    images, _ = data.mnist_tensors(train=False, root=mnist_root)
    return data.normalize_images(images[:200])


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_export_parity(kind, inputs, tmp_path):
    model = zoo.trained_model(kind)
    with torch.inference_mode():
        reference = model(inputs)
        program = export.load_program(export.export_program(model, tmp_path / "m.pt2"))
        assert export.max_abs_difference(reference, program(inputs)) < 1e-4
        assert export.max_abs_difference(reference[:3], program(inputs[:3])) < 1e-4
    onnx_model = export.OnnxModel(export.export_onnx(model, tmp_path / "m.onnx"))
    assert export.max_abs_difference(reference, onnx_model(inputs.numpy())) < 1e-4
    assert export.max_abs_difference(reference[:1], onnx_model(inputs[:1].numpy())) < 1e-4
