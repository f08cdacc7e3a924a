"""Batcher: batch sizes, the max-wait rule, error propagation (fake predictor)."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from server.batcher import Batcher, BatcherGroup, BatchError


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
            time.sleep(self.delay)
        if self.fail:
            raise self.fail
        y = x.reshape(len(x), -1)[:, :1] * 2
        return y[:-1] if self.short else y


@pytest.fixture
def pool():
    ex = ThreadPoolExecutor(1)
    yield ex
    ex.shutdown()


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


async def test_lone_request_waits_at_most_max_wait(pool):
    rec = Recorder()
    b = Batcher(rec, pool, max_batch_size=64, max_wait_ms=50)
    b.start()
    t0 = time.perf_counter()
    await b.submit(np.ones((1, 2), np.float32))
    waited = time.perf_counter() - t0
    await b.stop()
    assert waited >= 0.045  # it waited for company...
    assert waited < 2.0  # ...but not forever


async def test_full_batch_does_not_wait(pool):
    rec = Recorder()
    b = Batcher(rec, pool, max_batch_size=2, max_wait_ms=5000)
    b.start()
    t0 = time.perf_counter()
    await asyncio.gather(b.submit(np.ones((1, 2), np.float32)),
                         b.submit(np.ones((1, 2), np.float32)))
    await b.stop()
    assert time.perf_counter() - t0 < 2.0
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


async def test_stop_fails_queued_requests(pool):
    b = Batcher(Recorder(delay=0.3), pool, max_batch_size=1, max_wait_ms=0)
    b.start()
    tasks = [asyncio.create_task(b.submit(np.ones((1, 2), np.float32))) for _ in range(3)]
    await asyncio.sleep(0.05)
    await b.stop()
    res = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, Exception) for r in res)


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
