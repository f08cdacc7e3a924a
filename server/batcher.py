"""Dynamic batching of face crops across all sessions.

Timing rule: the batch task waits for the first request, then keeps collecting requests until
the batch holds ``max_batch_size`` faces or ``max_wait_ms`` has passed since that first request,
whichever comes first; it then runs the predictor once in the executor. A request's faces are
never split across batches (a request larger than ``max_batch_size`` runs alone). If the
predictor raises, or returns the wrong number of rows, every request of that batch fails with
the exception and the batcher carries on with the next batch. At most ``max_queue`` faces wait
(queued, not yet running); beyond that ``submit`` raises BusyError at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from server.errors import SHUTTING_DOWN, BusyError, CapacityError

log = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], np.ndarray]


class BatchError(RuntimeError):
    """The predictor returned something that does not match the batch."""


@dataclass
class _Request:
    x: np.ndarray
    future: asyncio.Future


class Batcher:
    """Collects ``submit`` calls into batches for one predictor running in ``executor``."""

    def __init__(self, predict: Predictor, executor: Executor | None,
                 max_batch_size: int = 16, max_wait_ms: float = 4.0,
                 on_batch: Callable[[int, float], None] | None = None,
                 max_queue: int = 1024) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self.predict = predict
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self.max_queue = max_queue
        #: Faces submitted and not yet taken into a running batch.
        self.queued = 0
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._pending: _Request | None = None

    def start(self) -> None:
        """Start the background batch task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """Cancel the batch task and fail whatever is still queued."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Wait without catching: a cancellation of the caller itself still propagates.
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                log.error("batcher task failed", exc_info=task.exception())
        leftovers = [self._pending] if self._pending else []
        self._pending = None
        while not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
        self.queued = 0
        for r in leftovers:
            if r is not None and not r.future.done():
                r.future.set_exception(RuntimeError(SHUTTING_DOWN))

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """Classify ``x`` (``(k, ...)``); returns the predictor's ``k`` output rows."""
        if len(x) == 0:
            return np.zeros((0,), np.float32)
        if self._task is None:
            raise RuntimeError("batcher is not running")
        if self.queued and self.queued + len(x) > self.max_queue:  # one big request may run
            raise BusyError("server busy: too many faces waiting for the classifier")
        fut = asyncio.get_running_loop().create_future()
        self.queued += len(x)
        self._queue.put_nowait(_Request(x, fut))
        return await fut

    async def _collect(self) -> list[_Request]:
        first = self._pending or await self._queue.get()
        self._pending = None
        batch, n = [first], len(first.x)
        deadline = time.monotonic() + self.max_wait_s
        while n < self.max_batch_size:
            try:
                nxt = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
            if n + len(nxt.x) > self.max_batch_size:
                self._pending = nxt  # starts the next batch
                break
            batch.append(nxt)
            n += len(nxt.x)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            self.queued -= sum(len(r.x) for r in batch)
            live = [r for r in batch if not r.future.done()]  # callers may have gone away
            if not live:
                continue
            x = np.concatenate([r.x for r in live])
            t0 = time.perf_counter()
            try:
                y = await loop.run_in_executor(self.executor, self.predict, x)
                if len(y) != len(x):
                    raise BatchError(f"predictor returned {len(y)} rows for {len(x)} inputs")
            except asyncio.CancelledError:
                for r in live:
                    if not r.future.done():
                        r.future.set_exception(RuntimeError(SHUTTING_DOWN))
                raise
            except Exception as exc:  # top of the task: fail the callers, keep serving
                if isinstance(exc, CapacityError):  # e.g. the remote tier: logged where raised
                    log.debug("batch of %d refused: %s", len(x), exc)
                else:
                    log.exception("batch of %d failed", len(x))
                for r in live:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            if self.on_batch is not None:
                self.on_batch(len(x), time.perf_counter() - t0)
            i = 0
            for r in live:
                k = len(r.x)
                if not r.future.done():
                    r.future.set_result(y[i : i + k])
                i += k


class BatcherGroup:
    """Several batchers (one per inference device, e.g. one per GPU) behind one ``submit``.

    Each request goes to the batcher with the fewest faces outstanding (ties: the one used
    longest ago), so N devices run N batches at once and a request's faces stay together.
    """

    def __init__(self, batchers: list[Batcher]) -> None:
        if not batchers:
            raise ValueError("BatcherGroup needs at least one batcher")
        self.batchers = list(batchers)
        self._load = [0] * len(batchers)
        self._turn = 0

    def start(self) -> None:
        for b in self.batchers:
            b.start()

    async def stop(self) -> None:
        for b in self.batchers:
            await b.stop()

    def _pick(self) -> int:
        n = len(self.batchers)
        order = [(self._turn + k) % n for k in range(n)]
        i = min(order, key=lambda j: self._load[j])
        self._turn = (i + 1) % n
        return i

    async def submit(self, x: np.ndarray) -> np.ndarray:
        """Classify ``x`` on the least busy batcher (see :meth:`Batcher.submit`)."""
        i = self._pick()
        self._load[i] += len(x)
        try:
            return await self.batchers[i].submit(x)
        finally:
            self._load[i] -= len(x)
