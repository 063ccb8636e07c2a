"""Artefact integrity: why pickle checkpoints are code, safetensors, and signed manifests.

A signed manifest lists the SHA-256 and size of each artefact and carries an
Ed25519 signature over its canonical JSON. ``ManifestVerifier`` implements the
model server's ``ArtifactVerifier`` hook: the registry calls it before every
load, and an artefact whose hash the signed manifest does not list is
rejected.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pathlib
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from safetensors.torch import load_file, save_file
from torch import nn

MANIFEST_FORMAT = "mnist-book-manifest/1"


class IntegrityError(RuntimeError):
    """An artefact or manifest failed verification; the load must not happen."""


class _MarkerPayload:
    """An object whose unpickling writes a file: a stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = Path(marker)

    def __reduce__(self):
        # Unpickling calls pathlib.Path.write_text(marker, text). A real
        # attacker would call os.system or exec here instead.
        return (pathlib.Path.write_text, (self.marker, "pickle payload ran\n"))


def write_pickle_payload(path: str | Path, marker: str | Path, model: nn.Module | None = None) -> Path:
    """Save a checkpoint whose unpickling creates ``marker``; return ``path``.

    The file looks like an ordinary ``torch.save`` checkpoint (it contains the
    ``state_dict`` of ``model`` when given). Loading it with
    ``torch.load(path, weights_only=False)`` writes ``marker``, which proves
    that loading ran code chosen by the file's author.
    """
    path = Path(path)
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()} if model is not None else {}
    torch.save({"state_dict": state, "note": _MarkerPayload(Path(marker))}, path)
    return path


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Save ``model``'s weights as safetensors (tensors only, no code) and return the path."""
    path = Path(path)
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def file_sha256(path: str | Path) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def generate_signing_key() -> Ed25519PrivateKey:
    """Return a new Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def save_private_key(key: Ed25519PrivateKey, path: str | Path) -> Path:
    """Write ``key`` as unencrypted PKCS#8 PEM readable only by its owner (mode 0600)."""
    path = Path(path)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return path


def save_public_key(key: Ed25519PublicKey, path: str | Path) -> Path:
    """Write ``key`` as SubjectPublicKeyInfo PEM and return the path."""
    path = Path(path)
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key written by ``save_private_key``."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise IntegrityError(f"{path} contains a {type(key).__name__}, expected an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key written by ``save_public_key``."""
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise IntegrityError(f"{path} contains a {type(key).__name__}, expected an Ed25519 public key")
    return key


def _canonical(manifest: dict[str, Any]) -> bytes:
    body = {key: value for key, value in manifest.items() if key != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign_artifacts(paths: Iterable[str | Path], private_key: Ed25519PrivateKey, manifest_path: str | Path) -> dict[str, Any]:
    """Write a signed manifest of ``paths`` (name, SHA-256, bytes) and return it.

    The signature covers the canonical JSON (sorted keys, no spaces) of every
    field except ``signature`` itself.
    """
    files = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"cannot sign {path}: no such file")
        files[path.name] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    if not files:
        raise ValueError("sign_artifacts needs at least one file")
    manifest = {
        "format": MANIFEST_FORMAT,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }
    manifest["signature"] = base64.b64encode(private_key.sign(_canonical(manifest))).decode("ascii")
    manifest_path = Path(manifest_path)
    tmp = manifest_path.with_name(manifest_path.name + ".part")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, manifest_path)
    return manifest


def read_verified_manifest(manifest_path: str | Path, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """Return the manifest after checking its Ed25519 signature; raise ``IntegrityError`` if it fails."""
    manifest_path = Path(manifest_path)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IntegrityError(f"manifest {manifest_path} not found; sign the artefacts first") from None
    except json.JSONDecodeError as error:
        raise IntegrityError(f"manifest {manifest_path} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise IntegrityError(f"manifest {manifest_path} is not in format {MANIFEST_FORMAT!r}")
    signature = manifest.get("signature")
    if not isinstance(signature, str):
        raise IntegrityError(f"manifest {manifest_path} is unsigned")
    try:
        public_key.verify(base64.b64decode(signature, validate=True), _canonical(manifest))
    except (InvalidSignature, ValueError):
        raise IntegrityError(
            f"manifest {manifest_path} has an invalid signature: it was changed after signing "
            "or signed with another key"
        ) from None
    _check_manifest_files(manifest, manifest_path)
    return manifest


def _check_manifest_files(manifest: dict[str, Any], manifest_path: Path) -> None:
    """Raise ``IntegrityError`` unless ``files`` maps each name to an entry with a ``sha256`` string."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise IntegrityError(
            f"manifest {manifest_path} has 'files' of type {type(files).__name__}, expected an object "
            "mapping file names to entries; sign the artefacts again with sign_artifacts"
        )
    for name, entry in files.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise IntegrityError(
                f"manifest {manifest_path} entry {name!r} has no 'sha256' string; "
                "sign the artefacts again with sign_artifacts"
            )


class ManifestVerifier:
    """``ArtifactVerifier`` that accepts only artefacts listed in a signed manifest.

    The manifest is re-read and its signature re-checked on every call, so a
    newly signed manifest takes effect without a restart. A file is accepted
    when its SHA-256 appears in the manifest; a listed name whose bytes
    changed is reported as tampered.
    """

    def __init__(self, manifest_path: str | Path, public_key: Ed25519PublicKey):
        self.manifest_path = Path(manifest_path)
        self.public_key = public_key

    def verify(self, path: Path) -> None:
        """Raise ``IntegrityError`` unless ``path``'s SHA-256 is in the signed manifest."""
        path = Path(path)
        manifest = read_verified_manifest(self.manifest_path, self.public_key)
        digest = file_sha256(path)
        files = manifest["files"]
        listed = files.get(path.name)
        if listed is not None and listed["sha256"] != digest:
            raise IntegrityError(
                f"artefact {path.name} was tampered with: SHA-256 {digest[:12]} differs from "
                f"the signed {listed['sha256'][:12]}"
            )
        if not any(entry["sha256"] == digest for entry in files.values()):
            raise IntegrityError(
                f"artefact {path.name} (SHA-256 {digest[:12]}) is not signed: it is not listed in "
                f"{self.manifest_path.name}; sign it with sign_artifacts before loading"
            )


def load_verified_weights(path: str | Path, verifier: ManifestVerifier) -> dict[str, torch.Tensor]:
    """Verify ``path`` with ``verifier``, then return its safetensors tensors."""
    verifier.verify(Path(path))
    return load_file(str(path))
