"""One client's frames: latest frame wins, at most one in flight, results to its sinks.

Transport-agnostic: WebRTC sessions feed decoded ``av.VideoFrame``s, WebSocket stream sessions
feed JPEG bytes; ``to_bgr`` turns the kept frame into an array in an executor thread, so only
frames that get processed are ever converted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from typing import Any, Awaitable, Callable

import numpy as np

from server.batcher import Batcher, BatcherGroup
from server.metrics import Metrics
from server.pipeline import FacePipeline, FrameFaces
from server.protocol import face_dict, result_message
from server.timeline import Timeline
from server.tracker import FaceTracker
from training.preprocess import LABELS

log = logging.getLogger(__name__)

Sink = Callable[[dict], Awaitable[None] | None]


class Engine:
    """Shared per-app processing: detection pool, batcher, metrics, result feed."""

    def __init__(self, pipeline: FacePipeline, executor: Executor, batcher: Batcher | BatcherGroup,
                 metrics: Metrics, publish: Callable[[dict], None]) -> None:
        self.pipeline = pipeline
        self.executor = executor
        self.batcher = batcher
        self.metrics = metrics
        self.publish = publish

    def _faces(self, to_bgr: Callable[[Any], Any], frame: Any) -> FrameFaces:
        return self.pipeline.faces(to_bgr(frame))

    async def detect(self, to_bgr: Callable[[Any], Any], frame: Any) -> FrameFaces:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._faces, to_bgr, frame)


class FrameSession:
    """Latest-frame-wins processing for one client."""

    def __init__(self, sid: str, engine: Engine, to_bgr: Callable[[Any], Any],
                 transport: str) -> None:
        self.sid = sid
        self.engine = engine
        self.to_bgr = to_bgr
        self.transport = transport
        self.sinks: list[Sink] = []
        self.tracker = FaceTracker(LABELS)
        self.timeline = Timeline(LABELS)
        self.frames_received = 0
        self.frames_processed = 0
        self.frames_dropped = 0
        self.last_frame_at = time.monotonic()
        self.created_at = time.monotonic()
        self._latest: tuple[Any, int, float] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.closed = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"proc-{self.sid}")

    def offer(self, frame: Any) -> None:
        """Keep ``frame`` as the newest; a frame not yet taken for processing is dropped."""
        now = time.perf_counter()
        self.frames_received += 1
        self.engine.metrics.frames_received.inc()
        self.last_frame_at = time.monotonic()
        if self._latest is not None:
            self.frames_dropped += 1
            self.engine.metrics.frames_dropped.inc()
        self._latest = (frame, self.frames_received, now)
        self._wake.set()

    async def _run(self) -> None:
        while not self.closed:
            await self._wake.wait()
            self._wake.clear()
            if self._latest is None:
                continue
            frame, no, arrived = self._latest
            self._latest = None
            try:
                msg = await self.process(frame, no, arrived)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.engine.metrics.errors.labels("frame").inc()
                log.warning("session %s: frame %d failed: %s", self.sid, no, exc)
                await self._emit({"type": "error", "session": self.sid, "frame": no,
                                  "error": str(exc)}, publish=False)
                continue
            await self._emit(msg)

    async def process(self, frame: Any, no: int, arrived: float) -> dict:
        """Detect, classify (batched with other sessions), track, and build the message."""
        ff = await self.engine.detect(self.to_bgr, frame)
        if ff.boxes:
            probs = await self.engine.batcher.submit(ff.batch)
        else:
            probs = np.zeros((0, len(LABELS)), np.float32)
        tracked = self.tracker.update(time.monotonic(), ff.boxes, probs)
        faces = []
        for tf, p in zip(tracked, probs):
            self.timeline.add(time.time(), tf.id, p)
            faces.append(face_dict(tf.id, tf.box, tf.smoothed, p))
        latency = (time.perf_counter() - arrived) * 1000.0
        self.frames_processed += 1
        m = self.engine.metrics
        m.frames_processed.inc()
        m.faces.inc(len(faces))
        m.latency.observe(latency / 1000.0)
        return result_message(self.sid, no, ff.width, ff.height, latency, faces)

    async def _emit(self, msg: dict, publish: bool = True) -> None:
        for sink in list(self.sinks):
            try:
                r = sink(msg)
                if asyncio.iscoroutine(r):
                    await r
            except Exception as exc:  # a late send to a closing channel must not kill us
                log.debug("session %s: send failed: %s", self.sid, exc)
        if publish:
            self.engine.publish(msg)

    async def close(self) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
