"""Export to ``torch.export`` and ONNX, with parity and latency checks."""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

MAX_EXPORT_BATCH = 4096


def _batch_dim() -> torch.export.Dim:
    return torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)


def export_program(model: nn.Module, path: str | Path) -> Path:
    """Save ``model`` as a ``torch.export`` program (``.pt2``) with a dynamic batch size."""
    path = Path(path)
    example = torch.zeros(2, 1, 28, 28, device=next(model.parameters()).device)
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: _batch_dim()},))
    torch.export.save(program, str(path))
    return path


def load_program(path: str | Path) -> nn.Module:
    """Load a ``.pt2`` file written by ``export_program`` as a callable module."""
    return torch.export.load(str(path)).module()


def export_onnx(model: nn.Module, path: str | Path) -> Path:
    """Save ``model`` as ONNX (opset chosen by torch) with a dynamic batch size."""
    path = Path(path)
    model = model.eval().cpu()
    example = torch.zeros(2, 1, 28, 28)
    # The exporter prints progress lines to stdout; they carry no information
    # a caller needs, so they are captured and dropped.
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=({0: _batch_dim()},),
                          input_names=["pixels"], output_names=["logits"])
    return path


class OnnxModel:
    """An ONNX file run by onnxruntime: takes and returns float32 NumPy arrays."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(inputs, dtype=np.float32)})[0]


def max_abs_difference(reference: torch.Tensor, other: torch.Tensor | np.ndarray) -> float:
    """Return the largest absolute elementwise difference of two outputs."""
    other = torch.as_tensor(np.asarray(other)) if not isinstance(other, torch.Tensor) else other
    return float((reference.detach().cpu().float() - other.detach().cpu().float()).abs().max())


def median_latency_ms(function: Callable[[], object], repeats: int = 50, warmup: int = 5) -> float:
    """Return the median wall time of ``function()`` in milliseconds."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)
