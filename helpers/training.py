"""Training and evaluation: a ``fit`` loop with history, AMP and checkpoints."""

from __future__ import annotations

import math
import os
import pickle
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

# Runs with at least this many optimizer steps show a progress bar by default.
PROGRESS_MIN_STEPS = 2000


@dataclass
class EpochRecord:
    """One row of a training history."""

    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    seconds: float
    samples_per_s: float


class History:
    """Per-epoch records of a ``fit`` run."""

    def __init__(self, rows: Iterable[EpochRecord] = ()):
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]

    @property
    def last(self) -> EpochRecord:
        if not self.rows:
            raise IndexError("history is empty: fit has not finished an epoch")
        return self.rows[-1]

    def column(self, name: str) -> list:
        return [getattr(row, name) for row in self.rows]

    def total_seconds(self) -> float:
        return sum(row.seconds for row in self.rows)

    def time_to_accuracy(self, target: float) -> float | None:
        """Return wall seconds until test accuracy first reached ``target``, or None."""
        elapsed = 0.0
        for row in self.rows:
            elapsed += row.seconds
            if row.test_acc >= target:
                return elapsed
        return None

    def epochs_to_accuracy(self, target: float) -> int | None:
        """Return the first epoch whose test accuracy reached ``target``, or None."""
        for row in self.rows:
            if row.test_acc >= target:
                return row.epoch
        return None

    def to_frame(self):
        """Return the history as a pandas DataFrame indexed by epoch."""
        import pandas as pd

        return pd.DataFrame([asdict(row) for row in self.rows]).set_index("epoch")

    def to_dicts(self) -> list[dict]:
        return [asdict(row) for row in self.rows]


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """Return the autocast dtype for ``device``, or None when AMP is off.

    CUDA GPUs with compute capability 8.0 or newer support bf16 in hardware;
    older ones (such as the T4, 7.5) get fp16 with a gradient scaler. CPU and
    MPS train in fp32 here.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device | str | None = None) -> tuple[float, float]:
    """Return (mean cross-entropy loss, accuracy) of ``model`` on ``loader``."""
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        logits = model(images).float()
        total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
        count += len(labels)
    model.train(was_training)
    if count == 0:
        raise ValueError("the evaluation loader yielded no samples")
    return total_loss / count, correct / count


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (predicted labels, true labels) over ``loader`` as CPU tensors."""
    device = torch.device(device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    predictions, targets = [], []
    for images, labels in loader:
        predictions.append(model(images.to(device)).argmax(1).cpu())
        targets.append(labels.cpu())
    model.train(was_training)
    return torch.cat(predictions), torch.cat(targets)


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` with ``torch.save`` atomically: a temp file, then rename.

    A crash while writing leaves the previous checkpoint intact.
    """
    if not isinstance(state, dict):
        raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by ``save_checkpoint`` (tensors and plain data only)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def _loader_state(loader) -> dict | None:
    if hasattr(loader, "state_dict"):
        return loader.state_dict()
    generator = getattr(loader, "generator", None)
    if generator is not None:
        return {"generator": generator.get_state()}
    return None


def _load_loader_state(loader, state: dict | None) -> None:
    if state is None:
        return
    if hasattr(loader, "load_state_dict"):
        loader.load_state_dict(state)
    elif getattr(loader, "generator", None) is not None:
        loader.generator.set_state(state["generator"])


def _format_row(row: EpochRecord) -> str:
    return (
        f"{row.epoch:>5d} {row.train_loss:>10.4f} {row.train_acc:>9.2%} "
        f"{row.test_loss:>9.4f} {row.test_acc:>8.2%} {row.seconds:>7.2f} {row.samples_per_s:>10,.0f}"
    )


LOG_HEADER = f"{'epoch':>5} {'train_loss':>10} {'train_acc':>9} {'test_loss':>9} {'test_acc':>8} {'seconds':>7} {'samples/s':>10}"


def fit(
    model: nn.Module,
    train_loader,
    test_loader,
    epochs: int,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    scheduler=None,
    device: torch.device | str | None = None,
    amp: bool | str = "auto",
    checkpoint: str | Path | None = None,
    stop_at_accuracy: float | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
) -> History:
    """Train ``model`` for ``epochs`` and evaluate after each epoch.

    * ``optimizer`` defaults to Adam with learning rate ``lr``; ``scheduler``
      (optional) is stepped after every batch.
    * ``amp="auto"`` uses autocast on CUDA (see ``amp_dtype``); False turns it off.
    * ``checkpoint``: after each epoch the full training state (model,
      optimizer, scheduler, RNG and loader state, history) is written there
      atomically. If the file exists, training resumes after its epoch and
      reaches the same weights as an uninterrupted run on the same machine.
    * ``stop_at_accuracy`` ends training once test accuracy reaches it.
    * ``progress``: a tqdm bar per epoch; None shows it for runs of at least
      ``PROGRESS_MIN_STEPS`` steps. ``log`` receives one line per epoch.

    Returns the ``History`` of all epochs, including resumed ones.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if stop_at_accuracy is not None and not 0.0 < stop_at_accuracy <= 1.0:
        raise ValueError(f"stop_at_accuracy must be in (0, 1], got {stop_at_accuracy!r}")
    if len(train_loader) == 0:
        raise ValueError("the training loader yields no batches; check the data set and batch size")
    device = torch.device(device) if device is not None else _model_device(model)
    model.to(device)
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    autocast_dtype = amp_dtype(device) if amp else None
    scaler = torch.amp.GradScaler("cuda") if autocast_dtype == torch.float16 else None
    autocast = (
        (lambda: torch.autocast(device.type, dtype=autocast_dtype))
        if autocast_dtype is not None
        else nullcontext
    )

    history = History()
    start_epoch = 1
    if checkpoint is not None and Path(checkpoint).exists():
        try:
            state = load_checkpoint(checkpoint, map_location=device)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError, pickle.UnpicklingError, EOFError) as error:
            raise ValueError(
                f"cannot resume from {checkpoint}: it is not a checkpoint of this model and "
                f"optimizer ({error.__class__.__name__}: {str(error)[:200]}). "
                "Delete it or pass another checkpoint path."
            ) from error
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        _load_loader_state(train_loader, state.get("train_loader"))
        history = History(EpochRecord(**row) for row in state["history"])
        start_epoch = state["epoch"] + 1
        if log is not None:
            log(f"resumed from {checkpoint} after epoch {state['epoch']}")

    if progress is None:
        progress = len(train_loader) * epochs >= PROGRESS_MIN_STEPS
    if log is not None and start_epoch <= epochs:
        log(LOG_HEADER)

    for epoch in range(start_epoch, epochs + 1):
        model.train()
        _synchronize(device)
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        batches = tqdm(
            train_loader,
            desc=f"epoch {epoch}/{epochs}",
            leave=False,
            disable=not progress,
            file=sys.stderr,
            mininterval=1.0,
        )
        for images, labels in batches:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                logits = model(images)
                loss = F.cross_entropy(logits.float(), labels)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.detach() * len(labels)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
        _synchronize(device)
        train_seconds = time.perf_counter() - started
        test_loss, test_acc = evaluate(model, test_loader, device)
        _synchronize(device)
        train_loss = loss_sum.item() / seen
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"training loss became {train_loss} in epoch {epoch}; lower the learning rate"
            )
        row = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            train_acc=correct.item() / seen,
            test_loss=test_loss,
            test_acc=test_acc,
            seconds=time.perf_counter() - started,
            samples_per_s=seen / train_seconds,
        )
        history.rows.append(row)
        if log is not None:
            log(_format_row(row))

        if checkpoint is not None:
            save_checkpoint(
                checkpoint,
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "rng_cpu": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "train_loader": _loader_state(train_loader),
                    "history": history.to_dicts(),
                },
            )
        if stop_at_accuracy is not None and test_acc >= stop_at_accuracy:
            break
    return history
