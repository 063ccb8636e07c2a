"""The server's extension points: authentication, scopes, rate limit, audit, verifier."""

import json

import pytest
import torch
from fastapi.testclient import TestClient

from helpers import zoo
from helpers.serving.app import create_app
from helpers.serving.hooks import AuthenticationError, Principal
from helpers.serving.registry import ModelRegistry
from helpers.serving.settings import ServingSettings

BLANK = {"pixels": [[0.0] * 28] * 28}


class TokenTable:
    """Bearer tokens mapped to principals."""

    def __init__(self):
        self.tokens = {
            "reader-secret": Principal("reader", frozenset({"predict"})),
            "admin-secret": Principal("admin", frozenset({"predict", "admin"})),
        }

    def authenticate(self, authorization):
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthenticationError("missing bearer token")
        principal = self.tokens.get(authorization.removeprefix("Bearer "))
        if principal is None:
            raise AuthenticationError("unknown token")
        return principal


class CountingLimiter:
    retry_after_s = 7

    def __init__(self, budget):
        self.budget = budget

    def allow(self, token_id):
        self.budget -= 1
        return self.budget >= 0


class ListAudit:
    def __init__(self):
        self.events = []

    def record(self, event):
        self.events.append(event)


class SwitchVerifier:
    def __init__(self):
        self.refuse = False
        self.checked = []

    def verify(self, path):
        self.checked.append(path.name)
        if self.refuse:
            raise ValueError("signature missing")


@pytest.fixture()
def parts(tmp_path, mnist_root):
    audit, verifier = ListAudit(), SwitchVerifier()
    settings = ServingSettings(
        registry_dir=tmp_path / "registry", authenticator=TokenTable(), audit=audit, verifier=verifier
    )
    with TestClient(create_app(settings)) as client:
        yield client, audit, verifier, settings


def reader():
    return {"Authorization": "Bearer reader-secret"}


def admin():
    return {"Authorization": "Bearer admin-secret"}


def test_missing_token_401(parts):
    client, *_ = parts
    response = client.post("/v1/predict", json=BLANK)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_unknown_token_401(parts):
    client, *_ = parts
    response = client.post("/v1/predict", json=BLANK, headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert "unknown token" in response.json()["detail"]


def test_reader_can_predict(parts):
    client, *_ = parts
    assert client.post("/v1/predict", json=BLANK, headers=reader()).status_code == 200


def test_reader_cannot_promote_403(parts):
    client, *_ = parts
    version = client.get("/health").json()["model_version"]
    response = client.post(f"/v1/models/{version}/promote", headers=reader())
    assert response.status_code == 403
    assert "'admin'" in response.json()["detail"]


def test_open_routes_need_no_token(parts):
    client, *_ = parts
    for path in ("/health", "/docs", "/openapi.json", "/ui/", "/ui/app.js"):
        assert client.get(path).status_code == 200, path


def test_model_list_needs_token(parts):
    client, *_ = parts
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers=reader()).status_code == 200


def test_rate_limit_429(tmp_path, mnist_root):
    settings = ServingSettings(registry_dir=tmp_path / "registry", rate_limiter=CountingLimiter(budget=2))
    with TestClient(create_app(settings)) as client:
        statuses = [client.post("/v1/predict", json=BLANK).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert client.post("/v1/predict", json=BLANK).headers["Retry-After"] == "7"


def test_audit_records_prediction(parts):
    client, audit, *_ = parts
    response = client.post("/v1/predict", json=BLANK, headers=reader())
    event = audit.events[-1]
    assert event["kind"] == "predict"
    assert event["request_id"] == response.json()["request_id"]
    assert event["token_id"] == "reader"
    assert event["model_version"] == response.json()["model_version"]
    assert event["status"] == 200
    assert event["latency_ms"] >= 0
    assert event["output"] == {"labels": [response.json()["predictions"][0]["label"]]}


def test_audit_hashes_input_not_raw(parts):
    import hashlib

    client, audit, *_ = parts
    body = json.dumps(BLANK).encode()
    client.post("/v1/predict", content=body, headers={**reader(), "Content-Type": "application/json"})
    event = audit.events[-1]
    assert event["input_sha256"] == hashlib.sha256(body).hexdigest()
    assert "pixels" not in json.dumps(event)


def test_audit_records_failures(parts):
    client, audit, *_ = parts
    client.post("/v1/predict", json={"pixels": [[2.0] * 28] * 28}, headers=reader())
    client.post("/v1/predict", json=BLANK)
    assert [event["status"] for event in audit.events[-2:]] == [422, 401]


def test_audit_records_admin_action(parts):
    client, audit, *_ = parts
    version = client.get("/health").json()["model_version"]
    client.post(f"/v1/models/{version}/promote", headers=admin())
    event = audit.events[-1]
    assert (event["kind"], event["action"], event["token_id"], event["status"]) == ("admin", "promote", "admin", 200)


def test_verifier_called_on_load(parts):
    client, _, verifier, _ = parts
    version = client.get("/health").json()["model_version"]
    assert f"{version}.safetensors" in verifier.checked


def test_verifier_refusal_keeps_model(parts):
    client, audit, verifier, settings = parts
    before = client.get("/health").json()["model_version"]
    registry = ModelRegistry(settings.registry_dir)
    other = next(v.version for v in registry.versions() if v.version != before)
    verifier.refuse = True
    response = client.post(f"/v1/models/{other}/promote", headers=admin())
    assert response.status_code == 409
    assert "signature missing" in response.json()["detail"]
    assert client.get("/health").json()["model_version"] == before
    assert registry.state()["production"] == before
    assert client.post("/v1/predict", json=BLANK, headers=reader()).status_code == 200


def test_register_upload_and_promote(parts, tmp_path):
    from safetensors.torch import save_file

    client, *_ = parts
    model = zoo.trained_model("mlp")
    path = tmp_path / "mlp.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    metadata = {"architecture": {"kind": "mlp", "config": {}}, "name": "uploaded", "metrics": {"acc": 0.98}}
    response = client.post(
        "/v1/models", headers=admin(),
        files={"file": ("mlp.safetensors", path.read_bytes()), "metadata": (None, json.dumps(metadata))},
    )
    assert response.status_code == 200, response.text
    version = response.json()["model_version"]
    assert client.post(f"/v1/models/{version}/promote", headers=admin()).json()["production"] == version
    assert client.post("/v1/predict", json=BLANK, headers=reader()).json()["model_version"] == version


def test_register_rejects_wrong_weights(parts):
    client, *_ = parts
    from safetensors.torch import save

    data = save({"weight": torch.zeros(3)})
    metadata = {"architecture": {"kind": "mlp", "config": {}}}
    response = client.post(
        "/v1/models", headers=admin(), files={"file": ("x.safetensors", data), "metadata": (None, json.dumps(metadata))}
    )
    assert response.status_code == 409
    assert "does not hold valid weights" in response.json()["detail"]


def test_settings_with_hooks_not_serialisable(parts):
    *_, settings = parts
    with pytest.raises(ValueError, match="cannot be serialised"):
        settings.to_dict()


def register_upload(client, metadata_text):
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in zoo.trained_model("mlp").state_dict().items()})
    return client.post(
        "/v1/models", headers=admin(), files={"file": ("m.safetensors", data), "metadata": (None, metadata_text)}
    )


def test_register_nested_metadata_422(parts):
    client, *_ = parts
    response = register_upload(client, "[" * 50_000 + "]" * 50_000)
    assert response.status_code == 422, response.text
    assert "nested too deeply" in response.json()["detail"]


def test_canary_nested_body_400(parts):
    client, *_ = parts
    body = b"[" * 50_000 + b"]" * 50_000
    response = client.put("/v1/canary", content=body, headers={**admin(), "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert "nested too deeply" in response.json()["detail"]


@pytest.mark.parametrize(
    "architecture,words",
    [
        ({"kind": "mlp", "config": {"in_features": -1}}, "in_features"),
        ({"kind": "cnn", "config": {"channels": [-1, 5]}}, "channels"),
        ({"kind": "mlp", "config": {"hidden": [10**13]}}, "limit"),
        ({"kind": "mlp", "config": {"hidden": [100_000, 100_000]}}, "limit"),
        ({"kind": "mlp", "config": [1]}, "must be a dict"),
    ],
    ids=["negative-input", "negative-channels", "huge-width", "huge-total", "config-list"],
)
def test_register_bad_architecture_409(parts, architecture, words):
    client, *_ = parts
    before = client.get("/v1/models", headers=reader()).json()["models"]
    response = register_upload(client, json.dumps({"architecture": architecture}))
    assert response.status_code == 409, response.text
    assert words in response.json()["detail"]
    assert client.get("/v1/models", headers=reader()).json()["models"] == before


def test_pinned_refused_version_409(parts):
    client, _, verifier, settings = parts
    production = client.get("/health").json()["model_version"]
    other = next(v.version for v in ModelRegistry(settings.registry_dir).versions() if v.version != production)
    verifier.refuse = True
    response = client.post("/v1/predict", json={**BLANK, "model": other}, headers=reader())
    assert response.status_code == 409, response.text
    assert "signature missing" in response.json()["detail"]
    assert client.post("/v1/predict", json=BLANK, headers=reader()).status_code == 200


def test_corrupted_state_named(parts):
    client, _, _, settings = parts
    state_path = settings.registry_dir / "state.json"
    saved = state_path.read_text()
    state_path.write_text("{broken")
    try:
        listing = client.get("/v1/models", headers=reader())
        rollback = client.post("/v1/rollback", headers=admin())
    finally:
        state_path.write_text(saved)
    assert listing.status_code == 503, listing.text
    assert "state.json" in listing.json()["detail"]
    assert rollback.status_code == 409, rollback.text
    assert "state.json" in rollback.json()["detail"]
    assert client.get("/v1/models", headers=reader()).status_code == 200


def test_corrupted_state_fails_startup(tmp_path, mnist_root):
    from helpers.serving.registry import RegistryError

    settings = ServingSettings(registry_dir=tmp_path / "registry", bootstrap=False)
    settings.registry_dir.mkdir()
    (settings.registry_dir / "state.json").write_text("{broken")
    with pytest.raises(RegistryError, match="state.json"):
        with TestClient(create_app(settings)):
            pass
