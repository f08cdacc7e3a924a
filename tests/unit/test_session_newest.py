"""A live session takes its newest frame when a detection worker starts on it, not when it
joins the workers' queue: under load, frames that came while it waited replace the one it had."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from core.pipeline import FrameFaces
from core.preprocess import LABELS
from server.adapt import AdaptiveReuse
from server.metrics import Metrics
from server.session import FrameSession


class BusyEngine:
    """One detection worker, held busy (by other sessions) until ``free`` is set."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.reuse = AdaptiveReuse()
        self.pool = ThreadPoolExecutor(1)
        self.free = threading.Event()
        self.queued = asyncio.Event()
        self.converted: list[Any] = []

    def scanner(self) -> None:
        return None

    async def detect(self, to_bgr, frame, scan) -> FrameFaces:
        def work() -> FrameFaces:
            assert self.free.wait(10)
            self.converted.append(to_bgr(frame))
            return FrameFaces(64, 48, [], np.zeros((0, 48, 48, 1), np.float32))

        job = asyncio.get_running_loop().run_in_executor(self.pool, work)
        self.queued.set()
        return await job

    async def classify(self, ff: FrameFaces) -> np.ndarray:
        return np.zeros((0, len(LABELS)), np.float32)

    def publish(self, msg: dict) -> None:
        pass


def test_the_frame_processed_is_the_newest_when_the_worker_starts() -> None:
    async def main() -> tuple[dict, FrameSession, BusyEngine]:
        engine = BusyEngine()
        session = FrameSession("s1", engine, lambda frame: f"bgr of {frame}", "test")  # type: ignore[arg-type]
        got: asyncio.Queue[dict] = asyncio.Queue()
        session.sinks.append(got.put_nowait)
        session.start()
        session.offer("frame 1")
        await engine.queued.wait()  # frame 1's turn is queued behind the busy worker ...
        session.offer("frame 2")
        session.offer("frame 3")  # ... while two newer frames come
        engine.free.set()
        msg = await asyncio.wait_for(got.get(), 10)
        await session.close()
        engine.pool.shutdown()
        return msg, session, engine

    msg, session, engine = asyncio.run(main())
    assert msg["type"] == "result" and msg["frame"] == 3
    assert engine.converted == ["bgr of frame 3"]  # frames 1 and 2 were never converted
    assert session.frames_processed == 1 and session.frames_dropped == 2
