"""The FastAPI application: predict, explain, model registry and the web page.

``create_app`` returns a self-contained ASGI app. Models are loaded at
startup (lifespan) or, for hosts that skip lifespan events, on the first
request, so uvicorn ``--factory``, ``fastapi.testclient.TestClient`` and Ray
Serve's ``@serve.ingress(app)`` can all host the same app.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .bodylimit import BodyLimitMiddleware
from .explain import METHODS
from .hooks import ADMIN_SCOPE, ANONYMOUS, PREDICT_SCOPE, AuthenticationError, Principal
from .inputs import InputError, check_count, pixels_from_image, pixels_from_json
from .openapi import ADMIN_REGISTER_BODY, CANARY_BODY, EXPLAIN_BODY, PREDICT_BODY
from .registry import ArtifactRejectedError, RegistryError, VersionNotFoundError
from .settings import ServingSettings
from .state import ServingState

log = logging.getLogger("helpers.serving.app")

LOG_LEVEL_ENV = "MNIST_SERVING_LOG_LEVEL"
STATIC_DIR = Path(__file__).parent / "static"
REQUEST_ID_HEADER = "X-Request-ID"
MODEL_VERSION_HEADER = "X-Model-Version"
_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_IMAGE_TYPES = ("image/png", "image/jpeg")


def authorize_request(settings: ServingSettings, request: Request, scope: str) -> Principal:
    """Authenticate the caller, check ``scope`` and apply the rate limit.

    Raises ``HTTPException`` 401, 403 or 429. Routes added outside this module
    (for example by a hardened app factory) call it to enforce the same rules.
    """
    principal = ANONYMOUS
    if settings.authenticator is not None:
        try:
            principal = settings.authenticator.authenticate(request.headers.get("authorization"))
        except AuthenticationError as error:
            raise HTTPException(401, f"authentication failed: {error}", headers={"WWW-Authenticate": "Bearer"})
    if scope not in principal.scopes:
        raise HTTPException(403, f"token {principal.token_id!r} lacks the {scope!r} scope this endpoint requires")
    limiter = settings.rate_limiter
    if limiter is not None and not limiter.allow(principal.token_id):
        retry_after = int(getattr(limiter, "retry_after_s", 1))
        raise HTTPException(
            429, f"rate limit exceeded for token {principal.token_id!r}; retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
    return principal


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """Build the model server; with no settings, read them from the environment.

    See ``settings`` for how a launched server receives its settings.
    """
    settings = settings if settings is not None else ServingSettings.from_env()
    _configure_logging()
    holder: dict[str, ServingState] = {}
    init_lock = asyncio.Lock()

    async def serving() -> ServingState:
        if "state" not in holder:
            async with init_lock:
                if "state" not in holder:
                    state = ServingState(settings)
                    await state.start()
                    holder["state"] = state
        return holder["state"]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await serving()
        yield
        if "state" in holder:
            await holder.pop("state").stop()

    app = FastAPI(
        title="MNIST model server",
        description="Predictions, attributions and versioned models for the book's MNIST classifiers.",
        version="1.0",
        lifespan=lifespan,
    )
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        route_limits={("POST", "/v1/models"): settings.max_artifact_bytes},
    )
    app.state.settings = settings
    app.state.serving = serving

    async def authorize(request: Request, scope: str) -> Principal:
        return authorize_request(settings, request, scope)

    def audit(event: dict[str, Any]) -> None:
        if settings.audit is None:
            return
        try:
            settings.audit.record(event)
        except Exception:
            # NOTE: a failing audit sink is logged, not fatal: the response
            # has already been computed and the client still receives it.
            log.exception("audit sink failed on request %s", event.get("request_id"))

    @app.get("/health", tags=["service"])
    async def health() -> dict[str, Any]:
        """Liveness and the served versions; needs no token."""
        state = await serving()
        return {
            "status": "ok",
            "ready": state.production is not None,
            "model_version": state.production.version if state.production else None,
            "canary": state.canary.version if state.canary else None,
            "device": str(state.device),
            "batching": {
                "enabled": settings.batching,
                "max_batch_size": settings.max_batch_size,
                "max_wait_ms": settings.max_wait_ms,
                "forward_passes": state.batcher.batches,
                "images": state.batcher.images,
            },
        }

    @app.get("/v1/models", tags=["models"])
    async def list_models(request: Request) -> JSONResponse:
        """List registered versions with metadata and their role."""
        request_id = _request_id(request)
        try:
            await authorize(request, PREDICT_SCOPE)
            state = await serving()
            stored = state.registry.state()
            entries = state.registry.versions()
        except Exception as error:
            raise _as_http_error(error, request_id) from error
        canary = stored.get("canary") or {}
        rows = []
        for entry in entries:
            role = None
            if entry.version == stored["production"]:
                role = "production"
            elif entry.version == canary.get("version"):
                role = "canary"
            elif entry.version in stored["history"]:
                role = "previous"
            rows.append({**entry.metadata, "role": role})
        content = {
            "request_id": request_id,
            "production": stored["production"],
            "canary": stored.get("canary"),
            "history": stored["history"],
            "models": rows,
        }
        return JSONResponse(content, headers={REQUEST_ID_HEADER: request_id})

    @app.post("/v1/predict", tags=["inference"], openapi_extra=PREDICT_BODY)
    async def predict(request: Request) -> JSONResponse:
        """Classify one or more images (JSON pixels, PNG/JPEG upload or raw image body)."""
        started = time.perf_counter()
        request_id = _request_id(request)
        event: dict[str, Any] = {"kind": "predict", "request_id": request_id, "token_id": None,
                                 "model_version": None, "input_sha256": None, "output": None}
        try:
            principal = await authorize(request, PREDICT_SCOPE)
            event["token_id"] = principal.token_id
            body = await request.body()
            event["input_sha256"] = hashlib.sha256(body).hexdigest()
            pixels, options = await _read_images(request, body, settings, extra_fields=())
            state = await serving()
            served = await state.resolve(options.get("model"), request_id)
            event["model_version"] = served.version
            probabilities = await state.predict(served, pixels)
            labels = probabilities.argmax(dim=1).tolist()
            event["output"] = {"labels": labels}
            content = {
                "request_id": request_id,
                "model_version": served.version,
                "predictions": [
                    {"label": label, "probabilities": [round(p, 6) for p in row]}
                    for label, row in zip(labels, probabilities.tolist())
                ],
            }
            event["status"] = 200
            return JSONResponse(
                content, headers={REQUEST_ID_HEADER: request_id, MODEL_VERSION_HEADER: served.version}
            )
        except Exception as error:
            http_error = _as_http_error(error, request_id)
            event["status"] = http_error.status_code
            raise http_error from error
        finally:
            event["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
            audit(event)

    @app.post("/v1/explain", tags=["inference"], openapi_extra=EXPLAIN_BODY)
    async def explain(request: Request) -> JSONResponse:
        """Return the prediction and an attribution map for exactly one image."""
        started = time.perf_counter()
        request_id = _request_id(request)
        event: dict[str, Any] = {"kind": "explain", "request_id": request_id, "token_id": None,
                                 "model_version": None, "input_sha256": None, "output": None}
        try:
            principal = await authorize(request, PREDICT_SCOPE)
            event["token_id"] = principal.token_id
            body = await request.body()
            event["input_sha256"] = hashlib.sha256(body).hexdigest()
            pixels, options = await _read_images(request, body, settings, extra_fields=("method", "target"))
            if pixels.shape[0] != 1:
                raise InputError(422, f"explain takes exactly one image, got {pixels.shape[0]}")
            method = options.get("method") or "integrated_gradients"
            if method not in METHODS:
                raise InputError(422, f"unknown method {method!r}; expected one of {list(METHODS)}")
            target = _parse_target(options.get("target"))
            state = await serving()
            served = await state.resolve(options.get("model"), request_id)
            event["model_version"] = served.version
            scores, probabilities, target = await state.explain(served, pixels, target, method)
            label = int(probabilities.argmax())
            event["output"] = {"labels": [label], "target": target, "method": method}
            content = {
                "request_id": request_id,
                "model_version": served.version,
                "method": method,
                "label": label,
                "target": target,
                "probabilities": [round(p, 6) for p in probabilities.tolist()],
                "pixels": [[round(v, 4) for v in row] for row in pixels[0, 0].tolist()],
                "attribution": [[float(f"{v:.4g}") for v in row] for row in scores.tolist()],
            }
            event["status"] = 200
            return JSONResponse(
                content, headers={REQUEST_ID_HEADER: request_id, MODEL_VERSION_HEADER: served.version}
            )
        except Exception as error:
            http_error = _as_http_error(error, request_id)
            event["status"] = http_error.status_code
            raise http_error from error
        finally:
            event["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
            audit(event)

    async def admin_action(request: Request, action: str, work) -> JSONResponse:
        request_id = _request_id(request)
        event: dict[str, Any] = {"kind": "admin", "action": action, "request_id": request_id,
                                 "token_id": None, "model_version": None}
        try:
            principal = await authorize(request, ADMIN_SCOPE)
            event["token_id"] = principal.token_id
            state = await serving()
            content = await work(state, event)
            event["status"] = 200
            return JSONResponse({"request_id": request_id, **content}, headers={REQUEST_ID_HEADER: request_id})
        except Exception as error:
            http_error = _as_http_error(error, request_id, admin=True)
            event["status"] = http_error.status_code
            raise http_error from error
        finally:
            audit(event)

    @app.post("/v1/models", tags=["admin"], openapi_extra=ADMIN_REGISTER_BODY)
    async def register_model(request: Request) -> JSONResponse:
        """Register a safetensors artefact with JSON metadata (admin scope)."""

        async def work(state: ServingState, event: dict[str, Any]) -> dict[str, Any]:
            if not request.headers.get("content-type", "").startswith("multipart/form-data"):
                raise InputError(415, "send multipart/form-data with fields 'file' (safetensors) and 'metadata' (JSON)")
            form = await request.form(max_files=1, max_fields=2)
            upload, metadata_text = form.get("file"), form.get("metadata")
            if upload is None or isinstance(upload, str):
                raise InputError(422, "missing file field 'file' with the safetensors artefact")
            try:
                metadata = json.loads(metadata_text) if isinstance(metadata_text, str) else None
            except json.JSONDecodeError as error:
                raise InputError(422, f"field 'metadata' is not valid JSON: {error}") from None
            except RecursionError:
                raise InputError(422, "field 'metadata' is nested too deeply; send a flat JSON object") from None
            if not isinstance(metadata, dict) or "architecture" not in metadata:
                raise InputError(422, 'field \'metadata\' must be a JSON object with "architecture" '
                                      '({"kind": "mlp"|"cnn", "config": {...}})')
            unknown = sorted(set(metadata) - {"architecture", "name", "metrics", "data", "parent"})
            if unknown:
                raise InputError(422, f"unknown metadata keys {unknown}; allowed: architecture, name, metrics, data, parent")
            data = await upload.read()
            with tempfile.TemporaryDirectory(dir=state.registry.root) as folder:
                path = Path(folder) / "upload.safetensors"
                path.write_bytes(data)
                entry = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: state.registry.register_file(path, **metadata)
                )
            event["model_version"] = entry.version
            return {"model_version": entry.version, "metadata": entry.metadata}

        return await admin_action(request, "register", work)

    @app.post("/v1/models/{version}/promote", tags=["admin"])
    async def promote(version: str, request: Request) -> JSONResponse:
        """Load, verify and hot-swap a version into production (admin scope)."""

        async def work(state: ServingState, event: dict[str, Any]) -> dict[str, Any]:
            event["model_version"] = version
            served = await state.promote(version)
            event["model_version"] = served.version
            return {"production": served.version}

        return await admin_action(request, "promote", work)

    @app.post("/v1/rollback", tags=["admin"])
    async def rollback(request: Request) -> JSONResponse:
        """Put the previous production version back (admin scope)."""

        async def work(state: ServingState, event: dict[str, Any]) -> dict[str, Any]:
            served = await state.rollback()
            event["model_version"] = served.version
            return {"production": served.version}

        return await admin_action(request, "rollback", work)

    @app.put("/v1/canary", tags=["admin"], openapi_extra=CANARY_BODY)
    async def set_canary(request: Request) -> JSONResponse:
        """Send a fraction of unpinned requests to a canary version (admin scope)."""

        async def work(state: ServingState, event: dict[str, Any]) -> dict[str, Any]:
            options = _json_object(await request.body(), allowed=("version", "fraction"))
            version, fraction = options.get("version"), options.get("fraction")
            if not isinstance(version, str):
                raise InputError(422, 'field "version" must be a model version string')
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
                raise InputError(422, f'field "fraction" must be a number in (0, 1), got {fraction!r}')
            event["model_version"] = version
            served = await state.set_canary(version, float(fraction))
            event["model_version"] = served.version
            return {"canary": {"version": served.version, "fraction": float(fraction)}}

        return await admin_action(request, "set_canary", work)

    @app.delete("/v1/canary", tags=["admin"])
    async def remove_canary(request: Request) -> JSONResponse:
        """Stop routing requests to the canary (admin scope)."""

        async def work(state: ServingState, event: dict[str, Any]) -> dict[str, Any]:
            await state.set_canary(None, 0.0)
            return {"canary": None}

        return await admin_action(request, "remove_canary", work)

    @app.get("/", include_in_schema=False)
    async def index() -> RedirectResponse:
        return RedirectResponse("/ui/")

    if STATIC_DIR.is_dir():
        app.mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="ui")
    else:
        # NOTE: a wheel built without package data for helpers/serving/static
        # lacks the page; the API still works.
        log.warning("web page folder %s is missing; /ui/ is not served", STATIC_DIR)
    return app


def _configure_logging() -> None:
    level = os.environ.get(LOG_LEVEL_ENV)
    logger = logging.getLogger("helpers.serving")
    if level and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level.upper())


def _request_id(request: Request) -> str:
    """Return the caller's ``X-Request-ID`` when well-formed, else a new UUID."""
    given = request.headers.get(REQUEST_ID_HEADER)
    if given and _REQUEST_ID_PATTERN.fullmatch(given):
        return given
    return uuid.uuid4().hex


def _as_http_error(error: Exception, request_id: str, admin: bool = False) -> HTTPException:
    """Map an exception to the HTTP error the client receives."""
    headers = {REQUEST_ID_HEADER: request_id}
    if isinstance(error, StarletteHTTPException):
        # Raised by authorize(), the body-size limit or the form parser.
        return HTTPException(error.status_code, error.detail, headers={**(error.headers or {}), **headers})
    if isinstance(error, InputError):
        return HTTPException(error.status, error.message, headers=headers)
    if isinstance(error, VersionNotFoundError):
        return HTTPException(404, str(error), headers=headers)
    if isinstance(error, ArtifactRejectedError):
        # The version exists but cannot be served (refused by the verifier,
        # corrupted, unloadable), so retrying the same request cannot help.
        return HTTPException(409, str(error), headers=headers)
    if isinstance(error, (RegistryError, ValueError)):
        # Admin: the request conflicts with the registry (refused artefact,
        # nothing to roll back). Predict: no usable model right now.
        return HTTPException(409 if admin else 503, str(error), headers=headers)
    log.exception("request %s failed", request_id)
    return HTTPException(500, f"internal error; quote request id {request_id} to the operator", headers=headers)


def _json_object(body: bytes, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not body:
        raise InputError(400, "request body is empty; send a JSON object")
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(400, f"request body is not valid JSON: {error}") from None
    except RecursionError:
        raise InputError(400, "request body is nested too deeply; send a flat JSON object") from None
    if not isinstance(value, dict):
        raise InputError(422, f"request body must be a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise InputError(422, f"unknown fields {unknown}; allowed fields are {list(allowed)}")
    return value


def _parse_target(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,2}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 9:
        raise InputError(422, f'"target" must be a class index 0-9, got {value!r}')
    return value


async def _read_images(
    request: Request, body: bytes, settings: ServingSettings, extra_fields: tuple[str, ...]
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Decode the images of a predict/explain request and its options."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not body:
        raise InputError(
            400, 'request body is empty; send JSON {"pixels": [...]}, a multipart upload with field '
                 "'file', or a PNG/JPEG body"
        )
    if content_type == "application/json":
        value = _json_object(body, allowed=("pixels", "model", *extra_fields))
        model = value.get("model")
        if model is not None and not isinstance(model, str):
            raise InputError(422, f'"model" must be a version string, got {model!r}')
        return pixels_from_json(value.get("pixels"), settings.max_images_per_request), value
    if content_type in _IMAGE_TYPES:
        return pixels_from_image(body, "request body", settings.max_image_side).unsqueeze(0), {}
    if content_type == "multipart/form-data":
        form = await request.form(max_files=settings.max_images_per_request + 1, max_fields=len(extra_fields) + 1)
        allowed = {"file", "model", *extra_fields}
        unknown = sorted(set(form.keys()) - allowed)
        if unknown:
            raise InputError(422, f"unknown form fields {unknown}; allowed fields are {sorted(allowed)}")
        uploads = [item for item in form.getlist("file") if not isinstance(item, str)]
        if not uploads:
            raise InputError(422, "multipart request has no file field 'file'; attach PNG or JPEG images as 'file'")
        check_count(len(uploads), settings.max_images_per_request)
        images = []
        for upload in uploads:
            images.append(pixels_from_image(await upload.read(), upload.filename or "file", settings.max_image_side))
        options = {}
        for key in sorted(allowed - {"file"}):
            values = form.getlist(key)
            if len(values) > 1:
                raise InputError(422, f"form field {key!r} is given {len(values)} times; send it once")
            if values and not isinstance(values[0], str):
                raise InputError(422, f"form field {key!r} must be a text field, not a file upload")
            if values:
                options[key] = values[0]
        return torch.stack(images), options
    raise InputError(
        415, f"unsupported content type {content_type or '(none)'!r}; use application/json, "
             "multipart/form-data, image/png or image/jpeg"
    )
