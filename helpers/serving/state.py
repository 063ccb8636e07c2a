"""The server's model state: production, canary and pinned versions in memory.

Every change loads and verifies the new model first and only then swaps a
reference, so requests in flight finish on the model they started with and
a refused artefact leaves the served models as they were.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from typing import Any

import torch

from helpers import zoo
from helpers.device import pick_device

from .batching import DynamicBatcher, ServedModel, forward_probabilities, model_executor
from .explain import attribute
from .registry import ModelRegistry, RegistryError
from .settings import ServingSettings

log = logging.getLogger("helpers.serving.state")

# Versions requested by id stay loaded; the oldest is dropped beyond this many.
_PINNED_CACHE_SIZE = 8


def zoo_architecture(kind: str) -> dict[str, Any]:
    """Return the registry architecture of ``helpers.zoo``'s model ``kind``."""
    return {"kind": kind, "config": {}}


class ServingState:
    """Loaded models, the batcher and the registry of one app instance."""

    def __init__(self, settings: ServingSettings):
        self.settings = settings
        self.device = pick_device(settings.device)
        self.registry = ModelRegistry(settings.resolved_registry_dir(), verifier=settings.verifier)
        self.executor = model_executor()
        self.batcher = DynamicBatcher(self.executor, settings.max_batch_size, settings.max_wait_ms)
        self.production: ServedModel | None = None
        self.canary: ServedModel | None = None
        self.canary_fraction = 0.0
        self._pinned: OrderedDict[str, ServedModel] = OrderedDict()
        self._change_lock = asyncio.Lock()

    async def _run(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    def _load(self, version: str) -> ServedModel:
        entry, model = self.registry.load(version, self.device)
        return ServedModel(entry.version, model, entry.metadata, self.device)

    def _bootstrap(self) -> None:
        for kind in ("mlp", "cnn"):
            model = zoo.trained_model(kind)
            self.registry.register(
                model, zoo_architecture(kind), name=f"zoo-{kind}", data={"train": "MNIST train (60,000)"}
            )
        chosen = next(v for v in self.registry.versions() if v.metadata["name"] == f"zoo-{self.settings.bootstrap_model}")
        self.registry.promote(chosen.version)

    async def start(self) -> None:
        """Load the production (and canary) version named in the registry state."""
        state = self.registry.state()
        if state["production"] is None and self.settings.bootstrap:
            await self._run(self._bootstrap)
            state = self.registry.state()
        if state["production"] is not None:
            self.production = await self._run(self._load, state["production"])
            log.info("serving production model %s", self.production.version[:12])
        else:
            log.warning("registry %s has no production model; predict returns 503", self.registry.root)
        if state.get("canary"):
            self.canary = await self._run(self._load, state["canary"]["version"])
            self.canary_fraction = state["canary"]["fraction"]

    async def stop(self) -> None:
        """Fail waiting requests and stop the model thread."""
        await self.batcher.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def resolve(self, requested: str | None, request_id: str) -> ServedModel:
        """Return the model for a request: a pinned version, the canary or production.

        The canary split hashes the request id, so a client that repeats an
        id gets the same model each time.
        """
        if requested:
            version = self.registry.resolve(requested)
            for served in (self.production, self.canary):
                if served is not None and served.version == version:
                    return served
            if version not in self._pinned:
                self._pinned[version] = await self._run(self._load, version)
                while len(self._pinned) > _PINNED_CACHE_SIZE:
                    self._pinned.popitem(last=False)
            self._pinned.move_to_end(version)
            return self._pinned[version]
        if self.production is None:
            raise RegistryError("no model is in production; register and promote one first")
        if self.canary is not None:
            bucket = int(hashlib.sha256(request_id.encode()).hexdigest()[:8], 16) / 2**32
            if bucket < self.canary_fraction:
                return self.canary
        return self.production

    async def predict(self, served: ServedModel, pixels: torch.Tensor) -> torch.Tensor:
        """Return probabilities [N, 10], batched with other requests when enabled."""
        if self.settings.batching:
            return await self.batcher.submit(served, pixels)
        return await self._run(forward_probabilities, served, pixels)

    async def explain(self, served: ServedModel, pixels: torch.Tensor, target: int | None, method: str):
        """Return (attribution [28, 28], probabilities [10], target) for one image.

        With ``target`` None the attribution explains the predicted class.
        """

        def work():
            probabilities = forward_probabilities(served, pixels)[0]
            chosen = int(probabilities.argmax()) if target is None else target
            scores = attribute(served.model, pixels, chosen, method, self.settings.explain_steps)
            return scores[0, 0], probabilities, chosen

        return await self._run(work)

    async def promote(self, version: str) -> ServedModel:
        """Load, verify and swap in ``version`` as production."""
        async with self._change_lock:
            served = await self._run(self._load, version)
            self.registry.promote(served.version)
            self.production = served
            if self.canary is not None and self.canary.version == served.version:
                self.canary, self.canary_fraction = None, 0.0
            log.info("promoted model %s to production", served.version[:12])
            return served

    async def rollback(self) -> ServedModel:
        """Put the previous production version back and drop the canary."""
        async with self._change_lock:
            history = self.registry.state()["history"]
            if not history:
                raise RegistryError("no earlier production version to roll back to")
            served = await self._run(self._load, history[-1])
            self.registry.rollback()
            self.production = served
            self.canary, self.canary_fraction = None, 0.0
            log.info("rolled back production to model %s", served.version[:12])
            return served

    async def set_canary(self, version: str | None, fraction: float) -> ServedModel | None:
        """Route ``fraction`` of unpinned requests to ``version``; None removes the canary."""
        async with self._change_lock:
            if version is None:
                self.registry.set_canary(None)
                self.canary, self.canary_fraction = None, 0.0
                return None
            served = await self._run(self._load, version)
            self.registry.set_canary(served.version, fraction)
            self.canary, self.canary_fraction = served, float(fraction)
            log.info("canary model %s receives %.0f%% of requests", served.version[:12], 100 * fraction)
            return served
