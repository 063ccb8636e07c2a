"""The hardened model server over TLS: tokens, scopes, rate limit, audit, verifier, sandbox."""

import json
import ssl

import httpx
import pytest
import torch

from helpers import models
from helpers.security import audit, auth, encryption, hardened, integrity, isolation
from helpers.serving.settings import ServingSettings

PIXELS = {"pixels": torch.zeros(28, 28).tolist()}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hardened")
    key = integrity.generate_signing_key()
    integrity.save_public_key(key.public_key(), folder / "signing.pub.pem")
    hardened.prepare_signed_registry(folder / "registry", key, folder / "manifest.json")
    authenticator = auth.TokenAuthenticator()
    tokens = {
        "reader": authenticator.issue("reader", ["predict"]),
        "ops": authenticator.issue("ops", ["predict", "admin"]),
        "flood": authenticator.issue("flood", ["predict"]),
    }
    authenticator.save(folder / "tokens.json")
    config = hardened.HardenedConfig(
        tokens_path=folder / "tokens.json", manifest_path=folder / "manifest.json",
        public_key_path=folder / "signing.pub.pem", audit_log_path=folder / "audit.jsonl",
        rate_per_s=1.0, burst=10, sandbox_timeout_s=3.0, sandbox_memory_mb=512,
    ).to_json(folder / "hardened.json")
    settings = ServingSettings(registry_dir=folder / "registry", bootstrap=False).to_json(folder / "settings.json")
    tls = encryption.make_tls_files(folder / "tls")
    with hardened.start_hardened_server(config, settings, tls=tls) as handle:
        client = httpx.Client(base_url=handle.url, verify=ssl.create_default_context(cafile=str(tls.ca_cert)), timeout=60)
        yield {"handle": handle, "client": client, "tokens": tokens, "folder": folder, "tls": tls}
        client.close()


def bearer(server, name):
    return {"Authorization": f"Bearer {server['tokens'][name]}"}


def test_tls_with_right_ca(server):
    assert server["client"].get("/health").status_code == 200


def test_tls_with_wrong_ca_fails(server, tmp_path):
    other_ca, _ = encryption.make_ca(tmp_path / "other")
    context = ssl.create_default_context(cafile=str(other_ca))
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(server["handle"].url + "/health", verify=context)


def test_missing_token_is_401(server):
    response = server["client"].post("/v1/predict", json=PIXELS)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_bad_token_is_401(server):
    response = server["client"].post("/v1/predict", json=PIXELS, headers={"Authorization": "Bearer reader.guess"})
    assert response.status_code == 401


def test_predict_scope_cannot_admin(server):
    response = server["client"].post("/v1/rollback", headers=bearer(server, "reader"))
    assert response.status_code == 403


def test_predict_scope_can_predict(server):
    response = server["client"].post("/v1/predict", json=PIXELS, headers=bearer(server, "reader"))
    assert response.status_code == 200


def test_flood_gets_429(server):
    statuses = [
        server["client"].get("/v1/models", headers=bearer(server, "flood")).status_code for _ in range(25)
    ]
    assert statuses[0] == 200
    assert 429 in statuses
    limited = server["client"].get("/v1/models", headers=bearer(server, "flood"))
    assert limited.headers.get("retry-after", "").isdigit()


def test_rate_limit_is_per_token(server):
    for _ in range(12):
        server["client"].get("/v1/models", headers=bearer(server, "flood"))
    response = server["client"].post("/v1/predict", json=PIXELS, headers=bearer(server, "reader"))
    assert response.status_code == 200


def test_unsigned_model_not_promoted(server):
    client = server["client"]
    before = client.get("/health").json()["model_version"]
    upload = integrity.save_weights(models.MLP(), server["folder"] / "unsigned.safetensors")
    registered = client.post(
        "/v1/models", headers=bearer(server, "ops"),
        files={"file": ("m.safetensors", upload.read_bytes(), "application/octet-stream")},
        data={"metadata": json.dumps({"architecture": {"kind": "mlp", "config": {}}, "name": "unsigned"})},
    )
    assert registered.status_code == 200
    promoted = client.post(f"/v1/models/{registered.json()['model_version']}/promote", headers=bearer(server, "ops"))
    assert promoted.status_code == 409
    assert "not signed" in promoted.json()["detail"]
    assert client.get("/health").json()["model_version"] == before


def test_sandbox_kills_hanging_model_and_server_serves(server):
    path = isolation.write_untrusted_model(server["folder"] / "hang.pt", "hang")
    response = server["client"].post("/v1/sandbox/evaluate", content=path.read_bytes(), headers=bearer(server, "ops"))
    assert response.status_code == 422
    assert response.json()["status"] == "timeout"
    assert server["handle"].running()
    after = server["client"].post("/v1/predict", json=PIXELS, headers=bearer(server, "ops"))
    assert after.status_code == 200


def test_sandbox_stops_memory_hog(server):
    path = isolation.write_untrusted_model(server["folder"] / "memory.pt", "memory")
    response = server["client"].post("/v1/sandbox/evaluate", content=path.read_bytes(), headers=bearer(server, "ops"))
    assert response.status_code == 422
    assert response.json()["status"] == "memory"


def test_sandbox_needs_admin_scope(server):
    response = server["client"].post("/v1/sandbox/evaluate", content=b"x", headers=bearer(server, "reader"))
    assert response.status_code == 403


def test_audit_records_every_request(server):
    client = server["client"]
    log_path = server["folder"] / "audit.jsonl"
    ids = [f"audit-{n}" for n in range(3)]
    for request_id in ids:
        client.post("/v1/predict", json=PIXELS, headers={**bearer(server, "ops"), "X-Request-ID": request_id})
    client.post("/v1/rollback", headers={**bearer(server, "ops"), "X-Request-ID": "audit-admin"})
    client.post("/v1/predict", json=PIXELS, headers={"X-Request-ID": "audit-anonymous"})
    events = {row["request_id"]: row for row in audit.read_audit_log(log_path)}
    for request_id in ids:
        assert events[request_id]["status"] == 200
        assert len(events[request_id]["input_sha256"]) == 64
        assert len(events[request_id]["model_version"]) == 64
    assert events["audit-admin"]["action"] == "rollback"
    assert events["audit-admin"]["token_id"] == "ops"
    assert events["audit-anonymous"]["status"] == 401
    assert audit.verify_audit_log(log_path) == len(audit.read_audit_log(log_path))


def test_audit_holds_no_raw_pixels(server):
    text = (server["folder"] / "audit.jsonl").read_text()
    assert '"pixels"' not in text


def config_values(folder, **changes):
    values = {"tokens_path": str(folder / "tokens.json"), "manifest_path": str(folder / "manifest.json"),
              "public_key_path": str(folder / "signing.pub.pem"), "audit_log_path": str(folder / "audit.jsonl")}
    return {**values, **changes}


@pytest.mark.parametrize(
    "changes",
    [{"sandbox_timeout_s": -5}, {"sandbox_timeout_s": float("inf")}, {"sandbox_memory_mb": 1},
     {"rate_per_s": float("nan")}, {"burst": 0}],
)
def test_config_rejects_bad_limits(tmp_path, changes):
    with pytest.raises(ValueError, match=next(iter(changes))):
        hardened.HardenedConfig(**config_values(tmp_path, **changes))


def test_config_missing_key_is_value_error(tmp_path):
    values = config_values(tmp_path)
    del values["manifest_path"]
    path = tmp_path / "hardened.json"
    path.write_text(json.dumps(values))
    with pytest.raises(ValueError, match="manifest_path"):
        hardened.HardenedConfig.from_json(path)


class FailingAudit:
    def record(self, event):
        raise IsADirectoryError("audit.jsonl is a folder")


class ListAudit:
    def __init__(self):
        self.events = []

    def record(self, event):
        self.events.append(event)


def sandbox_client(tmp_path, sink):
    from types import SimpleNamespace

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    authenticator = auth.TokenAuthenticator()
    token = authenticator.issue("ops", ["admin"])
    settings = SimpleNamespace(authenticator=authenticator, rate_limiter=auth.TokenBucketRateLimiter(10.0, 10), audit=sink)
    app = FastAPI()
    hardened.add_sandbox_route(app, settings, hardened.HardenedConfig(**config_values(tmp_path)))
    return TestClient(app), {"Authorization": f"Bearer {token}"}


def test_sandbox_survives_failing_audit(tmp_path):
    client, headers = sandbox_client(tmp_path, FailingAudit())
    response = client.post("/v1/sandbox/evaluate", content=b"", headers=headers)
    assert response.status_code == 422


def test_sandbox_replaces_bad_request_id(tmp_path):
    sink = ListAudit()
    client, headers = sandbox_client(tmp_path, sink)
    bad_id = "<b>" + "x" * 3000
    response = client.post("/v1/sandbox/evaluate", content=b"", headers={**headers, "X-Request-ID": bad_id})
    returned = response.headers["X-Request-ID"]
    assert returned != bad_id
    assert len(returned) == 32
    assert sink.events[0]["request_id"] == returned
