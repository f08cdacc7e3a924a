"""The tier's Serve deployment: one ``core.runtimes`` classifier per replica, fed by
``@serve.batch`` from the requests of all edge servers.

A request is one edge batch: ``(k, 48, 48, 1)`` crops, uint8 or float32 (0..255); the answer
is ``(k, 7)`` float32 probabilities in ``LABELS`` order, exactly what the same model gives in
the embedded server. ``@serve.batch`` counts requests: a model call takes at most
``max_batch`` requests, or what has arrived ``max_wait_ms`` after the first; one batch runs at a
time per replica (the runtime is serial), in a worker thread so the replica keeps accepting
requests meanwhile. The runtime itself splits a call above ``core.runtimes.MAX_CHUNK`` faces.

This module imports Ray at import time; only ``cluster.tier.deploy`` (and Ray's workers)
import it. It does not import ``cluster.tier`` (no import cycle): ``build`` gets its settings.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import numpy as np
import ray
from ray import serve

from core.runtimes import MAX_CHUNK, load_classifier


class FaceClassifier:
    """A replica: the model loaded with the same backend choice as the embedded server."""

    def __init__(self, model_dir: str, backend: str, threads: int, max_batch: int,
                 max_wait_ms: float) -> None:
        # max_batch=MAX_CHUNK: a GPU replica pre-compiles every batch size a call can have.
        self.clf = load_classifier(model_dir, backend, threads=threads, max_batch=MAX_CHUNK)
        batch: Any = self.classify  # serve.batch's wrapper carries the setters
        batch.set_max_batch_size(max_batch)
        batch.set_batch_wait_timeout_s(max_wait_ms / 1000.0)
        #: Requests, model calls and faces served by this replica (``describe``).
        self.requests = self.batches = self.faces = 0

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def classify(self, requests: list[np.ndarray]) -> list[np.ndarray]:
        """One model call for the crops of several requests; each gets its own rows back."""
        x = np.concatenate([np.asarray(r, np.float32) for r in requests])
        y = await asyncio.to_thread(self.clf.predict_batch, x)
        self.requests += len(requests)
        self.batches += 1
        self.faces += len(x)
        return np.split(np.asarray(y, np.float32), np.cumsum([len(r) for r in requests])[:-1])

    async def __call__(self, crops: np.ndarray) -> np.ndarray:
        """``(k, 48, 48, 1)`` crops -> ``(k, 7)`` probabilities (batched with other calls)."""
        return await self.classify(crops)

    def describe(self) -> dict[str, Any]:
        """Model, runtime, device and placement of this replica (for status and /healthz)."""
        ctx = ray.get_runtime_context()
        return {"model": self.clf.name, "runtime": self.clf.backend,
                "device": getattr(self.clf, "device", "CPU"),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "node_id": ctx.get_node_id(), "pid": os.getpid(),
                "requests": self.requests, "batches": self.batches, "faces": self.faces,
                "cpu_s": time.process_time()}


def build(name: str, options: dict[str, Any], *args: Any) -> Any:
    """The Serve application: deployment ``name`` with ``serve.deployment`` ``options``,
    its replicas constructed with ``args`` (see :class:`FaceClassifier`)."""
    return serve.deployment(name=name, **options)(FaceClassifier).bind(*args)
