"""Contract tests of the model server, against a real uvicorn process on loopback."""

import io
import json

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from helpers.data import mnist_tensors
from helpers.serving.launch import start_server
from helpers.serving.settings import ServingSettings

MAX_BODY = 200_000
MAX_IMAGES = 16


@pytest.fixture(scope="module")
def test_images(mnist_root):
    images, labels = mnist_tensors(train=False, root=mnist_root)
    return images[:8].float() / 255, labels[:8]


@pytest.fixture(scope="module")
def server(tmp_path_factory, mnist_root):
    folder = tmp_path_factory.mktemp("server")
    settings = ServingSettings(
        registry_dir=folder / "registry", max_body_bytes=MAX_BODY, max_images_per_request=MAX_IMAGES
    )
    with start_server(settings_path=settings.to_json(folder / "settings.json")) as handle:
        yield handle


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def png_bytes(pixels: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((pixels.numpy() * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_health_reports_production_version(client):
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["ready"] is True
    assert len(body["model_version"]) == 64


def test_predict_json_batch_labels(client, test_images):
    images, labels = test_images
    response = client.post("/v1/predict", json={"pixels": images.tolist()})
    assert response.status_code == 200
    body = response.json()
    assert [p["label"] for p in body["predictions"]] == labels.tolist()
    assert len(body["predictions"][0]["probabilities"]) == 10
    assert abs(sum(body["predictions"][0]["probabilities"]) - 1) < 1e-3


def test_predict_carries_version_and_request_id(client, test_images):
    images, _ = test_images
    response = client.post("/v1/predict", json={"pixels": images[0].tolist()}, headers={"X-Request-ID": "abc-123"})
    body = response.json()
    assert body["request_id"] == "abc-123"
    assert response.headers["X-Request-ID"] == "abc-123"
    assert body["model_version"] == client.get("/health").json()["model_version"]
    assert response.headers["X-Model-Version"] == body["model_version"]


def test_predict_flat_784_accepted(client, test_images):
    images, labels = test_images
    response = client.post("/v1/predict", json={"pixels": images[0].reshape(-1).tolist()})
    assert response.json()["predictions"][0]["label"] == labels[0]


def test_predict_png_multipart(client, test_images):
    images, labels = test_images
    files = [("file", (f"{i}.png", png_bytes(images[i]), "image/png")) for i in range(3)]
    response = client.post("/v1/predict", files=files)
    assert response.status_code == 200
    assert [p["label"] for p in response.json()["predictions"]] == labels[:3].tolist()


def test_predict_jpeg_body(client, test_images):
    images, labels = test_images
    buffer = io.BytesIO()
    Image.fromarray((images[1].numpy() * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=95)
    response = client.post("/v1/predict", content=buffer.getvalue(), headers={"Content-Type": "image/jpeg"})
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == labels[1]


def test_predict_large_light_image_fitted(client, test_images):
    """A 200x200 black-on-white drawing is inverted and fitted like MNIST."""
    images, labels = test_images
    big = Image.fromarray((255 - images[0].numpy() * 255).astype(np.uint8)).resize((200, 200))
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    response = client.post("/v1/predict", files={"file": ("big.png", buffer.getvalue(), "image/png")})
    assert response.json()["predictions"][0]["label"] == labels[0]


def test_explain_returns_map(client, test_images):
    images, labels = test_images
    response = client.post("/v1/explain", json={"pixels": images[0].tolist(), "method": "saliency"})
    assert response.status_code == 200
    body = response.json()
    assert body["label"] == labels[0]
    assert np.asarray(body["attribution"]).shape == (28, 28)
    assert body["method"] == "saliency"


def test_explain_integrated_gradients_target(client, test_images):
    images, _ = test_images
    response = client.post("/v1/explain", json={"pixels": images[0].tolist(), "target": 3})
    assert response.json()["target"] == 3
    assert response.json()["method"] == "integrated_gradients"


def test_models_lists_versions(client):
    body = client.get("/v1/models").json()
    roles = {m["name"]: m["role"] for m in body["models"]}
    assert roles == {"zoo-mlp": None, "zoo-cnn": "production"}
    assert body["production"] == client.get("/health").json()["model_version"]


def test_predict_pinned_version(client, test_images):
    images, labels = test_images
    mlp = next(m for m in client.get("/v1/models").json()["models"] if m["name"] == "zoo-mlp")
    response = client.post("/v1/predict", json={"pixels": images[0].tolist(), "model": mlp["version"][:10]})
    assert response.json()["model_version"] == mlp["version"]
    assert response.json()["predictions"][0]["label"] == labels[0]


def test_openapi_documents_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("/v1/predict", "/v1/explain", "/v1/models", "/health"):
        assert route in paths
    assert "multipart/form-data" in paths["/v1/predict"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


def test_web_page_served(client):
    response = client.get("/", follow_redirects=True)
    assert response.status_code == 200
    assert "手写数字识别" in response.text


def _post_json_text(client, text: str) -> httpx.Response:
    return client.post("/v1/predict", content=text, headers={"Content-Type": "application/json"})


BAD_JSON_CASES = [
    # (name, body text, expected status, words the message must contain)
    ("wrong shape", json.dumps({"pixels": [[0.1] * 27] * 28}), 422, "shape [28, 27]"),
    ("ragged rows", json.dumps({"pixels": [[0.1] * 28] * 27 + [[0.1] * 5]}), 422, "ragged"),
    ("strings", json.dumps({"pixels": [["x"] * 28] * 28}), 422, "strings"),
    ("booleans", json.dumps({"pixels": [[True] * 28] * 28}), 422, "booleans"),
    ("nulls", json.dumps({"pixels": [[None] * 28] * 28}), 422, "null"),
    ("above one", json.dumps({"pixels": [[255] * 28] * 28}), 422, "divided by 255"),
    ("negative", json.dumps({"pixels": [[-0.5] * 28] * 28}), 422, "[0, 1]"),
    ("nan", '{"pixels": [' + ",".join(["[" + ",".join(["NaN"] * 28) + "]"] * 28) + "]}", 422, "NaN"),
    ("infinity", '{"pixels": [' + ",".join(["[" + ",".join(["Infinity"] * 28) + "]"] * 28) + "]}", 422, "NaN or infinite"),
    ("missing pixels", json.dumps({"image": []}), 422, "unknown fields"),
    ("empty list", json.dumps({"pixels": []}), 422, "no images"),
    ("scalar", json.dumps({"pixels": 3}), 422, "nested list"),
    ("not object", json.dumps([1, 2]), 422, "JSON object"),
    ("broken json", '{"pixels": [', 400, "not valid JSON"),
    ("empty body", "", 400, "empty"),
    ("too many images", json.dumps({"pixels": [[[0.0] * 28] * 28] * (MAX_IMAGES + 1)}), 422, f"limit of {MAX_IMAGES}"),
    ("model not string", json.dumps({"pixels": [[0.0] * 28] * 28, "model": 5}), 422, "version string"),
    ("unknown model", json.dumps({"pixels": [[0.0] * 28] * 28, "model": "abcdef123456"}), 404, "not found"),
]


@pytest.mark.parametrize("name,text,status,words", BAD_JSON_CASES, ids=[case[0] for case in BAD_JSON_CASES])
def test_bad_json_rejected(client, name, text, status, words):
    response = _post_json_text(client, text)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_oversized_body_413(client):
    response = _post_json_text(client, " " * (MAX_BODY + 1))
    assert response.status_code == 413
    assert f"limit of {MAX_BODY} bytes" in response.json()["detail"]


def test_oversized_chunked_body_413(client):
    def chunks():
        for _ in range(MAX_BODY // 10_000 + 2):
            yield b" " * 10_000

    response = client.post("/v1/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_undecodable_image_422(client):
    response = client.post("/v1/predict", files={"file": ("digit.png", b"\x89PNG not really", "image/png")})
    assert response.status_code == 422
    assert "not a decodable PNG or JPEG" in response.json()["detail"]


def test_gif_image_415(client):
    buffer = io.BytesIO()
    Image.new("L", (28, 28)).save(buffer, format="GIF")
    response = client.post("/v1/predict", files={"file": ("digit.gif", buffer.getvalue(), "image/gif")})
    assert response.status_code == 415
    assert "GIF" in response.json()["detail"]


def test_unsupported_content_type_415(client):
    response = client.post("/v1/predict", content=b"1,2,3", headers={"Content-Type": "text/csv"})
    assert response.status_code == 415
    assert "text/csv" in response.json()["detail"]


def test_multipart_without_file_422(client):
    response = client.post("/v1/predict", files={"model": (None, "abc")})
    assert response.status_code == 422
    assert "'file'" in response.json()["detail"]


def test_explain_two_images_422(client, test_images):
    images, _ = test_images
    response = client.post("/v1/explain", json={"pixels": images[:2].tolist()})
    assert response.status_code == 422
    assert "exactly one image" in response.json()["detail"]


def test_explain_bad_method_422(client, test_images):
    images, _ = test_images
    response = client.post("/v1/explain", json={"pixels": images[0].tolist(), "method": "lime"})
    assert response.status_code == 422
    assert "lime" in response.json()["detail"]


def test_explain_bad_target_422(client, test_images):
    images, _ = test_images
    response = client.post("/v1/explain", json={"pixels": images[0].tolist(), "target": 12})
    assert response.status_code == 422
    assert "0-9" in response.json()["detail"]


def test_errors_carry_request_id(client):
    response = _post_json_text(client, "")
    assert len(response.headers["X-Request-ID"]) == 32


def test_server_survives_bad_inputs(server, client, test_images):
    before = client.get("/v1/models").json()
    for _, text, _, _ in BAD_JSON_CASES:
        _post_json_text(client, text)
    images, labels = test_images
    assert server.running()
    assert client.post("/v1/predict", json={"pixels": images[0].tolist()}).json()["predictions"][0]["label"] == labels[0]
    assert client.get("/v1/models").json()["models"] == before["models"]


DEEP_JSON = b"[" * 50_000 + b"]" * 50_000


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/explain"])
def test_deeply_nested_json_400(client, path):
    response = client.post(path, content=DEEP_JSON, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert "nested too deeply" in response.json()["detail"]


def test_explain_superscript_target_422(client, test_images):
    images, _ = test_images
    response = client.post("/v1/explain", json={"pixels": images[0].tolist(), "target": "²"})
    assert response.status_code == 422, response.text
    assert "0-9" in response.json()["detail"]


def test_multipart_model_as_file_422(client, test_images):
    images, _ = test_images
    files = [("file", ("digit.png", png_bytes(images[0]), "image/png")), ("model", ("m.txt", b"abcdef", "text/plain"))]
    response = client.post("/v1/predict", files=files)
    assert response.status_code == 422, response.text
    assert "'model' must be a text field" in response.json()["detail"]


def test_multipart_target_twice_422(client, test_images):
    images, _ = test_images
    files = [("file", ("digit.png", png_bytes(images[0]), "image/png")), ("target", (None, "3")), ("target", (None, "5"))]
    response = client.post("/v1/explain", files=files)
    assert response.status_code == 422, response.text
    assert "'target' is given 2 times" in response.json()["detail"]


def test_multipart_target_once_accepted(client, test_images):
    images, _ = test_images
    files = [("file", ("digit.png", png_bytes(images[0]), "image/png")), ("target", (None, "3"))]
    response = client.post("/v1/explain", files=files)
    assert response.status_code == 200, response.text
    assert response.json()["target"] == 3
