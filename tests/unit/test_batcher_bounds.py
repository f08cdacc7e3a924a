"""The batcher's queue bound and its shutdown (separate from the timing-rule tests)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from server.batcher import Batcher
from server.errors import SHUTTING_DOWN, BusyError
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(30)


class Blocking:
    """A predictor that blocks until released; counts the rows it saw."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[int] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        assert self.release.wait(20)
        return np.zeros((len(x), 7), np.float32)


def faces(n: int) -> np.ndarray:
    return np.zeros((n, 48, 48, 1), np.float32)


async def test_a_full_queue_refuses_at_once_and_recovers():
    pred = Blocking()
    pool = ThreadPoolExecutor(1)
    b = Batcher(pred, pool, max_batch_size=1, max_wait_ms=0, max_queue=2)
    b.start()
    try:
        running = asyncio.ensure_future(b.submit(faces(1)))
        await wait_for(lambda: pred.calls == [1], 5, what="first batch running")
        queued = [asyncio.ensure_future(b.submit(faces(1))) for _ in range(2)]
        await wait_for(lambda: b.queued == 2, 5, what="two faces queued")
        with pytest.raises(BusyError, match="busy"):
            await b.submit(faces(1))
        pred.release.set()
        results = await asyncio.gather(running, *queued)
        assert [len(r) for r in results] == [1, 1, 1] and b.queued == 0
        assert len(await b.submit(faces(2))) == 2  # room again
    finally:
        pred.release.set()
        await b.stop()
        pool.shutdown()


async def test_one_request_larger_than_the_bound_runs_when_nothing_waits():
    pred = Blocking()
    pred.release.set()
    pool = ThreadPoolExecutor(1)
    b = Batcher(pred, pool, max_batch_size=8, max_wait_ms=0, max_queue=4)
    b.start()
    try:
        assert len(await b.submit(faces(6))) == 6
    finally:
        await b.stop()
        pool.shutdown()


async def test_stop_fails_queued_requests_and_frees_the_queue():
    pred = Blocking()
    pool = ThreadPoolExecutor(1)
    b = Batcher(pred, pool, max_batch_size=1, max_wait_ms=0, max_queue=8)
    b.start()
    running = asyncio.ensure_future(b.submit(faces(1)))
    await wait_for(lambda: pred.calls == [1], 5, what="first batch running")
    waiting = asyncio.ensure_future(b.submit(faces(1)))
    await wait_for(lambda: b.queued == 1, 5, what="one face queued")
    stopping = asyncio.ensure_future(b.stop())
    pred.release.set()
    await stopping
    for fut in (running, waiting):
        with pytest.raises(RuntimeError, match=SHUTTING_DOWN):
            await fut
    assert b.queued == 0
    pool.shutdown()


async def test_the_queue_bound_is_validated():
    with pytest.raises(ValueError, match="max_queue"):
        Batcher(lambda x: x, None, max_queue=0)
