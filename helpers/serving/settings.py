"""Server settings, and how they cross into a uvicorn worker process.

``uvicorn --factory`` calls ``create_app()`` without arguments, so a launched
server reads its settings from the JSON file named by the environment
variable ``MNIST_SERVING_SETTINGS`` (written by ``ServingSettings.to_json``).
Only plain fields travel this way, because hook objects (authenticator, rate
limiter, audit sink, verifier) cannot be serialised. A hardened deployment
therefore launches its own factory that builds ``ServingSettings`` with its hooks and calls
``create_app(settings)``. Such a factory may still start from
``ServingSettings.from_env()`` to pick up the plain fields.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .hooks import ArtifactVerifier, AuditSink, Authenticator, RateLimiter

SETTINGS_ENV = "MNIST_SERVING_SETTINGS"

_HOOK_FIELDS = ("authenticator", "rate_limiter", "audit", "verifier")

# Integrated Gradients runs one forward and backward pass per step, so the
# step count bounds the CPU time of one explain request.
MAX_EXPLAIN_STEPS = 1024


def default_registry_dir() -> Path:
    """Return ``<data root>/registry``, the registry used when none is set."""
    from helpers.data import default_data_root

    return default_data_root() / "registry"


@dataclass
class ServingSettings:
    """Everything ``create_app`` needs; every field has a usable default.

    Limits: ``max_body_bytes`` caps the raw request body (HTTP 413 above it).
    Model uploads have their own cap, ``max_artifact_bytes``.
    ``max_images_per_request`` caps the images in one predict request (HTTP
    422 above it). ``max_image_side`` caps the width and height in pixels of
    an uploaded PNG/JPEG. Batching: with ``batching`` on, concurrent requests
    wait at most ``max_wait_ms`` milliseconds to be grouped into one forward
    pass of at most ``max_batch_size`` images; with it off, every request gets
    its own forward pass.
    """

    registry_dir: Path | None = None
    authenticator: Authenticator | None = None
    rate_limiter: RateLimiter | None = None
    audit: AuditSink | None = None
    verifier: ArtifactVerifier | None = None
    batching: bool = True
    max_batch_size: int = 64
    max_wait_ms: float = 2.0
    max_body_bytes: int = 2 * 1024 * 1024
    max_artifact_bytes: int = 64 * 1024 * 1024
    max_images_per_request: int = 256
    max_image_side: int = 2048
    # With an empty registry, register the book's trained MLP and CNN
    # (``helpers.zoo``) and put ``bootstrap_model`` in production.
    bootstrap: bool = True
    bootstrap_model: str = "cnn"
    device: str | None = None
    explain_steps: int = 32
    # Free-form JSON values for custom app factories; create_app ignores them.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.registry_dir is not None:
            if not isinstance(self.registry_dir, (str, os.PathLike)):
                raise TypeError(f"registry_dir must be a path or None, got {self.registry_dir!r}")
            self.registry_dir = Path(self.registry_dir)
        for name in ("batching", "bootstrap"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        positive = {
            "max_batch_size": self.max_batch_size,
            "max_body_bytes": self.max_body_bytes,
            "max_artifact_bytes": self.max_artifact_bytes,
            "max_images_per_request": self.max_images_per_request,
            "max_image_side": self.max_image_side,
            "explain_steps": self.explain_steps,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.explain_steps > MAX_EXPLAIN_STEPS:
            raise ValueError(f"explain_steps must be at most {MAX_EXPLAIN_STEPS}, got {self.explain_steps!r}")
        if (
            isinstance(self.max_wait_ms, bool)
            or not isinstance(self.max_wait_ms, (int, float))
            or not 0 <= self.max_wait_ms <= 1000
        ):
            raise ValueError(f"max_wait_ms must be a number in [0, 1000], got {self.max_wait_ms!r}")
        if self.bootstrap_model not in ("mlp", "cnn"):
            raise ValueError(f"bootstrap_model must be 'mlp' or 'cnn', got {self.bootstrap_model!r}")
        self._check_device()
        if not isinstance(self.extra, dict):
            raise TypeError(f"extra must be a dict of JSON values, got {self.extra!r}")

    def _check_device(self) -> None:
        """Reject a device name that ``pick_device`` can never accept. Availability is checked at startup."""
        if self.device is None:
            return
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a string such as 'cpu' or 'cuda', got {self.device!r}")
        if self.device in ("", "auto"):
            return
        try:
            kind = torch.device(self.device).type
        except (RuntimeError, TypeError):
            kind = None
        if kind not in ("cuda", "mps", "cpu"):
            raise ValueError(f"unknown device {self.device!r}; use 'auto', 'cuda', 'cuda:N', 'mps' or 'cpu'")

    def resolved_registry_dir(self) -> Path:
        """Return ``registry_dir``, or the default registry when it is None."""
        return self.registry_dir if self.registry_dir is not None else default_registry_dir()

    def to_dict(self) -> dict[str, Any]:
        """Return the plain fields as JSON-ready values (hooks must be unset)."""
        hooks = [name for name in _HOOK_FIELDS if getattr(self, name) is not None]
        if hooks:
            raise ValueError(
                f"settings with hooks {hooks} cannot be serialised; launch an app factory "
                "that builds ServingSettings with those hooks and calls create_app(settings)"
            )
        values = {}
        for item in dataclasses.fields(self):
            if item.name in _HOOK_FIELDS:
                continue
            value = getattr(self, item.name)
            values[item.name] = str(value) if isinstance(value, Path) else value
        return values

    def to_json(self, path: str | Path) -> Path:
        """Write the plain fields to ``path`` as JSON and return the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ServingSettings":
        """Build settings from plain fields; unknown or hook keys raise ValueError."""
        allowed = {item.name for item in dataclasses.fields(cls)} - set(_HOOK_FIELDS)
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(f"unknown serving settings {unknown}; allowed keys are {sorted(allowed)}")
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | Path) -> "ServingSettings":
        """Read settings written by ``to_json``."""
        path = Path(path)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read serving settings from {path}: {error}") from error
        if not isinstance(values, dict):
            raise ValueError(f"serving settings in {path} must be a JSON object, got {type(values).__name__}")
        return cls.from_dict(values)

    @classmethod
    def from_env(cls) -> "ServingSettings":
        """Read the file named by ``$MNIST_SERVING_SETTINGS``, else return defaults."""
        path = os.environ.get(SETTINGS_ENV)
        return cls.from_json(path) if path else cls()
