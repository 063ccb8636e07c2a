"""A model registry on disk: safetensors artefacts named by their SHA-256.

Layout under the registry root::

    artifacts/<sha256>.safetensors   the weights (the version id is their hash)
    artifacts/<sha256>.json          metadata: architecture, metrics, data, parent
    state.json                       production version, rollback history, canary

Writes go to a temporary file and are renamed into place, under a file lock,
so a crash or a concurrent writer never leaves a half-written file, and a
failed load never changes ``state.json``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from helpers import models as book_models

from .hooks import ArtifactVerifier

log = logging.getLogger("helpers.serving.registry")

ARCHITECTURES = {
    "mlp": book_models.MLP,
    "cnn": book_models.SmallCNN,
}


class RegistryError(RuntimeError):
    """A registry operation failed: corrupted or refused artefact, no history."""


class VersionNotFoundError(RegistryError):
    """A version id that is malformed, unknown or an ambiguous prefix."""


class ArtifactRejectedError(RegistryError):
    """A stored version that exists but cannot be served because it is rejected, corrupted or unloadable."""


# Architectures with more parameters are rejected before any memory is
# allocated: 50M float32 parameters are 200 MB, far above the book's models
# (the default MLP has about 0.54M parameters).
MAX_PARAMETERS = 50_000_000


def build_architecture(architecture: dict[str, Any]) -> nn.Module:
    """Return an untrained model from ``{"kind": ..., "config": {...}}``."""
    if not isinstance(architecture, dict):
        raise RegistryError(f'architecture must be a dict like {{"kind": "mlp", "config": {{}}}}, got {architecture!r}')
    kind = architecture.get("kind")
    if kind not in ARCHITECTURES:
        raise RegistryError(f"unknown architecture kind {kind!r}; expected one of {sorted(ARCHITECTURES)}")
    config = architecture.get("config") or {}
    if not isinstance(config, dict):
        raise RegistryError(f"architecture config must be a dict of constructor arguments, got {config!r}")
    try:
        # The meta device records shapes without allocating memory, so a huge
        # config is counted and rejected before it can exhaust RAM.
        with torch.device("meta"):
            parameters = sum(p.numel() for p in ARCHITECTURES[kind](**config).parameters())
        if parameters > MAX_PARAMETERS:
            raise RegistryError(
                f"config {config!r} for architecture {kind!r} has {parameters:,} parameters, "
                f"more than the limit of {MAX_PARAMETERS:,}; use smaller layer widths"
            )
        return ARCHITECTURES[kind](**config)
    except (TypeError, ValueError, RuntimeError, OverflowError) as error:
        if isinstance(error, RegistryError):
            raise
        raise RegistryError(f"invalid config {config!r} for architecture {kind!r}: {error}") from error


def file_sha256(path: Path) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json(path: Path, what: str, fix: str) -> Any:
    """Parse a registry JSON file; a corrupted file raises ``RegistryError`` naming it and ``fix``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise RegistryError(f"{what} {path} is corrupted ({error}); {fix}") from None


_STATE_FIX = "restore it from a backup, or delete it to start with no production model"
_METADATA_FIX = "restore it from a backup, or delete it with its .safetensors file and register the weights again"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class ModelVersion:
    """One registered artefact and its metadata."""

    version: str
    path: Path
    metadata: dict[str, Any]

    @property
    def short(self) -> str:
        """The first 12 hex digits of the version, used in logs and tables."""
        return self.version[:12]


class ModelRegistry:
    """Versioned model artefacts with a production pointer, history and canary."""

    def __init__(self, root: str | Path, verifier: ArtifactVerifier | None = None):
        self.root = Path(root)
        self.verifier = verifier
        self.artifacts = self.root / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self._state_path = self.root / "state.json"
        self._lock_path = self.root / ".lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- versions -------------------------------------------------------

    def register(
        self,
        model: nn.Module,
        architecture: dict[str, Any],
        *,
        name: str = "",
        metrics: dict[str, Any] | None = None,
        data: dict[str, Any] | str | None = None,
        parent: str | None = None,
    ) -> ModelVersion:
        """Save ``model``'s weights as a new version and return it.

        ``architecture`` is ``{"kind": "mlp"|"cnn", "config": {...}}`` with
        the constructor arguments, so that the registry can rebuild the
        model. Registering identical weights again returns the existing
        version and keeps its first metadata.
        """
        tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
        fd, tmp_name = tempfile.mkstemp(dir=self.artifacts, suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            # Fixed header metadata keeps the bytes, and so the hash, a
            # function of the weights alone.
            save_file(tensors, str(tmp), metadata={"format": "pt"})
            return self.register_file(tmp, architecture, name=name, metrics=metrics, data=data, parent=parent)
        finally:
            tmp.unlink(missing_ok=True)

    def register_file(
        self,
        source: str | Path,
        architecture: dict[str, Any],
        *,
        name: str = "",
        metrics: dict[str, Any] | None = None,
        data: dict[str, Any] | str | None = None,
        parent: str | None = None,
    ) -> ModelVersion:
        """Copy a safetensors file into the registry as a new version, byte for byte.

        The weights must load into ``architecture`` (strict key and shape
        match), else ``RegistryError`` is raised and nothing is stored.
        """
        source = Path(source)
        if parent is not None:
            parent = self.resolve(parent)
        model = build_architecture(architecture)
        try:
            model.load_state_dict(load_file(str(source)))
        except Exception as error:  # safetensors raises its own error types
            raise RegistryError(f"{source.name} does not hold valid weights for {architecture}: {error}") from error

        fd, tmp_name = tempfile.mkstemp(dir=self.artifacts, suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            shutil.copyfile(source, tmp)
            version = file_sha256(tmp)
            path = self.artifacts / f"{version}.safetensors"
            meta_path = self.artifacts / f"{version}.json"
            with self._locked():
                if path.exists() and meta_path.exists():
                    return self.get(version)
                metadata = {
                    "version": version,
                    "name": name,
                    "architecture": architecture,
                    "metrics": metrics or {},
                    "data": data or {},
                    "parent": parent,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "bytes": tmp.stat().st_size,
                }
                # Serialise before moving the weights into place, so that
                # metadata that is not JSON leaves no version without metadata.
                try:
                    text = json.dumps(metadata, indent=2, sort_keys=True)
                except (TypeError, ValueError) as error:
                    raise TypeError(
                        f"metadata of model version {version[:12]} is not JSON-serialisable ({error}); "
                        "pass name, metrics, data and architecture as JSON values"
                    ) from None
                os.replace(tmp, path)
                try:
                    _write_atomic(meta_path, text)
                except BaseException:
                    path.unlink(missing_ok=True)
                    raise
        finally:
            tmp.unlink(missing_ok=True)
        log.info("registered model version %s (%s)", version[:12], name or architecture.get("kind"))
        return ModelVersion(version, path, metadata)

    def versions(self) -> list[ModelVersion]:
        """Return all versions, oldest first."""
        found = []
        for meta_path in self.artifacts.glob("*.json"):
            version = meta_path.stem
            path = self.artifacts / f"{version}.safetensors"
            if path.exists():
                found.append(ModelVersion(version, path, _read_json(meta_path, "metadata file", _METADATA_FIX)))
        return sorted(found, key=lambda item: (item.metadata.get("created_at", ""), item.version))

    def resolve(self, version: str) -> str:
        """Return the full version for a full hash or a unique prefix (at least 6 digits)."""
        if not isinstance(version, str) or len(version) < 6 or any(c not in "0123456789abcdef" for c in version):
            raise VersionNotFoundError(
                f"invalid model version {version!r}; give the SHA-256 hex digest or a prefix of at least 6 digits"
            )
        matches = [path.stem for path in self.artifacts.glob(f"{version}*.safetensors")]
        if not matches:
            raise VersionNotFoundError(f"model version {version!r} not found in {self.root}")
        if len(matches) > 1:
            raise VersionNotFoundError(f"model version prefix {version!r} is ambiguous: {sorted(m[:12] for m in matches)}")
        return matches[0]

    def get(self, version: str) -> ModelVersion:
        """Return the version's path and metadata."""
        version = self.resolve(version)
        meta_path = self.artifacts / f"{version}.json"
        if not meta_path.exists():
            raise RegistryError(f"model version {version[:12]} has no metadata file {meta_path.name}")
        metadata = _read_json(meta_path, "metadata file", _METADATA_FIX)
        return ModelVersion(version, self.artifacts / f"{version}.safetensors", metadata)

    def load(self, version: str, device: torch.device | str = "cpu") -> tuple[ModelVersion, nn.Module]:
        """Verify and load a version; return it with the model in eval mode.

        The verifier (if any) runs first, then the file's SHA-256 must still
        equal the version. Either failure raises ``RegistryError``.
        """
        entry = self.get(version)
        if self.verifier is not None:
            try:
                self.verifier.verify(entry.path)
            except Exception as error:
                raise ArtifactRejectedError(f"verifier rejected model version {entry.short}: {error}") from error
        actual = file_sha256(entry.path)
        if actual != entry.version:
            raise ArtifactRejectedError(
                f"artefact {entry.path.name} is corrupted: its SHA-256 is {actual[:12]}, expected {entry.short}"
            )
        if not isinstance(entry.metadata, dict) or "architecture" not in entry.metadata:
            raise ArtifactRejectedError(
                f"metadata file of model version {entry.short} has no \"architecture\"; register the weights again"
            )
        try:
            model = build_architecture(entry.metadata["architecture"])
        except RegistryError as error:
            raise ArtifactRejectedError(f"cannot build model version {entry.short}: {error}") from error
        try:
            model.load_state_dict(load_file(str(entry.path)))
        except (RuntimeError, OSError) as error:
            raise ArtifactRejectedError(f"cannot load weights of model version {entry.short}: {error}") from error
        return entry, model.to(device).eval()

    # --- production pointer, history and canary ---------------------------

    def state(self) -> dict[str, Any]:
        """Return ``{"production", "history", "canary"}`` as stored on disk."""
        if not self._state_path.exists():
            return {"production": None, "history": [], "canary": None}
        state = _read_json(self._state_path, "registry state file", _STATE_FIX)
        if not (
            isinstance(state, dict)
            and (state.get("production") is None or isinstance(state.get("production"), str))
            and isinstance(state.get("history"), list)
            and (state.get("canary") is None or isinstance(state.get("canary"), dict))
        ):
            raise RegistryError(
                f"registry state file {self._state_path} is corrupted: expected an object with "
                f'"production", "history" and "canary"; {_STATE_FIX}'
            )
        state.setdefault("canary", None)
        return state

    def _update_state(self, change) -> dict[str, Any]:
        with self._locked():
            state = self.state()
            change(state)
            _write_atomic(self._state_path, json.dumps(state, indent=2))
        return state

    def promote(self, version: str) -> dict[str, Any]:
        """Make ``version`` the production version; the old one joins the history."""
        version = self.resolve(version)

        def change(state: dict[str, Any]) -> None:
            if state["production"] and state["production"] != version:
                state["history"].append(state["production"])
            state["production"] = version
            if state["canary"] and state["canary"]["version"] == version:
                state["canary"] = None

        return self._update_state(change)

    def rollback(self) -> dict[str, Any]:
        """Put the previous production version back; raises if there is none."""

        def change(state: dict[str, Any]) -> None:
            if not state["history"]:
                raise RegistryError("no earlier production version to roll back to")
            state["production"] = state["history"].pop()
            state["canary"] = None

        return self._update_state(change)

    def set_canary(self, version: str | None, fraction: float = 0.0) -> dict[str, Any]:
        """Send ``fraction`` of requests to ``version``; None removes the canary."""
        if version is not None:
            version = self.resolve(version)
            if not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
                raise ValueError(f"canary fraction must be in (0, 1), got {fraction!r}")

        def change(state: dict[str, Any]) -> None:
            state["canary"] = None if version is None else {"version": version, "fraction": float(fraction)}

        return self._update_state(change)
