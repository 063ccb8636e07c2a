"""The book's model server on a real local Ray Serve deployment (2 replicas, loopback)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from helpers import data
from helpers.distributed import ray_serving
from helpers.distributed.load import run_load
from helpers.serving.settings import ServingSettings

REPLICAS = 2


@pytest.fixture(scope="module")
def serve_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray-serve")
    registry = folder / "registry"
    ray_serving.prepare_registry(registry)
    settings = ServingSettings(registry_dir=registry, bootstrap=False)
    with ray_serving.serve_session(num_cpus=2) as url:
        ray_serving.deploy(settings, folder / "settings.json", num_replicas=REPLICAS)
        yield url


@pytest.fixture(scope="module")
def digit_payload():
    images, labels = data.mnist_tensors(False)
    return {"pixels": (images[0].float() / 255).tolist()}, int(labels[0])


def test_predict_through_serve(serve_url, digit_payload):
    payload, label = digit_payload
    response = httpx.post(f"{serve_url}/v1/predict", json=payload, headers={"X-Request-ID": "test-one"}, timeout=30)
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == label
    assert response.headers[ray_serving.REPLICA_HEADER]


def test_router_reaches_all_replicas(serve_url, digit_payload):
    report = run_load(f"{serve_url}/v1/predict", digit_payload[0], requests=60, concurrency=4)
    names = {ray_serving.replica_id(name) for name in ray_serving.replica_actor_names()}
    assert report.failed == 0
    assert set(report.replicas) == names
    assert len(names) == REPLICAS


@pytest.mark.parametrize(
    "body, status, phrase",
    [
        ({"pixels": [[0.0] * 27] * 28}, 422, "shape"),
        ({"pixels": [["a"] * 28] * 28}, 422, "only numbers"),
        ({"pixels": "abc"}, 422, "nested list"),
        ({"image": []}, 422, "unknown fields"),
        (None, 400, "empty"),
    ],
)
def test_bad_request_gets_4xx(serve_url, body, status, phrase):
    before = ray_serving.replica_actor_names()
    if body is None:
        response = httpx.post(f"{serve_url}/v1/predict", content=b"", headers={"content-type": "application/json"}, timeout=30)
    else:
        response = httpx.post(f"{serve_url}/v1/predict", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert phrase in response.json()["detail"]
    assert ray_serving.replica_states() == {"RUNNING": REPLICAS}
    assert ray_serving.replica_actor_names() == before


def test_replica_kill_under_load(serve_url, digit_payload):
    outcome = {}

    def load():
        outcome["report"] = run_load(
            f"{serve_url}/v1/predict", digit_payload[0], requests=200, concurrency=4, deadline_s=90, id_prefix="kill"
        )

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(0.5)
    victim = ray_serving.replica_actor_names()[0]
    ray_serving.kill_replica(victim)
    thread.join(timeout=120)
    report = outcome["report"]
    assert report.requests == 200
    assert report.failed / report.requests <= 0.01, report.summary()
    ray_serving.wait_for_replicas(REPLICAS, timeout_s=90)
    assert victim not in ray_serving.replica_actor_names()


def test_request_id_in_serve_logs(serve_url, digit_payload):
    httpx.post(f"{serve_url}/v1/predict", json=digit_payload[0], headers={"X-Request-ID": "trace-me-42"}, timeout=30)
    time.sleep(1.0)  # Replica log handlers flush asynchronously.
    lines = ray_serving.serve_log_lines("trace-me-42")
    assert any(line.startswith("replica") for line in lines), lines
    assert any(line.startswith("proxy") for line in lines), lines


def test_load_rejects_remote_host():
    with pytest.raises(ValueError, match="only target loopback"):
        run_load("http://192.0.2.1:8000/v1/predict", {}, requests=1)


def test_deploy_rejects_zero_replicas(tmp_path):
    with pytest.raises(ValueError, match="num_replicas must be a positive integer"):
        ray_serving.deploy(ServingSettings(), tmp_path / "settings.json", num_replicas=0)
