"""Pickle payloads, safetensors and the signed manifest."""

import base64
import json
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from helpers import models
from helpers.security import integrity


def test_pickle_payload_runs_without_weights_only(tmp_path):
    marker = tmp_path / "marker.txt"
    checkpoint = integrity.write_pickle_payload(tmp_path / "evil.pt", marker)
    # Run the unsafe load in a child process so the test process never unpickles it.
    code = f"import torch; torch.load({str(checkpoint)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    assert marker.exists()


def test_weights_only_rejects_pickle_payload(tmp_path):
    marker = tmp_path / "marker.txt"
    checkpoint = integrity.write_pickle_payload(tmp_path / "evil.pt", marker, models.MLP(hidden=(8,)))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(checkpoint, weights_only=True)
    assert not marker.exists()


def test_safetensors_round_trip(tmp_path):
    model = models.MLP(hidden=(16,))
    path = integrity.save_weights(model, tmp_path / "mlp.safetensors")
    restored = models.MLP(hidden=(16,))
    restored.load_state_dict(load_file(str(path)))
    assert torch.equal(restored.output.weight, model.output.weight)


@pytest.fixture
def signed(tmp_path):
    key = integrity.generate_signing_key()
    artefact = integrity.save_weights(models.MLP(hidden=(16,)), tmp_path / "mlp.safetensors")
    manifest = tmp_path / "manifest.json"
    integrity.sign_artifacts([artefact], key, manifest)
    return key, artefact, manifest


def test_verifier_accepts_signed_artefact(signed):
    key, artefact, manifest = signed
    verifier = integrity.ManifestVerifier(manifest, key.public_key())
    tensors = integrity.load_verified_weights(artefact, verifier)
    assert "output.weight" in tensors


def test_verifier_rejects_tampered_artefact(signed):
    key, artefact, manifest = signed
    data = bytearray(artefact.read_bytes())
    data[-1] ^= 0x01
    artefact.write_bytes(bytes(data))
    verifier = integrity.ManifestVerifier(manifest, key.public_key())
    with pytest.raises(integrity.IntegrityError, match="tampered"):
        verifier.verify(artefact)


def test_verifier_rejects_unsigned_artefact(signed, tmp_path):
    key, _, manifest = signed
    other = integrity.save_weights(models.MLP(hidden=(8,)), tmp_path / "other.safetensors")
    verifier = integrity.ManifestVerifier(manifest, key.public_key())
    with pytest.raises(integrity.IntegrityError, match="not signed"):
        verifier.verify(other)


def test_verifier_rejects_edited_manifest(signed, tmp_path):
    key, artefact, manifest = signed
    other = integrity.save_weights(models.MLP(hidden=(8,)), tmp_path / "other.safetensors")
    content = json.loads(manifest.read_text())
    content["files"]["other.safetensors"] = {"sha256": integrity.file_sha256(other), "bytes": 1}
    manifest.write_text(json.dumps(content))
    verifier = integrity.ManifestVerifier(manifest, key.public_key())
    with pytest.raises(integrity.IntegrityError, match="invalid signature"):
        verifier.verify(other)


def test_verifier_rejects_other_key(signed):
    _, artefact, manifest = signed
    stranger = integrity.generate_signing_key().public_key()
    with pytest.raises(integrity.IntegrityError, match="invalid signature"):
        integrity.ManifestVerifier(manifest, stranger).verify(artefact)


def test_verifier_rejects_missing_manifest(signed, tmp_path):
    key, artefact, _ = signed
    verifier = integrity.ManifestVerifier(tmp_path / "absent.json", key.public_key())
    with pytest.raises(integrity.IntegrityError, match="not found"):
        verifier.verify(artefact)


def test_key_files_round_trip(tmp_path):
    key = integrity.generate_signing_key()
    private = integrity.save_private_key(key, tmp_path / "signing.pem")
    public = integrity.save_public_key(key.public_key(), tmp_path / "signing.pub.pem")
    signature = integrity.load_private_key(private).sign(b"x")
    integrity.load_public_key(public).verify(signature, b"x")
    assert private.stat().st_mode & 0o777 == 0o600


def test_verifier_rejects_files_list(signed):
    key, artefact, manifest = signed
    content = json.loads(manifest.read_text())
    content["files"] = list(content["files"].values())
    content["signature"] = base64.b64encode(key.sign(integrity._canonical(content))).decode("ascii")
    manifest.write_text(json.dumps(content))
    verifier = integrity.ManifestVerifier(manifest, key.public_key())
    with pytest.raises(integrity.IntegrityError, match="'files' of type list"):
        verifier.verify(artefact)
