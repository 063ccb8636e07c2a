"""Read the Chrome traces that ``torch.profiler`` wrote per rank: time per step, compute and communication."""

from __future__ import annotations

import json
import re
from pathlib import Path

_STEP = re.compile(r"ProfilerStep#(\d+)")
# Names of collective-communication spans in PyTorch 2.x traces: gloo and
# NCCL record their all-reduce kernels or annotations under these prefixes.
_COMM_PREFIXES = ("gloo:", "nccl:", "ncclDevKernel", "ncclKernel")


def load_events(path: str | Path) -> list[dict]:
    """Return the complete ("X") events of a Chrome trace file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"trace {path} not found; run the ddp worker with --profile-dir first")
    trace = json.loads(path.read_text())
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [event for event in events if event.get("ph") == "X" and "dur" in event]


def step_breakdown(path: str | Path) -> list[dict]:
    """Return one row per profiled step: step, step_ms, comm_ms, compute_ms.

    ``comm_ms`` is the time covered by communication spans inside the step
    window (overlaps merged). ``compute_ms`` is the rest of the step, so time
    in which backward overlaps with all-reduce counts as communication.
    """
    events = load_events(path)
    steps = [(int(m.group(1)), e) for e in events if (m := _STEP.fullmatch(e["name"]))]
    comms = sorted(
        (e["ts"], e["ts"] + e["dur"]) for e in events if e["name"].startswith(_COMM_PREFIXES)
    )
    rows = []
    for number, step in sorted(steps):
        start, end = step["ts"], step["ts"] + step["dur"]
        covered, cursor = 0.0, start
        for comm_start, comm_end in comms:
            lo, hi = max(comm_start, cursor), min(comm_end, end)
            if hi > lo:
                covered += hi - lo
                cursor = hi
        step_ms = step["dur"] / 1000
        comm_ms = covered / 1000
        rows.append({"step": number, "step_ms": step_ms, "comm_ms": comm_ms, "compute_ms": step_ms - comm_ms})
    if not rows:
        raise ValueError(f"trace {path} contains no ProfilerStep spans; was the profiler stepped?")
    return rows
