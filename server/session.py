"""One client's frames: latest frame wins, at most one in flight, results to its sinks.

Transport-agnostic: WebRTC peers feed decoded ``av.VideoFrame``s, WebSocket stream peers feed
JPEG bytes; ``to_bgr`` turns the kept frame into an array in an executor thread, so only
frames that get processed are ever converted. The frame is taken when a detection worker
starts on the session, not when the session joins the workers' queue: under load that queue
holds a turn of every session, and a frame taken on joining would be that much older.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Awaitable, Callable

from core.errors import ImageError
from core.preprocess import LABELS
from core.tracker import FaceTracker
from server.engine import Engine
from server.errors import CapacityError, InferenceUnavailable, client_message
from server.protocol import result_message
from server.timeline import Timeline

log = logging.getLogger(__name__)

Sink = Callable[[dict], Awaitable[None] | None]


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
        self.scan = engine.scanner()
        started = time.time()  # the timeline's second 0 is the session's start, not its first face
        self.timeline = Timeline(LABELS, t0=started, start=started)
        self.frames_received = 0
        self.frames_processed = 0
        self.frames_dropped = 0
        self.last_frame_at = time.monotonic()
        self.created_at = time.monotonic()
        #: The newest frame not yet taken: (frame, number, perf_counter at arrival). Set on the
        #: event loop, taken in a detection worker (``_take``), hence the lock.
        self._latest: tuple[Any, int, float] | None = None
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.closed = False
        #: The last frame failed because the inference tier did not answer (log once).
        self._tier_down = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"proc-{self.sid}")

    def offer(self, frame: Any) -> None:
        """Keep ``frame`` as the newest; a frame not yet taken for processing is dropped."""
        now = time.perf_counter()
        self.frames_received += 1
        self.engine.metrics.frames_received.inc()
        self.last_frame_at = time.monotonic()
        with self._lock:
            dropped = self._latest is not None
            self._latest = (frame, self.frames_received, now)
        self.engine.reuse.frame(self.last_frame_at, dropped=dropped)
        if dropped:
            self.frames_dropped += 1
            self.engine.metrics.frames_dropped.inc()
        self._wake.set()

    def _take(self) -> tuple[Any, int, float]:
        with self._lock:
            taken, self._latest = self._latest, None
        if taken is None:  # only this session's task takes frames: the session was closed
            raise RuntimeError(f"session {self.sid}: no frame to take")
        return taken

    async def _run(self) -> None:
        while not self.closed:
            await self._wake.wait()
            self._wake.clear()
            if self._latest is None:  # taken by the last turn, which ended after it came
                continue
            picked: list[tuple[int, float]] = []
            try:
                msg = await self.process(picked)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one frame failed: tell the client, keep the session
                no = picked[0][0] if picked else self.frames_received
                self.engine.metrics.errors.labels("frame").inc()
                if isinstance(exc, InferenceUnavailable):
                    self.engine.reuse.failed()
                    if not self._tier_down:  # one line per outage (the tier logs it too)
                        log.info("session %s: frame %d refused: %s (and later frames until "
                                 "the tier answers)", self.sid, no, exc)
                    self._tier_down = True
                elif isinstance(exc, (ImageError, CapacityError)):
                    log.info("session %s: frame %d refused: %s", self.sid, no, exc)
                else:
                    log.exception("session %s: frame %d failed", self.sid, no)
                await self._emit({"type": "error", "session": self.sid, "frame": no,
                                  "error": client_message(exc)}, publish=False)
                continue
            self._tier_down = False
            await self._emit(msg)

    async def process(self, picked: list[tuple[int, float]]) -> dict:
        """Take the newest frame when a detection worker is free (its number and arrival time
        go into ``picked``), detect, classify (batched with other sessions), track, and build
        the message."""

        def newest_bgr(_: Any) -> Any:  # in the detection worker
            frame, no, arrived = self._take()
            picked.append((no, arrived))
            return self.to_bgr(frame)

        ff = await self.engine.detect(newest_bgr, None, self.scan)
        no, arrived = picked[0]
        t = time.monotonic()
        # Faces kept from earlier frames show only where they continue a track. New faces, and
        # tracked ones whose last classification is older than the reuse age, go to the
        # classifier; the others reuse their last probabilities (FaceTracker.start_frame). The
        # age grows when the server drops frames (server.adapt). A face the detector carried
        # from an earlier frame always reuses (its crop is old).
        plan = self.tracker.start_frame(t, ff.boxes, self.engine.reuse.value(t), ff.carried,
                                        (ff.width, ff.height))
        ff = ff.subset(plan.keep)
        fresh = await self.engine.classify(ff.subset(plan.need))
        self.engine.metrics.faces_reused.inc(len(plan.keep) - len(plan.need))
        faces, probs = self.tracker.finish_frame(plan, fresh, (ff.width, ff.height))
        now = time.time()
        for face, p in zip(faces, probs):
            self.timeline.add(now, face["id"], p)
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
            except (ConnectionError, RuntimeError) as exc:  # a late send to a closing channel
                log.debug("session %s: send failed: %s", self.sid, exc)
        if publish:
            self.engine.publish(msg)

    async def close(self) -> None:
        """Stop processing; idempotent. A cancellation of the caller still propagates."""
        self.closed = True
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.error("session %s: processing task failed", self.sid, exc_info=task.exception())
