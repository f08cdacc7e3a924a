"""The application's shared objects, under typed ``web.AppKey``s (no module globals).

The types are imported for type checking only, so any server module can import this one
without import cycles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from server.config import ServerConfig

if TYPE_CHECKING:
    from core.runtimes import Classifier
    from server.engine import Engine
    from server.feed import FeedHub
    from server.jobs import JobQueue
    from server.metrics import Metrics
    from server.ratelimit import Gate
    from server.registry import Registry

CONFIG = web.AppKey("config", ServerConfig)
CLASSIFIER: web.AppKey[Classifier] = web.AppKey("classifier")
#: Every loaded copy of the classifier, one per inference worker (one per GPU; one on CPU).
REPLICAS: web.AppKey[list[Classifier]] = web.AppKey("replicas")
ENGINE: web.AppKey[Engine] = web.AppKey("engine")
REGISTRY: web.AppKey[Registry] = web.AppKey("registry")
FEED: web.AppKey[FeedHub] = web.AppKey("feed")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
#: Concurrency limit of ``POST /api/predict``.
PREDICT_GATE: web.AppKey[Gate] = web.AppKey("predict_gate")
#: ``POST /api/predict`` bodies being read at once (each up to ``max_body_bytes`` in memory).
PREDICT_READING: web.AppKey[Gate] = web.AppKey("predict_reading")
#: Analysis jobs of uploaded videos.
JOBS: web.AppKey[JobQueue] = web.AppKey("jobs")
