"""Untrusted models in a child process with time and memory limits."""

import pytest
import torch

from helpers import models
from helpers.security import isolation

INPUTS = torch.zeros(4, 1, 28, 28)


def test_honest_model_returns_outputs(tmp_path):
    model = models.MLP(hidden=(16,)).eval()
    path = isolation.write_untrusted_model(tmp_path / "honest.pt", "honest", model)
    result = isolation.run_isolated(path, INPUTS, timeout_s=20)
    assert result.status == "ok", result.detail
    with torch.no_grad():
        assert torch.allclose(result.outputs, model(INPUTS), atol=1e-6)


def test_hanging_model_is_killed(tmp_path):
    path = isolation.write_untrusted_model(tmp_path / "hang.pt", "hang")
    result = isolation.run_isolated(path, INPUTS, timeout_s=2)
    assert result.status == "timeout"
    assert result.outputs is None


def test_memory_hog_is_stopped(tmp_path):
    path = isolation.write_untrusted_model(tmp_path / "memory.pt", "memory")
    result = isolation.run_isolated(path, INPUTS, timeout_s=20, memory_mb=256)
    assert result.status == "memory", result.detail


def test_child_sees_no_parent_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_SIGNING_KEY", "do-not-leak")
    path = tmp_path / "probe.pt"
    torch.save(EnvProbe(), path)
    result = isolation.run_isolated(path, INPUTS, timeout_s=20)
    assert result.status == "error"
    assert "MODEL_SIGNING_KEY" not in result.detail
    assert "env keys:" in result.detail


class EnvProbe:
    """Unpickles to an error whose message lists the child's environment variables."""

    def __reduce__(self):
        # exec is a builtin, so the child can unpickle this without our test module.
        return (exec, ("import os; raise RuntimeError('env keys: ' + ','.join(sorted(os.environ)))",))


def test_missing_model_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        isolation.run_isolated(tmp_path / "absent.pt", INPUTS)


@pytest.mark.parametrize("timeout_s", [float("inf"), float("nan"), 0.0])
def test_rejects_bad_timeout(tmp_path, timeout_s):
    with pytest.raises(ValueError, match="timeout_s"):
        isolation.run_isolated(tmp_path / "absent.pt", INPUTS, timeout_s=timeout_s)
