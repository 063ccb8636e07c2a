"""Units of the serving package: input decoding, batching, ensembles, scenes, loadgen."""

import asyncio

import numpy as np
import pytest
import torch

from helpers import models
from helpers.serving import ensemble, explain, loadgen, scenes
from helpers.serving.batching import DynamicBatcher, ServedModel, model_executor
from helpers.serving.inputs import InputError, fit_like_mnist, pixels_from_json
from helpers.serving.settings import ServingSettings


def test_pixels_shapes_accepted():
    assert pixels_from_json([[0.5] * 28] * 28, 4).shape == (1, 1, 28, 28)
    assert pixels_from_json([[0.5] * 784] * 3, 4).shape == (3, 1, 28, 28)


def test_pixels_too_many_images():
    with pytest.raises(InputError, match="limit of 2"):
        pixels_from_json([[0.0] * 784] * 3, 2)


def test_fit_like_mnist_centres_digit():
    canvas = np.zeros((200, 200), dtype=np.float32)
    canvas[20:60, 150:160] = 1.0
    fitted = fit_like_mnist(canvas)
    ys, xs = np.nonzero(fitted > 0.5)
    assert fitted.shape == (28, 28)
    assert ys.max() - ys.min() + 1 <= 20
    assert abs(ys.mean() - 13.5) < 1.5
    assert abs(xs.mean() - 13.5) < 1.5


def test_fit_like_mnist_blank():
    assert fit_like_mnist(np.zeros((50, 50), dtype=np.float32)).sum() == 0


def test_batcher_groups_concurrent_requests():
    model = models.MLP(hidden=(8,), dropout=0.0).eval()
    served = ServedModel("v", model)

    async def scenario():
        batcher = DynamicBatcher(model_executor(), max_batch_size=64, max_wait_ms=50)
        outputs = await asyncio.gather(*(batcher.submit(served, torch.rand(1, 1, 28, 28)) for _ in range(20)))
        await batcher.close()
        return batcher, outputs

    batcher, outputs = asyncio.run(scenario())
    assert batcher.images == 20
    assert batcher.batches <= 2
    assert all(output.shape == (1, 10) for output in outputs)


def test_batcher_respects_max_batch():
    served = ServedModel("v", models.MLP(hidden=(8,), dropout=0.0).eval())

    async def scenario():
        batcher = DynamicBatcher(model_executor(), max_batch_size=4, max_wait_ms=20)
        await asyncio.gather(*(batcher.submit(served, torch.rand(1, 1, 28, 28)) for _ in range(10)))
        await batcher.close()
        return batcher

    batcher = asyncio.run(scenario())
    assert batcher.batches >= 3


def test_batcher_results_match_direct():
    torch.manual_seed(0)
    model = models.MLP(hidden=(8,), dropout=0.0).eval()
    served = ServedModel("v", model)
    inputs = [torch.rand(2, 1, 28, 28) for _ in range(5)]

    async def scenario():
        batcher = DynamicBatcher(model_executor(), max_batch_size=64, max_wait_ms=20)
        outputs = await asyncio.gather(*(batcher.submit(served, x) for x in inputs))
        await batcher.close()
        return outputs

    from helpers.serving.batching import forward_probabilities

    for x, output in zip(inputs, asyncio.run(scenario())):
        assert torch.allclose(output, forward_probabilities(served, x), atol=1e-6)


def test_ensemble_vote_majority():
    class Fixed(torch.nn.Module):
        def __init__(self, label):
            super().__init__()
            self.label = label
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full((len(x),), self.label), 10).float() * 10

    vote = ensemble.Ensemble([Fixed(3), Fixed(3), Fixed(5)], "vote")
    assert vote(torch.zeros(2, 784)).argmax(1).tolist() == [3, 3]


def test_ensemble_mode_checked():
    with pytest.raises(ValueError, match="unknown ensemble mode"):
        ensemble.Ensemble([models.MLP(), models.MLP()], "median")


def test_rotate_quarter_turn():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 2, 14] = 1.0   # a dot above the centre
    turned = scenes.rotate(image, torch.tensor([90.0]))
    y, x = divmod(int(turned.argmax()), 28)
    # Counter-clockwise rotation moves the top of the image to the left.
    assert abs(y - 14) <= 1
    assert x < 6


def test_gate_rejects_forgetting():
    result = scenes.promotion_gate(old_before=0.98, old_after=0.90, new_after=0.95)
    assert not result.passed
    assert "old-scene" in result.reasons[0]


def test_gate_passes_good_candidate():
    assert scenes.promotion_gate(old_before=0.98, old_after=0.975, new_after=0.9).passed


def test_delete_top_pixels_count():
    pixels = torch.ones(2, 1, 28, 28)
    scores = torch.rand(2, 1, 28, 28)
    deleted = explain.delete_top_pixels(pixels, scores, 0.25)
    assert (deleted == 0).sum(dim=(1, 2, 3)).tolist() == [196, 196]


def test_settings_json_roundtrip(tmp_path):
    settings = ServingSettings(registry_dir=tmp_path, max_batch_size=8, batching=False)
    loaded = ServingSettings.from_json(settings.to_json(tmp_path / "s.json"))
    assert loaded.max_batch_size == 8
    assert loaded.batching is False
    assert loaded.registry_dir == tmp_path


@pytest.mark.parametrize("field,value", [("max_batch_size", 0), ("max_wait_ms", -1), ("max_body_bytes", "big")])
def test_settings_validated(field, value):
    with pytest.raises(ValueError, match=field):
        ServingSettings(**{field: value})


def test_settings_unknown_key(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"max_batch": 3}')
    with pytest.raises(ValueError, match="unknown serving settings"):
        ServingSettings.from_json(path)


def test_start_server_rejects_public_host():
    from helpers.serving.launch import start_server

    with pytest.raises(ValueError, match="loopback"):
        start_server(host="0.0.0.0")


@pytest.mark.parametrize(
    "field,value,error",
    [
        ("bootstrap", "no", TypeError),
        ("batching", "no", TypeError),
        ("device", "tpu", ValueError),
        ("device", 0, TypeError),
        ("max_wait_ms", True, ValueError),
        ("extra", [1], TypeError),
        ("explain_steps", 10**8, ValueError),
        ("registry_dir", 5, TypeError),
    ],
)
def test_settings_bad_types(field, value, error):
    with pytest.raises(error, match=field):
        ServingSettings(**{field: value})


def test_settings_device_cpu_accepted():
    assert ServingSettings(device="cpu").device == "cpu"


@pytest.mark.parametrize("kwargs,words", [({"target": -1}, "target"), ({"target": 10}, "target"), ({"steps": 0}, "steps")])
def test_attribute_bad_arguments(kwargs, words):
    model = models.MLP(hidden=(8,), dropout=0.0).eval()
    arguments = {"target": 3, **kwargs}
    with pytest.raises(ValueError, match=words):
        explain.attribute(model, torch.rand(1, 1, 28, 28), **arguments)


def test_attribute_tensor_target_out_of_range():
    model = models.MLP(hidden=(8,), dropout=0.0).eval()
    with pytest.raises(ValueError, match="target"):
        explain.attribute(model, torch.rand(2, 1, 28, 28), torch.tensor([1, 10]), "saliency")


@pytest.mark.parametrize("path,content_type", [("/v1/predict\r\nX-Evil: 1", "application/json"),
                                               ("/v1/predict", "application/json\r\nX-Evil: 1")])
def test_build_request_rejects_crlf(path, content_type):
    with pytest.raises(ValueError, match="control characters"):
        loadgen.build_request("http://127.0.0.1:8000", path, b"{}", content_type)


def test_build_request_needs_port():
    with pytest.raises(ValueError, match="explicit port"):
        loadgen.build_request("http://127.0.0.1", "/v1/predict", b"{}")


def test_run_load_negative_seconds():
    request = loadgen.build_request("http://127.0.0.1:8000", "/v1/predict", b"{}")
    with pytest.raises(ValueError, match="max_seconds"):
        loadgen.run_load("http://127.0.0.1:8000", request, concurrency=1, requests=1, max_seconds=-1)


def test_load_summary_empty_run():
    summary = loadgen.LoadResult(concurrency=1, seconds=0.0).summary()
    assert summary["p50_ms"] is None
    assert summary["p99_ms"] is None


def test_json_body_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        loadgen.json_body({"pixels": [float("nan")]})


@pytest.mark.parametrize("size,batch_size,words", [(0, 10, "empty"), (4, -1, "batch_size"), (4, 0, "batch_size")])
def test_accuracy_bad_arguments(size, batch_size, words):
    model = models.MLP(hidden=(8,), dropout=0.0).eval()
    with pytest.raises(ValueError, match=words):
        ensemble.accuracy(model, torch.rand(size, 1, 28, 28), torch.zeros(size, dtype=torch.long), batch_size)


def test_rotate_rejects_nan_angles():
    with pytest.raises(ValueError, match="finite"):
        scenes.rotate(torch.zeros(2, 1, 28, 28), torch.tensor([float("nan"), 0.0]))


def test_new_scene_rejects_reversed_range():
    with pytest.raises(ValueError, match="min_angle <= max_angle"):
        scenes.new_scene(torch.zeros(2, 1, 28, 28), min_angle=90, max_angle=-90)
