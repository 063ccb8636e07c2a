"""Hot-swap, canary and rollback under load against a real server: zero failures."""

import time

import httpx
import pytest
import torch

from helpers.serving import loadgen
from helpers.serving.launch import start_server
from helpers.serving.registry import ModelRegistry
from helpers.serving.settings import ServingSettings
from helpers.serving.state import zoo_architecture


@pytest.fixture(scope="module")
def setup(tmp_path_factory, mnist_root):
    folder = tmp_path_factory.mktemp("hotswap")
    settings = ServingSettings(registry_dir=folder / "registry", bootstrap_model="mlp")
    with start_server(settings_path=settings.to_json(folder / "settings.json")) as server:
        registry = ModelRegistry(folder / "registry")
        versions = {entry.metadata["name"]: entry.version for entry in registry.versions()}
        body = loadgen.json_body({"pixels": torch.zeros(28, 28).tolist()})
        yield server, registry, versions, loadgen.build_request(server.url, "/v1/predict", body)


def swap_under_load(server, request, path, seconds=3.0):
    load = loadgen.BackgroundLoad(server.url, request, concurrency=16, requests=10**6, max_seconds=seconds).start()
    time.sleep(seconds / 3)
    response = httpx.post(f"{server.url}{path}", timeout=30)
    return response, load.join()


def test_hot_swap_zero_failures(setup):
    server, registry, versions, request = setup
    response, result = swap_under_load(server, request, f"/v1/models/{versions['zoo-cnn']}/promote")
    assert response.status_code == 200
    assert result.failed == 0
    assert result.ok > 0
    assert set(result.versions) == {versions["zoo-mlp"], versions["zoo-cnn"]}
    assert registry.state()["production"] == versions["zoo-cnn"]


def test_rollback_zero_failures(setup):
    server, registry, versions, request = setup
    response, result = swap_under_load(server, request, "/v1/rollback")
    assert response.status_code == 200
    assert result.failed == 0
    assert httpx.get(f"{server.url}/health").json()["model_version"] == versions["zoo-mlp"]


def test_rollback_empty_history_409(setup):
    server, *_ = setup
    response = httpx.post(f"{server.url}/v1/rollback")
    assert response.status_code == 409
    assert "no earlier production" in response.json()["detail"]


def test_canary_split(setup):
    server, _, versions, request = setup
    response = httpx.put(f"{server.url}/v1/canary", json={"version": versions["zoo-cnn"], "fraction": 0.3})
    assert response.status_code == 200
    result = loadgen.run_load(server.url, request, concurrency=8, requests=600)
    share = result.versions.get(versions["zoo-cnn"], 0) / result.ok
    assert result.failed == 0
    assert 0.2 < share < 0.4
    assert httpx.delete(f"{server.url}/v1/canary").status_code == 200


@pytest.mark.parametrize("body", [{"version": "abc"}, {"version": "zzzzzz", "fraction": 0.1}, {"fraction": 0.1}])
def test_canary_bad_request_4xx(setup, body):
    server, *_ = setup
    response = httpx.put(f"{server.url}/v1/canary", json=body)
    assert 400 <= response.status_code < 500


def test_promote_unknown_404(setup):
    server, *_ = setup
    assert httpx.post(f"{server.url}/v1/models/{'f' * 64}/promote").status_code == 404
