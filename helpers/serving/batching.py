"""Forward passes on one worker thread, with optional dynamic batching.

All model work (forward passes, attributions) runs on a single dedicated
thread, so the event loop stays free to parse requests and two forward passes
never compete for the same cores. ``DynamicBatcher`` groups the images of
concurrent requests into one forward pass: the first waiting request opens a
window of at most ``max_wait_ms``; the batch closes when the window ends or
``max_batch_size`` images are waiting.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .inputs import normalize

log = logging.getLogger("helpers.serving.batching")


@dataclass(eq=False)
class ServedModel:
    """A loaded model version ready to serve."""

    version: str
    model: nn.Module
    metadata: dict[str, Any] = field(default_factory=dict)
    device: torch.device = torch.device("cpu")


def forward_probabilities(served: ServedModel, pixels: torch.Tensor) -> torch.Tensor:
    """Return softmax probabilities [N, 10] on the CPU for [N, 1, 28, 28] pixels in [0, 1]."""
    with torch.inference_mode():
        logits = served.model(normalize(pixels).to(served.device))
        return torch.softmax(logits.float(), dim=1).cpu()


def model_executor() -> ThreadPoolExecutor:
    """Return the single-thread executor that runs all model work."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-worker")


@dataclass(eq=False)
class _Pending:
    served: ServedModel
    pixels: torch.Tensor
    future: asyncio.Future


class DynamicBatcher:
    """Groups concurrent requests into bounded batches; one forward per group.

    Statistics: ``batches`` counts forward passes, ``images`` the images they
    carried, so ``images / batches`` is the mean batch size.
    """

    def __init__(self, executor: ThreadPoolExecutor, max_batch_size: int = 64, max_wait_ms: float = 2.0):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be non-negative, got {max_wait_ms}")
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.batches = 0
        self.images = 0
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_images = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, served: ServedModel, pixels: torch.Tensor) -> torch.Tensor:
        """Return probabilities [N, 10] for ``pixels`` once its batch has run."""
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="dynamic-batcher")
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(served, pixels, future))
        self._queued_images += pixels.shape[0]
        self._wakeup.set()
        return await future

    async def close(self) -> None:
        """Stop the worker and fail requests that are still waiting."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("server is shutting down"))
        self._queued_images = 0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = loop.time() + self.max_wait_s
            while self._queued_images < self.max_batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take_batch()
            try:
                await self._dispatch(batch)
            except Exception:  # a failed batch must not stop the worker
                log.exception("batch of %d requests failed", len(batch))

    def _take_batch(self) -> list[_Pending]:
        # A request larger than max_batch_size still runs, alone.
        batch = [self._queue.popleft()]
        count = batch[0].pixels.shape[0]
        while self._queue and count + self._queue[0].pixels.shape[0] <= self.max_batch_size:
            pending = self._queue.popleft()
            batch.append(pending)
            count += pending.pixels.shape[0]
        self._queued_images -= count
        return batch

    async def _dispatch(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        groups: dict[int, list[_Pending]] = {}
        for pending in batch:
            if not pending.future.done():  # the client may have gone away
                groups.setdefault(id(pending.served), []).append(pending)
        for members in groups.values():
            pixels = torch.cat([pending.pixels for pending in members])
            try:
                probabilities = await loop.run_in_executor(
                    self.executor, forward_probabilities, members[0].served, pixels
                )
            except Exception as error:
                for pending in members:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            self.batches += 1
            self.images += pixels.shape[0]
            start = 0
            for pending in members:
                count = pending.pixels.shape[0]
                if not pending.future.done():
                    pending.future.set_result(probabilities[start: start + count])
                start += count
