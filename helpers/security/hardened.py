"""The book's model server with every security hook switched on.

``create_hardened_app`` is an app factory for ``uvicorn --factory``. It reads
the plain server settings the way ``helpers.serving.app.create_app`` does
(``$MNIST_SERVING_SETTINGS``) and the security settings from the JSON file
named by ``$MNIST_HARDENED_CONFIG``. It then builds the hooks (tokens, rate
limit, audit log, signed-manifest verifier) and adds one admin route,
``POST /v1/sandbox/evaluate``, that runs an uploaded whole-model pickle in an
isolated child process. The config file holds paths and numbers only; the
token file holds hashes, and the public key verifies but cannot sign.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from helpers import data, zoo
from helpers.serving.app import REQUEST_ID_HEADER, authorize_request, create_app
from helpers.serving.hooks import ADMIN_SCOPE
from helpers.serving.launch import ServerHandle, start_server
from helpers.serving.registry import ModelRegistry
from helpers.serving.settings import ServingSettings
from helpers.serving.state import zoo_architecture

from .audit import JsonlAuditLog
from .auth import TokenAuthenticator, TokenBucketRateLimiter
from .integrity import ManifestVerifier, load_public_key, sign_artifacts
from .isolation import run_isolated

log = logging.getLogger("helpers.security.hardened")

HARDENED_CONFIG_ENV = "MNIST_HARDENED_CONFIG"
HARDENED_FACTORY = "helpers.security.hardened:create_hardened_app"
SANDBOX_PROBE_IMAGES = 256
# The same rule as the server's other routes: a caller's X-Request-ID is kept
# only when it is 1-64 URL-safe characters, otherwise it is replaced by a UUID.
_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PATH_FIELDS = ("tokens_path", "manifest_path", "public_key_path", "audit_log_path")
# run_isolated rejects less address space than this.
_MIN_SANDBOX_MEMORY_MB = 64


@dataclass
class HardenedConfig:
    """Paths and limits of a hardened server (no secrets: hashes and a public key only)."""

    tokens_path: Path
    manifest_path: Path
    public_key_path: Path
    audit_log_path: Path
    rate_per_s: float = 20.0
    burst: int = 40
    sandbox_timeout_s: float = 10.0
    sandbox_memory_mb: int = 1024

    def __post_init__(self) -> None:
        for name in _PATH_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"{name} must be a path, got {type(value).__name__} {value!r}")
            setattr(self, name, Path(value))
        for name in ("rate_per_s", "sandbox_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds or requests per second, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"burst must be a positive integer, got {self.burst!r}")
        memory = self.sandbox_memory_mb
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < _MIN_SANDBOX_MEMORY_MB:
            raise ValueError(f"sandbox_memory_mb must be an integer of at least {_MIN_SANDBOX_MEMORY_MB}, got {memory!r}")

    def to_json(self, path: str | Path) -> Path:
        """Write the config to ``path`` and return the path."""
        values = {key: str(value) if isinstance(value, Path) else value for key, value in dataclasses.asdict(self).items()}
        path = Path(path)
        path.write_text(json.dumps(values, indent=2), encoding="utf-8")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> "HardenedConfig":
        """Read a config written by ``to_json``."""
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"hardened config {path} is not valid JSON: {error}") from None
        if not isinstance(values, dict):
            raise ValueError(f"hardened config {path} must contain a JSON object, got {type(values).__name__}")
        allowed = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(f"unknown hardened config keys {unknown}; allowed keys are {sorted(allowed)}")
        missing = [name for name in _PATH_FIELDS if name not in values]
        if missing:
            raise ValueError(f"hardened config {path} is missing keys {missing}; write it with HardenedConfig.to_json")
        try:
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"invalid hardened config {path}: {error}") from None


def prepare_signed_registry(registry_dir: str | Path, private_key, manifest_path: str | Path, production: str = "cnn") -> ModelRegistry:
    """Register the book's trained MLP and CNN, put ``production`` in production, and sign every artefact."""
    registry = ModelRegistry(registry_dir)
    for kind in ("mlp", "cnn"):
        registry.register(zoo.trained_model(kind), zoo_architecture(kind), name=f"zoo-{kind}",
                          data={"train": "MNIST train (60,000)"})
    chosen = next(v for v in registry.versions() if v.metadata["name"] == f"zoo-{production}")
    registry.promote(chosen.version)
    sign_artifacts(sorted(registry.artifacts.glob("*.safetensors")), private_key, manifest_path)
    return registry


def build_hardened_settings(config: HardenedConfig, base: ServingSettings | None = None) -> ServingSettings:
    """Return ``base`` (default: from the environment) with the security hooks of ``config`` set."""
    base = base if base is not None else ServingSettings.from_env()
    return dataclasses.replace(
        base,
        authenticator=TokenAuthenticator.load(config.tokens_path),
        rate_limiter=TokenBucketRateLimiter(config.rate_per_s, config.burst),
        audit=JsonlAuditLog(config.audit_log_path),
        verifier=ManifestVerifier(config.manifest_path, load_public_key(config.public_key_path)),
        # The registry must already hold signed models; an unsigned bootstrap
        # would be refused by the verifier anyway.
        bootstrap=False,
    )


def add_sandbox_route(app: FastAPI, settings: ServingSettings, config: HardenedConfig) -> None:
    """Add ``POST /v1/sandbox/evaluate``: run an uploaded whole-model pickle isolated, on MNIST test images."""
    probe: dict[str, torch.Tensor] = {}

    def probe_batch() -> tuple[torch.Tensor, torch.Tensor]:
        if not probe:
            images, labels = data.mnist_tensors(train=False)
            probe["x"] = data.normalize_images(images[:SANDBOX_PROBE_IMAGES])
            probe["y"] = labels[:SANDBOX_PROBE_IMAGES]
        return probe["x"], probe["y"]

    def evaluate(body: bytes) -> dict[str, Any]:
        x, y = probe_batch()
        with tempfile.TemporaryDirectory(prefix="upload-") as folder:
            path = Path(folder) / "model.pt"
            path.write_bytes(body)
            result = run_isolated(path, x, timeout_s=config.sandbox_timeout_s, memory_mb=config.sandbox_memory_mb)
        content: dict[str, Any] = {"status": result.status, "seconds": round(result.seconds, 3), "detail": result.detail}
        if result.ok:
            outputs = result.outputs
            if outputs.shape != (len(y), 10):
                content.update(status="error", detail=f"model returned shape {list(outputs.shape)}, expected [{len(y)}, 10]")
            else:
                content["accuracy"] = (outputs.argmax(1) == y).float().mean().item()
        return content

    def audit(event: dict[str, Any]) -> None:
        try:
            settings.audit.record(event)
        except Exception:
            # NOTE: as on the server's other routes, a failing audit sink is
            # logged, not fatal, so the client still gets its response.
            log.exception("audit sink failed on request %s", event.get("request_id"))

    @app.post("/v1/sandbox/evaluate", tags=["admin"])
    async def sandbox_evaluate(request: Request) -> JSONResponse:
        """Run an untrusted whole-model pickle in an isolated process (admin scope)."""
        request_id = _request_id(request)
        headers = {REQUEST_ID_HEADER: request_id}
        started = time.perf_counter()
        event: dict[str, Any] = {"kind": "admin", "action": "sandbox_evaluate", "request_id": request_id,
                                 "token_id": None, "model_version": None, "input_sha256": None}
        try:
            principal = authorize_request(settings, request, ADMIN_SCOPE)
            event["token_id"] = principal.token_id
            body = await request.body()
            if not body:
                raise HTTPException(422, "send the whole-model pickle as the request body")
            event["input_sha256"] = hashlib.sha256(body).hexdigest()
            # The child process does the waiting; a thread keeps the event loop serving.
            content = await asyncio.get_running_loop().run_in_executor(None, evaluate, body)
            event["output"] = {key: content.get(key) for key in ("status", "accuracy")}
            status = 200 if content["status"] == "ok" else 422
            if status != 200:
                log.warning("sandbox rejected upload %s: %s (%s)", event["input_sha256"][:12], content["status"], content["detail"])
            event["status"] = status
            return JSONResponse({"request_id": request_id, **content}, status_code=status, headers=headers)
        except HTTPException as error:
            event["status"] = error.status_code
            raise HTTPException(error.status_code, error.detail, headers={**(error.headers or {}), **headers}) from None
        except Exception:
            event["status"] = 500
            log.exception("sandbox request %s failed", request_id)
            raise HTTPException(500, f"internal error; quote request id {request_id} to the operator", headers=headers) from None
        finally:
            event["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
            audit(event)


def _request_id(request: Request) -> str:
    """Return the caller's ``X-Request-ID`` when well-formed, else a new UUID."""
    given = request.headers.get(REQUEST_ID_HEADER)
    if given and _REQUEST_ID_PATTERN.fullmatch(given):
        return given
    return uuid.uuid4().hex


def create_hardened_app(config: HardenedConfig | None = None, base: ServingSettings | None = None) -> FastAPI:
    """Build the hardened model server; with no config, read ``$MNIST_HARDENED_CONFIG``."""
    if config is None:
        path = os.environ.get(HARDENED_CONFIG_ENV)
        if not path:
            raise ValueError(f"set {HARDENED_CONFIG_ENV} to a HardenedConfig JSON file, or pass config")
        config = HardenedConfig.from_json(path)
    settings = build_hardened_settings(config, base)
    app = create_app(settings)
    add_sandbox_route(app, settings, config)
    return app


def start_hardened_server(
    config_path: str | Path,
    settings_path: str | Path | None = None,
    tls=None,
    **kwargs,
) -> ServerHandle:
    """Launch ``create_hardened_app`` on loopback; ``tls`` is a ``TlsFiles`` or None for plain HTTP."""
    env = {HARDENED_CONFIG_ENV: str(Path(config_path).resolve())}
    tls_args = {}
    if tls is not None:
        tls_args = {"ssl_certfile": tls.server_cert, "ssl_keyfile": tls.server_key, "ca_file": tls.ca_cert}
    return start_server(HARDENED_FACTORY, settings_path=settings_path, env=env, **tls_args, **kwargs)
