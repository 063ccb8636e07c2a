"""Start a worker module under torchrun from Python and collect rank 0's results."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

WORKER_MODULES = ("ddp", "local_sgd", "sharding", "tuning")

# Output lines of torchrun and Python that differ from run to run and say
# nothing about the training (banner, OMP notice, elastic agent logs).
_NOISE_MARKERS = ("*****", "OMP_NUM_THREADS", "torch.distributed.elastic", "Setting OMP")


@dataclass
class WorkerRun:
    """A finished torchrun launch: the command, exit status, output and rank 0's JSON."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    results: dict = field(default_factory=dict)

    def rank0_lines(self) -> list[str]:
        """Return rank 0's output lines without torchrun's banner and log noise."""
        return [
            line for line in self.stdout.splitlines()
            if line.strip() and not any(marker in line for marker in _NOISE_MARKERS)
        ]


def _command_args(args: Sequence[str]) -> list[str]:
    """Convert worker arguments to strings. A bare string is rejected because it would split into characters."""
    if isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple)):
        raise TypeError(
            f"args must be a list or tuple of strings, got {args!r}. "
            "Write ['--epochs', '1'] or shlex.split('--epochs 1')"
        )
    for index, arg in enumerate(args):
        if isinstance(arg, bool) or not isinstance(arg, (str, os.PathLike, int, float)):
            raise TypeError(
                f"args[{index}] must be a string, path or number, got {arg!r} ({type(arg).__name__})"
            )
    return [os.fspath(arg) if isinstance(arg, os.PathLike) else str(arg) for arg in args]


def torchrun_command(
    module: str,
    args: Sequence[str] = (),
    nproc: int = 2,
    max_restarts: int = 0,
    rank0_only: bool = True,
) -> list[str]:
    """Return the command line that starts ``helpers.distributed.<module>`` on ``nproc`` local processes.

    It calls torchrun as ``sys.executable -m torch.distributed.run`` so that it
    works whether or not the virtual environment is on PATH. ``args`` is a
    list or tuple of strings, and paths and numbers in it are converted.
    """
    if module not in WORKER_MODULES:
        raise ValueError(f"unknown worker module {module!r}; expected one of {WORKER_MODULES}")
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a positive integer, got {nproc!r}")
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ValueError(f"max_restarts must be a non-negative integer, got {max_restarts!r}")
    args = _command_args(args)
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--standalone", f"--nproc_per_node={nproc}", f"--max-restarts={max_restarts}",
    ]
    if rank0_only:
        command.append("--local-ranks-filter=0")
    return [*command, "-m", f"helpers.distributed.{module}", *args]


def run_workers(
    module: str,
    args: Sequence[str] = (),
    nproc: int = 2,
    max_restarts: int = 0,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 300,
    rank0_only: bool = True,
    check: bool = True,
    threads_per_process: int = 1,
) -> WorkerRun:
    """Run a worker module under torchrun and return its output and rank 0's JSON results.

    ``env`` adds environment variables (for example fault injection) to this
    process's environment. Each rank runs ``threads_per_process`` intra-op
    threads (``OMP_NUM_THREADS``). The run is killed after ``timeout_s`` seconds.
    With ``check`` a non-zero exit raises ``RuntimeError`` carrying the
    output's tail.
    """
    if isinstance(threads_per_process, bool) or not isinstance(threads_per_process, int) or threads_per_process < 1:
        raise ValueError(f"threads_per_process must be a positive integer, got {threads_per_process!r}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < math.inf:
        raise ValueError(f"timeout_s must be a finite number of seconds above zero, got {timeout_s!r}")
    args = _command_args(args)
    with tempfile.TemporaryDirectory(prefix="torchrun-") as tmp:
        out = Path(tmp) / "results.json"
        command = torchrun_command(module, [*args, "--out", str(out)], nproc, max_restarts, rank0_only)
        # An explicit thread count per rank: ranks that each start one
        # thread per core oversubscribe a shared machine badly.
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads_per_process), **(env or {})}
        completed = subprocess.run(
            command, capture_output=True, text=True, env=child_env, timeout=timeout_s,
        )
        results = json.loads(out.read_text()) if out.exists() else {}
    run = WorkerRun(command, completed.returncode, completed.stdout, completed.stderr, results)
    if check and (completed.returncode != 0 or not results):
        tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-30:])
        raise RuntimeError(f"torchrun {module} exited with status {completed.returncode}:\n{tail}")
    return run
