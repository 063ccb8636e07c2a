"""Run an untrusted model in a child process with a time and a memory limit.

The child (``sandbox_worker``) starts with a near-empty environment, a fresh
working folder and no open files of the parent, imports torch, caps its own
address space (``RLIMIT_AS``) and CPU seconds, and only then unpickles the
model. The parent waits at most ``timeout_s`` seconds for the result, kills
the whole process group otherwise, and reads the outputs back as
safetensors, so nothing the child writes is unpickled by the parent.

NOTE: this is process isolation, not a sandbox. The child runs as the same
user and can read any file that user can read (key files included, given
their paths); a root child can raise its own limits. Production
isolation needs another user, namespaces or seccomp, a container or a
micro-VM (gVisor, Firecracker).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_MEMORY = 3


@dataclass
class IsolationResult:
    """Outcome of one isolated run; ``status`` is "ok", "timeout", "memory" or "error"."""

    status: str
    seconds: float
    detail: str = ""
    outputs: torch.Tensor | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when the model ran and returned outputs."""
        return self.status == "ok"


class _Untrusted:
    """Pickle payloads that misbehave while being loaded."""

    def __init__(self, behaviour: str):
        self.behaviour = behaviour

    def __reduce__(self):
        if self.behaviour == "hang":
            return (time.sleep, (3600,))
        # 2**31 float32 ones: 8 GiB that the allocator must really fill.
        return (torch.ones, ((2**31,),))


def write_untrusted_model(path: str | Path, behaviour: str, model: nn.Module | None = None) -> Path:
    """Write a whole-model pickle that is "honest", or that will "hang" or eat "memory" on load.

    An honest file is ``torch.save(model)``; the others hold a payload that
    sleeps for an hour or allocates 8 GiB. Load them only through
    ``run_isolated``.
    """
    path = Path(path)
    if behaviour == "honest":
        if model is None:
            raise ValueError("an honest untrusted model needs the model to pickle")
        torch.save(model.cpu(), path)
    elif behaviour in ("hang", "memory"):
        torch.save(_Untrusted(behaviour), path)
    else:
        raise ValueError(f"unknown behaviour {behaviour!r}; expected 'honest', 'hang' or 'memory'")
    return path


def _read_line_with_timeout(stream, timeout_s: float) -> str | None:
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline().decode("utf-8", "replace")), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return result[0] if result else None


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def run_isolated(
    model_path: str | Path,
    inputs: torch.Tensor,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    startup_timeout_s: float = 120.0,
) -> IsolationResult:
    """Load ``model_path`` (a whole-model pickle) in a child process and return ``model(inputs)``.

    ``timeout_s`` bounds loading plus the forward pass, counted from the
    moment the child has imported torch (``startup_timeout_s`` bounds that).
    ``memory_mb`` is the address space the child may add beyond what the
    interpreter and torch already use. Failures are returned, not raised, so
    a caller can report them and carry on.
    """
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise ValueError(f"timeout_s must be a positive finite number of seconds, got {timeout_s!r}")
    if not isinstance(memory_mb, int) or memory_mb < 64:
        raise ValueError(f"memory_mb must be an integer of at least 64, got {memory_mb!r}")
    model_path = Path(model_path).resolve()
    if not model_path.is_file():
        raise FileNotFoundError(f"untrusted model {model_path} not found")

    with tempfile.TemporaryDirectory(prefix="sandbox-") as folder:
        work = Path(folder)
        input_path, output_path = work / "inputs.safetensors", work / "outputs.safetensors"
        save_file({"inputs": inputs.detach().cpu().contiguous()}, str(input_path))
        # Only what Python needs: no credentials, tokens or key paths.
        env = {"PATH": os.defpath, "HOME": str(work), "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
        command = [
            sys.executable, "-I", "-m", "helpers.security.sandbox_worker",
            str(model_path), str(input_path), str(output_path), str(memory_mb), str(int(timeout_s) + 1),
        ]
        process = subprocess.Popen(
            command, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, close_fds=True, start_new_session=True,
        )
        try:
            ready = _read_line_with_timeout(process.stdout, startup_timeout_s)
            if ready is None or ready.strip() != "ready":
                _kill_group(process)
                detail = process.stderr.read().decode("utf-8", "replace")[-500:]
                return IsolationResult("error", 0.0, f"sandbox did not start: {detail or ready!r}")
            started = time.perf_counter()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                seconds = time.perf_counter() - started
                return IsolationResult("timeout", seconds, f"killed after {timeout_s:g} s without a result")
            seconds = time.perf_counter() - started
            stderr = process.stderr.read().decode("utf-8", "replace").strip()
            if process.returncode == EXIT_OK and output_path.exists():
                return IsolationResult("ok", seconds, "", load_file(str(output_path))["outputs"])
            if process.returncode == EXIT_MEMORY:
                return IsolationResult("memory", seconds, f"stopped at the {memory_mb} MiB memory limit: {stderr[-300:]}")
            if process.returncode is not None and process.returncode < 0:
                name = signal.Signals(-process.returncode).name
                return IsolationResult("error", seconds, f"killed by {name}")
            return IsolationResult("error", seconds, stderr[-500:] or f"exit code {process.returncode}")
        finally:
            if process.poll() is None:
                _kill_group(process)
            process.stdout.close()
            process.stderr.close()
