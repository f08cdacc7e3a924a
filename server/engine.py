"""The shared processing of one app: the detection pool, the batcher(s) and inference workers,
and the one async path from an image (or a frame) to face results.

Used by the live sessions (:meth:`Engine.detect` + :meth:`Engine.classify`) and by
``POST /api/predict`` (:meth:`Engine.classify_image`); ``run.py predict`` runs the same
``core.pipeline`` code synchronously. The event loop never runs OpenCV or the model: decoding
and detection cross into the detection pool, classification into an inference thread, each at
one visible ``run_in_executor`` line.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from core.faces import FrameScan
from core.pipeline import FacePipeline, FrameFaces, decode_image, face_results
from core.preprocess import LABELS
from core.runtimes import Classifier
from server.adapt import AdaptiveReuse
from server.batcher import Batcher, BatcherGroup
from server.config import ServerConfig, detect_workers_for
from server.metrics import Metrics

log = logging.getLogger(__name__)


class Engine:
    """Detection pool + batcher + metrics + the result feed's ``publish``."""

    def __init__(self, pipeline: FacePipeline, executor: Executor, batcher: Batcher | BatcherGroup,
                 metrics: Metrics, publish: Callable[[dict], None],
                 max_pixels: int = 4096 * 4096,
                 pools: Sequence[ThreadPoolExecutor] = (), reuse_s: float = 0.0,
                 photo_pipeline: FacePipeline | None = None,
                 reuse_max_s: float | None = None,
                 overload_pipeline: FacePipeline | None = None) -> None:
        """``pipeline`` detects in live frames, ``photo_pipeline`` (default: the same) in
        uploaded images (their detector modes: ``ServerConfig.detect_live_mode`` and
        ``detect_photo_mode``). Sessions reuse a tracked face's probabilities for ``reuse_s``
        seconds, more under load up to ``reuse_max_s`` (default: ``reuse_s``, fixed); past that,
        live frames go to ``overload_pipeline`` (when given) while the load lasts; see
        :mod:`server.adapt`."""
        self.pipeline = pipeline
        self.photo_pipeline = photo_pipeline or pipeline
        self.executor = executor
        self.batcher = batcher
        self.metrics = metrics
        self.publish = publish
        self.max_pixels = max_pixels
        #: How long sessions reuse a tracked face's probabilities now (``ServerConfig.reuse_s``
        #: when idle, up to ``reuse_max_s`` when frames are being dropped).
        self.overload_pipeline = overload_pipeline
        self.reuse = AdaptiveReuse(reuse_s, reuse_s if reuse_max_s is None else reuse_max_s,
                                   shed=overload_pipeline is not None)
        metrics.reuse_seconds.set_function(lambda: self.reuse.level_s)
        self._pools = list(pools)

    @classmethod
    def start(cls, cfg: ServerConfig, replicas: Sequence[Classifier], metrics: Metrics,
              publish: Callable[[dict], None]) -> Engine:
        """Create the pools and one batcher + inference thread per classifier copy (one per
        GPU, or one on the CPU, whose runtime has its own threads), and start the batchers."""
        detect_pool = ThreadPoolExecutor(detect_workers_for(cfg), thread_name_prefix="detect")
        infer_pools = [ThreadPoolExecutor(1, thread_name_prefix=f"infer{i}")
                       for i in range(len(replicas))]
        batchers = [Batcher(c.predict_batch, pool, cfg.max_batch_size, cfg.max_wait_ms,
                            on_batch=metrics.on_batch, max_queue=cfg.max_queued_faces)
                    for c, pool in zip(replicas, infer_pools)]
        batcher = batchers[0] if len(batchers) == 1 else BatcherGroup(batchers)
        batcher.start()
        return cls(FacePipeline(mode=cfg.detect_live_mode), detect_pool, batcher, metrics,
                   publish, cfg.max_pixels, pools=[detect_pool, *infer_pools],
                   reuse_s=cfg.reuse_s, reuse_max_s=cfg.reuse_max_s,
                   photo_pipeline=FacePipeline(mode=cfg.detect_photo_mode),
                   overload_pipeline=FacePipeline(mode="fast")
                   if cfg.shed_detect and cfg.detect_live_mode != "fast" else None)

    def detector_modes(self) -> dict[str, str]:
        """The detector mode of live frames (configured, and in use now) and of uploaded
        photos (for ``/healthz``)."""
        return {"live": self.pipeline.mode, "photo": self.photo_pipeline.mode,
                "live_now": self._live_pipeline().mode}

    def _live_pipeline(self) -> FacePipeline:
        if self.overload_pipeline is not None and self.reuse.shedding:
            return self.overload_pipeline
        return self.pipeline

    async def close(self) -> None:
        """Stop the batchers (failing what is queued), then join the pools off the loop."""
        await self.batcher.stop()
        for pool in self._pools:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    def _faces(self, to_bgr: Callable[[Any], np.ndarray], frame: Any,
               scan: FrameScan | None) -> FrameFaces:
        pipeline = self._live_pipeline()
        if pipeline is not self.pipeline:  # shedding: one cheap whole-frame pass, no scan
            self.metrics.frames_shed.inc()
            if scan is not None:
                scan.reset()  # its kept faces would be stale when the scan resumes
            return pipeline.faces(to_bgr(frame))
        return self.pipeline.faces(to_bgr(frame), scan)

    def scanner(self) -> FrameScan:
        """A live stream's detector state (one per session; see ``core.faces.FrameScan``)."""
        return self.pipeline.scanner()

    async def detect(self, to_bgr: Callable[[Any], np.ndarray], frame: Any,
                     scan: FrameScan | None = None) -> FrameFaces:
        """Convert ``frame`` with ``to_bgr`` and find its faces (through the stream's ``scan``),
        in the detection pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._faces, to_bgr, frame, scan)

    async def classify(self, ff: FrameFaces) -> np.ndarray:
        """Class probabilities ``(faces, 7)`` of ``ff``'s faces, batched with other callers
        (BusyError when the classifier queue is full)."""
        if not ff.boxes:
            return np.zeros((0, len(LABELS)), np.float32)
        return await self.batcher.submit(ff.batch)

    def _decode_faces(self, data: bytes, detect: str) -> FrameFaces:
        return self.photo_pipeline.faces_for_upload(decode_image(data, self.max_pixels), detect)

    async def classify_image(self, data: bytes, detect: str = "auto") -> dict:
        """A JPEG/PNG -> ``{"width", "height", "faces"}`` (untracked face objects).
        ImageError for an unusable image."""
        loop = asyncio.get_running_loop()
        ff = await loop.run_in_executor(self.executor, self._decode_faces, data, detect)
        probs = await self.classify(ff)
        return {"width": ff.width, "height": ff.height, "faces": face_results(ff, probs)}
