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
    """Return the complete ("X") events of a Chrome trace file.

    The file is either an object with a ``traceEvents`` list (what
    ``torch.profiler`` exports) or a bare list of events. Anything else
    raises ValueError naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"trace {path} not found; run the ddp worker with --profile-dir first")
    try:
        trace = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"trace {path} is not valid JSON ({error}). Pass a file written by torch.profiler") from None
    events = trace.get("traceEvents") if isinstance(trace, dict) else trace
    if not isinstance(events, list):
        raise ValueError(
            f"trace {path} is not a Chrome trace, which is an object with a 'traceEvents' list "
            "or a list of events. Pass a file written by torch.profiler"
        )
    complete = []
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            raise ValueError(f"trace {path}: event {index} is {event!r}, not a JSON object")
        if event.get("ph") != "X" or "dur" not in event:
            continue
        has_fields = isinstance(event.get("name"), str) and _is_number(event.get("ts")) and _is_number(event["dur"])
        if not has_fields:
            raise ValueError(
                f"trace {path}: complete event {index} needs a string 'name' and numeric 'ts' and 'dur', got {event!r}"
            )
        complete.append(event)
    return complete


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
