"""Batcher: batch sizes, the max-wait rule, error propagation (fake predictor).

No test here depends on how fast the machine is: the max-wait rule is checked with a fake clock
(the batcher's ``time`` module is replaced) and by which requests end up in the same batch,
with the order of events driven by events, not by sleeping.
"""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from server import batcher as batcher_module
from server.batcher import Batcher, BatcherGroup, BatchError
from server.errors import SHUTTING_DOWN
from tests.helpers import wait_for

#: Guard against a hang (a batcher that waits when it must not): never reached by a passing test.
HANG_S = 10.0


class Recorder:
    def __init__(self, delay=0.0, fail=None, short=False):
        self.sizes = []
        self.delay = delay
        self.fail = fail
        self.short = short
        self.threads = set()

    def __call__(self, x):
        self.threads.add(threading.get_ident())
        self.sizes.append(len(x))
        if self.delay:
            time.sleep(self.delay)  # pacing: a model that takes a while (the fake's own delay)
        if self.fail:
            raise self.fail
        y = x.reshape(len(x), -1)[:, :1] * 2
        return y[:-1] if self.short else y


class Gated(Recorder):
    """A predictor whose calls block until ``release()``; ``started`` is set (on the event loop)
    when a call has begun, so a test knows a batch is running."""

    def __init__(self, loop: asyncio.AbstractEventLoop, **kw) -> None:
        super().__init__(**kw)
        self.loop = loop
        self.started = asyncio.Event()
        self.gate = threading.Event()

    def release(self) -> None:
        self.gate.set()

    def __call__(self, x):
        self.threads.add(threading.get_ident())
        self.sizes.append(len(x))
        self.loop.call_soon_threadsafe(self.started.set)
        if not self.gate.wait(HANG_S):
            raise TimeoutError("the test never released the predictor")
        return x.reshape(len(x), -1)[:, :1] * 2


class FakeClock:
    """Stands in for the batcher's ``time`` module: ``monotonic()`` returns ``now`` (advanced by
    ``step`` after each call); ``read`` is set at the first call, which the batcher makes when it
    has taken the first request of a batch (to set its deadline)."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 1000.0
        self.step = step
        self.read = asyncio.Event()

    def monotonic(self) -> float:
        t = self.now
        self.now += self.step
        self.read.set()
        return t

    @staticmethod
    def perf_counter() -> float:
        return time.perf_counter()


@pytest.fixture
def clock(monkeypatch):
    """A frozen fake clock for the batcher (time does not pass unless a test says so)."""
    fake = FakeClock()
    monkeypatch.setattr(batcher_module, "time", fake)
    return fake


@pytest.fixture
def pool():
    ex = ThreadPoolExecutor(1)
    yield ex
    ex.shutdown()


def one(v: float = 1.0) -> np.ndarray:
    return np.full((1, 2), v, np.float32)


@pytest.mark.parametrize("max_batch", [1, 4, 8])
async def test_batches_never_exceed_max_and_results_map_back(pool, max_batch):
    rec = Recorder(delay=0.01)
    b = Batcher(rec, pool, max_batch_size=max_batch, max_wait_ms=20)
    b.start()
    xs = [np.full((1, 2), i, np.float32) for i in range(20)]
    ys = await asyncio.gather(*(b.submit(x) for x in xs))
    await b.stop()
    assert [float(y[0, 0]) for y in ys] == [2.0 * i for i in range(20)]
    assert max(rec.sizes) <= max_batch
    assert sum(rec.sizes) == 20
    if max_batch > 1:
        assert len(rec.sizes) < 20  # really batched
    assert threading.get_ident() not in rec.threads  # ran in the executor


async def test_multi_face_requests_stay_whole(pool):
    rec = Recorder()
    b = Batcher(rec, pool, max_batch_size=4, max_wait_ms=10)
    b.start()
    reqs = [np.arange(k * 2, dtype=np.float32).reshape(k, 2) for k in (3, 3, 2, 6)]
    ys = await asyncio.gather(*(b.submit(x) for x in reqs))
    await b.stop()
    for x, y in zip(reqs, ys):
        assert len(y) == len(x)
        np.testing.assert_allclose(y[:, 0], x[:, 0] * 2)
    assert 6 in rec.sizes  # the oversized request ran alone
    assert all(s <= 4 for s in rec.sizes if s != 6)


async def test_request_submitted_while_the_first_waits_joins_its_batch(pool, clock):
    """Within max_wait the batch waits for company: a request that arrives after the first one
    was taken (and is waiting) runs in the same batch."""
    rec = Recorder()
    b = Batcher(rec, pool, max_batch_size=2, max_wait_ms=60_000)  # the clock is frozen anyway
    b.start()
    try:
        first = asyncio.create_task(b.submit(one(1)))
        await asyncio.wait_for(clock.read.wait(), HANG_S)  # the batcher holds the first request
        assert rec.sizes == [] and not first.done()  # ... and waits
        second = await asyncio.wait_for(b.submit(one(2)), HANG_S)
        assert float((await first)[0, 0]) == 2.0 and float(second[0, 0]) == 4.0
    finally:
        await b.stop()
    assert rec.sizes == [2]


async def test_lone_request_goes_once_max_wait_has_passed(pool, monkeypatch):
    """Once max_wait has passed on the batcher's clock, it stops waiting for company: with a
    clock that jumps an hour per reading, a lone request runs alone at once, although
    max_wait is a minute (a batcher that ignored its deadline would hang here)."""
    fake = FakeClock(step=3600.0)
    monkeypatch.setattr(batcher_module, "time", fake)
    rec = Recorder()
    b = Batcher(rec, pool, max_batch_size=64, max_wait_ms=60_000)
    b.start()
    try:
        y = await asyncio.wait_for(b.submit(one(3)), HANG_S)
        assert float(y[0, 0]) == 6.0
        await asyncio.wait_for(b.submit(one(4)), HANG_S)  # a later request: a batch of its own
    finally:
        await b.stop()
    assert rec.sizes == [1, 1]


async def test_requests_queued_while_a_batch_runs_form_the_next_batch(pool):
    """max_wait 0: a lone request goes at once (no waiting for company); the requests that
    queue while the predictor is busy all go together in the next batch."""
    rec = Gated(asyncio.get_running_loop())
    b = Batcher(rec, pool, max_batch_size=8, max_wait_ms=0)
    b.start()
    try:
        first = asyncio.create_task(b.submit(one(1)))
        await asyncio.wait_for(rec.started.wait(), HANG_S)  # running alone, blocked
        assert rec.sizes == [1]
        rest = [asyncio.create_task(b.submit(one(v))) for v in (2, 3, 4)]
        await wait_for(lambda: b.queued == 3, HANG_S, 0.01, what="three requests queued")
        rec.release()
        ys = await asyncio.wait_for(asyncio.gather(first, *rest), HANG_S)
    finally:
        rec.release()
        await b.stop()
    assert [float(y[0, 0]) for y in ys] == [2.0, 4.0, 6.0, 8.0]
    assert rec.sizes == [1, 3]


async def test_full_batch_does_not_wait(pool, clock):
    """A batch that is full goes at once, without waiting out max_wait (a minute here, on a
    frozen clock: a batcher that waited would hang)."""
    rec = Recorder()
    b = Batcher(rec, pool, max_batch_size=2, max_wait_ms=60_000)
    b.start()
    try:
        await asyncio.wait_for(asyncio.gather(b.submit(one()), b.submit(one())), HANG_S)
    finally:
        await b.stop()
    assert rec.sizes == [2]


async def test_failing_batch_fails_its_callers_and_batcher_survives(pool):
    rec = Recorder(fail=RuntimeError("model exploded"))
    b = Batcher(rec, pool, max_batch_size=4, max_wait_ms=5)
    b.start()
    res = await asyncio.gather(*(b.submit(np.ones((1, 2), np.float32)) for _ in range(3)),
                               return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in res)
    rec.fail = None
    y = await b.submit(np.ones((1, 2), np.float32))
    await b.stop()
    assert float(y[0, 0]) == 2.0


async def test_wrong_row_count_is_an_error(pool):
    b = Batcher(Recorder(short=True), pool, max_batch_size=4, max_wait_ms=1)
    b.start()
    with pytest.raises(BatchError):
        await b.submit(np.ones((2, 2), np.float32))
    await b.stop()


async def test_stop_fails_running_and_queued_requests(pool):
    rec = Gated(asyncio.get_running_loop())
    b = Batcher(rec, pool, max_batch_size=1, max_wait_ms=0)
    b.start()
    try:
        tasks = [asyncio.create_task(b.submit(one())) for _ in range(3)]
        await asyncio.wait_for(rec.started.wait(), HANG_S)  # one running, two queued
        await b.stop()
        res = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), HANG_S)
    finally:
        rec.release()
    assert all(isinstance(r, RuntimeError) and str(r) == SHUTTING_DOWN for r in res), res
    assert rec.sizes == [1]  # the queued ones never reached the predictor


@pytest.mark.parametrize("kw", [{"max_batch_size": 0}, {"max_wait_ms": -1}])
def test_invalid_knobs(kw):
    with pytest.raises(ValueError):
        Batcher(lambda x: x, None, **kw)


async def test_empty_request_is_free(pool):
    rec = Recorder()
    b = Batcher(rec, pool)
    b.start()
    assert len(await b.submit(np.zeros((0, 2), np.float32))) == 0
    await b.stop()
    assert rec.sizes == []


async def test_group_spreads_work_over_its_devices_and_maps_results_back():
    """One batcher per device (e.g. per GPU): requests go to the least busy one, so two slow
    devices run two batches at once; every caller gets its own rows back."""
    both = threading.Barrier(2, timeout=10)

    class Together(Recorder):
        """Its first batch waits until the other device is running one too."""

        def __call__(self, x):
            if not self.sizes:
                both.wait()  # BrokenBarrierError (the batch fails) unless both run at once
            return super().__call__(x)

    pools = [ThreadPoolExecutor(1), ThreadPoolExecutor(1)]
    # pacing: each batch takes a while, so the group has a reason to spread the work
    recs = [Together(delay=0.05), Together(delay=0.05)]
    group = BatcherGroup([Batcher(r, p, max_batch_size=2, max_wait_ms=0)
                          for r, p in zip(recs, pools)])
    group.start()
    try:
        xs = [np.full((1, 2), i, np.float32) for i in range(8)]
        ys = await asyncio.gather(*(group.submit(x) for x in xs))
        for i, y in enumerate(ys):
            np.testing.assert_array_equal(y, [[2 * i]])
        assert sum(recs[0].sizes) == sum(recs[1].sizes) == 4  # shared evenly
        assert recs[0].threads.isdisjoint(recs[1].threads)  # each device its own worker
        # a multi-face request stays whole on one device
        y = await group.submit(np.arange(6, dtype=np.float32).reshape(3, 2))
        np.testing.assert_array_equal(y, [[0], [4], [8]])
        assert 3 in recs[0].sizes + recs[1].sizes
    finally:
        await group.stop()
        for p in pools:
            p.shutdown()
    with pytest.raises(ValueError):
        BatcherGroup([])
