"""The on-disk model registry: versions, metadata, production pointer, integrity."""

import json

import pytest
import torch

from helpers import models
from helpers.serving.registry import ModelRegistry, RegistryError, VersionNotFoundError, file_sha256

MLP = {"kind": "mlp", "config": {"hidden": [16], "dropout": 0.0}}


def small_mlp(seed):
    torch.manual_seed(seed)
    return models.MLP(hidden=(16,), dropout=0.0)


@pytest.fixture()
def registry(tmp_path):
    return ModelRegistry(tmp_path / "registry")


def test_version_is_file_sha256(registry):
    entry = registry.register(small_mlp(0), MLP, name="a")
    assert entry.version == file_sha256(entry.path)
    assert entry.path.name == f"{entry.version}.safetensors"


def test_metadata_stored(registry):
    parent = registry.register(small_mlp(0), MLP, name="a")
    child = registry.register(small_mlp(1), MLP, name="b", metrics={"acc": 0.9}, data="subset", parent=parent.version[:8])
    stored = json.loads((registry.artifacts / f"{child.version}.json").read_text())
    assert stored["metrics"] == {"acc": 0.9}
    assert stored["data"] == "subset"
    assert stored["parent"] == parent.version
    assert stored["architecture"] == MLP


def test_same_weights_same_version(registry):
    first = registry.register(small_mlp(0), MLP, name="a")
    second = registry.register(small_mlp(0), MLP, name="again")
    assert second.version == first.version
    assert len(registry.versions()) == 1


def test_load_roundtrip(registry):
    model = small_mlp(0).eval()
    entry = registry.register(model, MLP)
    _, loaded = registry.load(entry.version)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))


def test_corrupted_artifact_refused(registry):
    entry = registry.register(small_mlp(0), MLP)
    data = bytearray(entry.path.read_bytes())
    data[-1] ^= 0xFF
    entry.path.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="corrupted"):
        registry.load(entry.version)


def test_verifier_refusal_raises(tmp_path):
    class Refuse:
        def verify(self, path):
            raise PermissionError("unsigned")

    registry = ModelRegistry(tmp_path / "registry", verifier=Refuse())
    entry = registry.register(small_mlp(0), MLP)
    with pytest.raises(RegistryError, match="unsigned"):
        registry.load(entry.version)


def test_promote_and_rollback(registry):
    a = registry.register(small_mlp(0), MLP)
    b = registry.register(small_mlp(1), MLP)
    registry.promote(a.version)
    registry.promote(b.version)
    assert registry.state()["production"] == b.version
    assert registry.rollback()["production"] == a.version


def test_rollback_without_history(registry):
    registry.promote(registry.register(small_mlp(0), MLP).version)
    with pytest.raises(RegistryError, match="no earlier production"):
        registry.rollback()


def test_canary_set_and_cleared_by_promote(registry):
    a = registry.register(small_mlp(0), MLP)
    b = registry.register(small_mlp(1), MLP)
    registry.promote(a.version)
    assert registry.set_canary(b.version, 0.25)["canary"] == {"version": b.version, "fraction": 0.25}
    assert registry.promote(b.version)["canary"] is None


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1])
def test_canary_fraction_checked(registry, fraction):
    entry = registry.register(small_mlp(0), MLP)
    with pytest.raises(ValueError, match="fraction"):
        registry.set_canary(entry.version, fraction)


@pytest.mark.parametrize("version", ["", "xyz123", "abc", "0" * 64])
def test_bad_version_not_found(registry, version):
    with pytest.raises(VersionNotFoundError):
        registry.resolve(version)


def test_unknown_architecture_rejected(registry):
    with pytest.raises(RegistryError, match="unknown architecture"):
        registry.register(small_mlp(0), {"kind": "resnet"})


def test_wrong_config_rejected(registry):
    with pytest.raises(RegistryError, match="does not hold valid weights"):
        registry.register(small_mlp(0), {"kind": "mlp", "config": {"hidden": [32]}})
    assert registry.versions() == []


def test_huge_architecture_rejected(registry):
    with pytest.raises(RegistryError, match="limit"):
        registry.register(small_mlp(0), {"kind": "mlp", "config": {"hidden": [100_000, 100_000]}})


def test_load_bad_stored_config(registry):
    entry = registry.register(small_mlp(0), MLP)
    meta_path = registry.artifacts / f"{entry.version}.json"
    stored = json.loads(meta_path.read_text())
    stored["architecture"] = {"kind": "mlp", "config": {"in_features": -1}}
    meta_path.write_text(json.dumps(stored))
    with pytest.raises(RegistryError, match="in_features"):
        registry.load(entry.version)


def test_unserialisable_metadata_leaves_nothing(registry):
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        registry.register(small_mlp(0), MLP, metrics={"a": object()})
    assert list(registry.artifacts.iterdir()) == []


def test_corrupted_state_named(registry):
    registry._state_path.write_text("{broken")
    with pytest.raises(RegistryError, match="state.json"):
        registry.state()


def test_state_not_object_named(registry):
    registry._state_path.write_text("[]")
    with pytest.raises(RegistryError, match="state.json"):
        registry.state()


def test_corrupted_metadata_named(registry):
    entry = registry.register(small_mlp(0), MLP)
    (registry.artifacts / f"{entry.version}.json").write_text("{broken")
    with pytest.raises(RegistryError, match=f"{entry.version}.json"):
        registry.versions()
    with pytest.raises(RegistryError, match=f"{entry.version}.json"):
        registry.get(entry.version)
