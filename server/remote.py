"""The edge side of the Ray Serve inference tier (``run.py serve --ray ADDRESS``).

An edge server keeps everything but classification: its batcher hands each batch of face
crops to a :class:`RemoteClassifier`, which sends it to the tier's deployment through a Serve
``DeploymentHandle`` (``cluster.tier``) and blocks its inference thread until the answer.
:func:`load_remote_replicas` connects, deploys the tier if it is not there, and returns the
same remote classifier ``ServerConfig.ray_inflight`` times: the engine then runs that many
batchers and inference threads, so as many calls are in flight at once (a call spends most of
its time on the network and in the tier, not on this machine).

Faults: any failed call (tier unreachable, replica died, no answer in ``ray_timeout_s``)
raises :class:`~server.errors.InferenceUnavailable`, which fails that batch's frames with a
fixed client message, counts ``facedapps_inference_errors_total``, and leaves the sessions up;
Serve replaces a dead replica and later calls succeed again. :func:`healthz_with_tier` adds the
tier's fields to ``/healthz``.

A Ray driver does not survive its cluster: after a quick head restart (``ray stop``, ``ray
start --head``) it keeps running but every call hangs. :class:`ClusterWatch` asks the cluster's
GCS directly every few seconds (``tier.cluster_change``); when it has restarted, or this
machine's Ray node left it, the edge prints one ``error:`` line and shuts down with exit code
:data:`LOST_EXIT_CODE` so that its supervisor starts it again (joining the new cluster).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable

import numpy as np
from aiohttp import web

from cluster import tier
from cluster.tier import DriverIdentity, TierConfig, TierError
from core.preprocess import LABELS
from core.runtimes import Classifier
from server.config import ServerConfig
from server.errors import InferenceUnavailable, ServeError
from server.metrics import Metrics

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Exit status of an edge that lost its Ray cluster (``run.py serve`` returns it).
LOST_EXIT_CODE = 3
#: Longest a lost edge's graceful shutdown may take before the process ends anyway.
LOST_FORCE_EXIT_S = 30.0
_lost: str | None = None
#: Set once the server listens (its SIGTERM handler is in place): before that, a lost edge
#: has nothing to shut down gracefully and exits at once.
_serving = threading.Event()


def mark_serving() -> None:
    """The server is up: :func:`exit_lost` may stop it as SIGTERM does."""
    _serving.set()


def to_wire(x: np.ndarray) -> np.ndarray:
    """Crops as sent to the tier: uint8 when that is lossless (the crops are whole numbers
    0..255: a quarter of the bytes), else float32."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.size and x.min() >= 0 and x.max() <= 255 and np.array_equal(x, np.rint(x)):
        return x.astype(np.uint8)
    return np.ascontiguousarray(x, np.float32)


class RemoteClassifier:
    """A ``core.runtimes.Classifier`` whose model runs in the tier (thread-safe: several
    inference threads share one)."""

    backend = "ray-serve"
    labels = LABELS

    def __init__(self, handle: Any, name: str, device: str, timeout_s: float,
                 on_error: Callable[[], None] | None = None) -> None:
        self.handle = handle
        self.name = name
        self.device = device
        self.timeout_s = timeout_s
        self.on_error = on_error
        self._lock = threading.Lock()
        self._failing = False
        #: Calls made, and calls not yet answered (or failed).
        self.calls = 0
        self.inflight = 0

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        """``(N, S, S, 1)`` crops -> ``(N, 7)`` probabilities from the tier (blocks this
        thread); InferenceUnavailable when the tier does not answer."""
        if len(x) == 0:
            return np.zeros((0, len(LABELS)), np.float32)
        with self._lock:
            self.calls += 1
            self.inflight += 1
        try:
            response = self.handle.remote(to_wire(x))
            try:
                y = response.result(timeout_s=self.timeout_s)
            except Exception:
                try:
                    response.cancel()  # a call queued for a replica that is not there yet
                except Exception:  # already finished, or the connection is gone
                    pass
                raise
        except Exception as exc:  # every way a remote call can fail means the same here
            self._failed(exc)
            raise InferenceUnavailable() from exc
        finally:
            with self._lock:
                self.inflight -= 1
        self._answered()
        return np.asarray(y, np.float32)

    def _failed(self, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error()
        with self._lock:
            first, self._failing = not self._failing, True
        if first:  # one line per outage, not per frame
            text = (str(exc).strip().splitlines() or [""])[0][:200]
            log.warning("inference tier call failed (%s: %s); frames fail until it answers",
                        type(exc).__name__, text)

    def _answered(self) -> None:
        with self._lock:
            recovered, self._failing = self._failing, False
        if recovered:
            log.warning("inference tier answers again")


def cluster_lost() -> str | None:
    """Why this process left its Ray cluster (:func:`exit_lost`), or None."""
    return _lost


def exit_lost(message: str) -> None:
    """The edge lost its Ray cluster: print ``error: message`` (one line), and stop the server
    as SIGTERM does (``run.py serve`` then exits :data:`LOST_EXIT_CODE`); if the shutdown is
    not over after :data:`LOST_FORCE_EXIT_S` (a stale Ray driver can hang it), end the
    process."""
    global _lost
    if _lost is not None:
        return
    _lost = message
    print(f"error: {message}", file=sys.stderr, flush=True)
    if not _serving.is_set():  # still starting (Ray's own SIGTERM handler would exit 15)
        os._exit(LOST_EXIT_CODE)
    timer = threading.Timer(LOST_FORCE_EXIT_S, os._exit, (LOST_EXIT_CODE,))
    timer.daemon = True
    timer.start()
    os.kill(os.getpid(), signal.SIGTERM)


class ClusterWatch:
    """Checks every ``period_s`` seconds, in a daemon thread, that this process's Ray driver
    (``ident``) still belongs to its cluster (``tier.cluster_change``: one direct call to the
    cluster's GCS, answered or not within ``timeout_s``); after ``confirm`` checks in a row say
    it does not, calls ``on_lost(message)`` once and stops. It also stops when the process is
    no longer that driver (disconnected, reconnected) or on :meth:`stop`."""

    def __init__(self, ident: DriverIdentity, address: str,
                 on_lost: Callable[[str], None] | None = None, period_s: float = 5.0,
                 timeout_s: float = 3.0, confirm: int = 2,
                 change: Callable[[DriverIdentity, float], str | None] | None = None,
                 connected: Callable[[DriverIdentity], bool] | None = None) -> None:
        self.ident = ident
        self.address = address
        self.on_lost = on_lost or exit_lost
        self.period_s = period_s
        self.timeout_s = timeout_s
        self.confirm = confirm
        self._change = change or tier.cluster_change
        self._connected = connected or tier.still_driver
        self._stop = threading.Event()
        #: The message handed to ``on_lost``, once it was.
        self.lost: str | None = None
        self._thread = threading.Thread(target=self._run, name="tier-watch", daemon=True)

    def start(self) -> ClusterWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def check(self) -> str | None:
        """One check: why the driver left its cluster, or None."""
        return self._change(self.ident, self.timeout_s)

    def _run(self) -> None:
        strikes = 0
        while not self._stop.wait(self.period_s):
            if not self._connected(self.ident):
                return
            reason = self.check()
            strikes = strikes + 1 if reason else 0
            if reason and strikes >= self.confirm:
                self.lost = (f"lost the Ray cluster at {self.address!r}: {reason}; restart "
                             f"this server to join it")
                log.debug("tier watch: %s", self.lost)
                self.on_lost(self.lost)
                return


def watch_cluster(address: str) -> ClusterWatch | None:
    """Start a :class:`ClusterWatch` for this process's Ray driver (None for Ray Client
    connections, which have no node of their own here)."""
    ident = tier.driver_identity()
    if ident is None:
        return None
    # Just connected, the driver belongs to its cluster: a check that says otherwise now reads
    # this Ray version's GCS wrongly, and would end a healthy edge; then there is no watch.
    if tier.cluster_change(ident) is not None:
        log.info("cannot watch the Ray cluster for restarts with this Ray version")
        return None
    log.debug("watching the Ray cluster %s (node %s)", ident.cluster_id, ident.node_id)
    return ClusterWatch(ident, address).start()


def tier_config_for(cfg: ServerConfig) -> TierConfig:
    """How an edge deploys the tier when it is not there: its own model, backend and batcher
    settings (``run.py cluster deploy`` sets replicas and resources explicitly)."""
    return TierConfig(model_dir=cfg.model_dir, backend=cfg.backend,
                      max_batch=cfg.max_batch_size, max_wait_ms=cfg.max_wait_ms,
                      app_name=cfg.ray_app)


def connect_tier(cfg: ServerConfig, metrics: Metrics | None = None) -> RemoteClassifier:
    """Connect to ``cfg.ray_address``, deploy the tier unless it runs, and wait for a replica
    to describe itself. ServeError (one line) when any of it fails."""
    assert cfg.ray_address
    try:
        tier.connect(cfg.ray_address)
        watch_cluster(cfg.ray_address)
        tier.ensure(tier_config_for(cfg))
        handle = tier.handle(cfg.ray_app)
        info = handle.describe.remote().result(timeout_s=max(cfg.ray_timeout_s, 60.0))
    except TierError as exc:
        raise ServeError(str(exc)) from exc
    except Exception as exc:  # the first call to the tier failed or timed out
        raise ServeError(f"inference tier {cfg.ray_app!r} at {cfg.ray_address!r} did not "
                         f"answer ({type(exc).__name__})") from exc
    device = "ray:GPU" if info.get("gpu_ids") else "ray:CPU"
    log.info("classifying on the inference tier %r at %s (model %s, %s, %s)", cfg.ray_app,
             cfg.ray_address, info.get("model"), info.get("runtime"), device)
    return RemoteClassifier(handle, str(info.get("model", "?")), device, cfg.ray_timeout_s,
                            on_error=metrics.inference_errors.inc if metrics else None)


def load_remote_replicas(cfg: ServerConfig, metrics: Metrics) -> list[Classifier]:
    """The engine's classifiers for an edge: one remote classifier, ``ray_inflight`` times
    (one batcher and inference thread each). Blocks, like loading a model (Serve's blocking
    calls refuse to run on an event loop's thread, so within one they run in a helper
    thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop here: the usual case (run.py serve builds the app first)
        clf = connect_tier(cfg, metrics)
    else:
        with ThreadPoolExecutor(1, thread_name_prefix="tier-connect") as pool:
            clf = pool.submit(connect_tier, cfg, metrics).result()
    return [clf] * cfg.ray_inflight


class TierProbe:
    """The tier's ``/healthz`` fields: Serve's replica count and every replica's own account
    (runtime, device, node), fetched off the event loop, at most every ``ttl_s`` seconds, and
    never waited for longer than ``timeout_s``."""

    def __init__(self, clf: RemoteClassifier, app_name: str, address: str | None,
                 inflight: int, ttl_s: float = 2.0, timeout_s: float = 2.0) -> None:
        self.clf = clf
        self.app_name = app_name
        self.address = address
        self.inflight = inflight
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._task: asyncio.Future | None = None
        self._started = 0.0

    def _probe(self) -> dict:
        st = tier.status(self.app_name)
        replicas = tier.describe(self.clf.handle, self.timeout_s) if st["replicas"] else []
        gpu = any(r.get("gpu_ids") for r in replicas)
        return {"replicas": st["replicas"], "device": "ray:GPU" if gpu else "ray:CPU",
                "tier": {"address": self.address, "app": self.app_name,
                         "status": st["status"], "inflight": self.inflight,
                         "runtime": sorted({str(r.get("runtime")) for r in replicas}),
                         "nodes": sorted({str(r.get("node_id")) for r in replicas}),
                         "cluster": st["cluster"]}}

    async def fields(self) -> dict:
        """The fields to merge into ``/healthz`` (``tier.status`` says when it is unknown)."""
        now = time.monotonic()
        if self._task is None or (self._task.done() and now - self._started > self.ttl_s):
            self._task = asyncio.ensure_future(asyncio.to_thread(self._probe))
            self._started = now
        base = {"backend": self.clf.backend, "replicas": 0, "device": self.clf.device}
        try:
            return {**base, **await asyncio.wait_for(asyncio.shield(self._task),
                                                       self.timeout_s)}
        except asyncio.TimeoutError:
            state = "NO_ANSWER"
        except Exception as exc:  # the probe's Ray calls failed: the tier is out of reach
            log.debug("tier probe failed: %s", exc)
            state = "UNREACHABLE"
        return {**base, "tier": {"address": self.address, "app": self.app_name,
                                 "status": state, "inflight": self.inflight}}


def healthz_with_tier(handler: Handler, cfg: ServerConfig,
                      replicas: list[Classifier]) -> Handler:
    """``handler`` (``/healthz``) with the tier's fields added when the app classifies on
    the tier; ``handler`` itself otherwise."""
    clf = replicas[0] if replicas else None
    if not isinstance(clf, RemoteClassifier):
        return handler
    probe = TierProbe(clf, cfg.ray_app, cfg.ray_address, len(replicas))

    async def tier_healthz(request: web.Request) -> web.StreamResponse:
        resp = await handler(request)
        if not isinstance(resp, web.Response) or resp.status != 200 or resp.text is None:
            return resp
        return web.json_response({**json.loads(resp.text), **await probe.fields()})

    return tier_healthz
