"""The aiohttp application: the factory, its lifecycle and shutdown, and ``serve``.

Data flow: a transport (``transports.webrtc`` or ``transports.ws_stream``) feeds frames into a
``session.FrameSession`` (latest frame wins), which uses the shared ``engine.Engine`` (detection
pool, batcher, inference threads) and sends result messages to its client and the ``/ws`` feed.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from core.runtimes import Classifier, load_replicas
from server.access import access_middleware
from server.config import ServerConfig, infer_threads_for
from server.engine import Engine
from server.errors import ServeError, json_error
from server.feed import FeedHub, feed_handler
from server.jobs import JobQueue, add_routes
from server.metrics import Metrics
from server.ratelimit import Gate
from server.registry import Registry
from server.remote import healthz_with_tier, load_remote_replicas, mark_serving
from server.routes import (
    client_config,
    healthz,
    index,
    metrics,
    predict,
    session_timeline,
    static_file,
)
from server.signaling import offer
from server.state import (
    CLASSIFIER,
    CONFIG,
    ENGINE,
    FEED,
    JOBS,
    METRICS,
    PREDICT_GATE,
    PREDICT_READING,
    REGISTRY,
    REPLICAS,
)
from server.transports.ws_stream import stream_handler

__all__ = ["create_app", "serve", "ServeError"]

log = logging.getLogger(__name__)


@web.middleware
async def error_middleware(request: web.Request, handler):
    """JSON errors for everything; never a traceback or exception text to the client."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        answer = json_error(exc.status, exc.reason)
        if "Allow" in exc.headers:  # a 405 says which methods the route has
            answer.headers["Allow"] = exc.headers["Allow"]
        return answer
    except asyncio.CancelledError:
        raise
    except web.RequestPayloadError:  # the client's body: cut off, or a Content-Encoding it lacks
        log.info("unreadable body on %s %s", request.method, request.path)
        # The rest of the body cannot be read either: end the stream here and close the
        # connection after the answer (aiohttp would otherwise read on after the 400, hit the
        # same error and log it as an unhandled exception).
        request.content.feed_eof()
        answer = json_error(400, "the request body cannot be read (cut off, or not encoded as "
                            "its Content-Encoding says)")
        answer.force_close()
        return answer
    except Exception as exc:  # the top of every request: log it whole, answer a fixed message
        if isinstance(exc, ConnectionResetError) and (
                request.transport is None or request.transport.is_closing()):
            # the client went away mid-request (a reset elsewhere is a fault of ours: below)
            log.info("client gone during %s %s", request.method, request.path)
            return json_error(400, "the connection was closed before the request was read")
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal error")


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log line without the query string, which may carry the access token
    (``?token=``): address, method, path, status, bytes, seconds."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        path = request.raw_path.partition("?")[0]  # as sent: still percent-encoded, one line
        self.logger.info('%s "%s %s" %s %s %.3f', request.remote, request.method, path,
                         response.status, response.body_length, time)


def create_app(cfg: ServerConfig, classifier: Classifier | None = None) -> web.Application:
    """Build the application. ``classifier`` defaults to loading ``cfg.model_dir``."""
    app = web.Application(client_max_size=cfg.max_body_bytes,
                          middlewares=[error_middleware, access_middleware])
    app[CONFIG] = cfg
    app[METRICS] = Metrics()
    app[FEED] = FeedHub()
    app[REGISTRY] = Registry(cfg, app[METRICS])
    app[PREDICT_GATE] = Gate(cfg.max_predict_concurrency)
    app[PREDICT_READING] = Gate(cfg.max_predict_reading)
    if classifier is not None:
        replicas = [classifier]
    elif cfg.ray_address:  # classification on the shared Ray Serve tier (server/remote.py)
        replicas = load_remote_replicas(cfg, app[METRICS])
    else:
        replicas = load_replicas(cfg.model_dir, cfg.backend, threads=infer_threads_for(cfg),
                                 max_batch=cfg.max_batch_size)
    app[CLASSIFIER] = replicas[0]
    app[REPLICAS] = replicas

    async def engine_ctx(app: web.Application):
        app[ENGINE] = Engine.start(cfg, replicas, app[METRICS], app[FEED].publish)
        app[JOBS] = JobQueue(cfg, replicas[0])
        app[JOBS].start()
        yield
        await app[JOBS].close()
        await app[ENGINE].close()

    async def on_shutdown(app: web.Application) -> None:
        peers = list(app[REGISTRY].peers.values())
        results = await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        for peer, r in zip(peers, results):
            if isinstance(r, BaseException):
                log.error("session %s: close failed", peer.sid, exc_info=r)
        await app[FEED].close_all()

    app.cleanup_ctx.append(engine_ctx)
    app.on_shutdown.append(on_shutdown)
    r = app.router
    r.add_get("/", index)
    r.add_get("/static/{path:.+}", static_file)
    r.add_get("/config", client_config)
    r.add_get("/healthz", healthz_with_tier(healthz, cfg, replicas))  # + the tier's fields
    r.add_post("/offer", offer)
    r.add_post("/api/predict", predict)
    r.add_get("/metrics", metrics)
    r.add_get("/ws", feed_handler)
    r.add_get("/ws/stream", stream_handler)
    r.add_get(r"/api/sessions/{sid}/timeline.{fmt:json|csv}", session_timeline)
    add_routes(app)  # /api/jobs: analysis of uploaded videos
    return app


def serve(cfg: ServerConfig) -> None:
    """Load the model, start the server, print its URL; blocks until Ctrl-C / SIGTERM.

    With ``cfg.ngrok``, a public tunnel is opened in the background once the site is up; if
    that fails, a one-line error is printed and the server keeps serving locally.
    """
    from server.tunnel import PublicTunnel, TunnelError, check_public_safety

    check_public_safety(cfg)
    app = create_app(cfg)
    url = f"http://{cfg.host}:{cfg.port}"

    def on_open(public_url: str) -> None:
        print(f"Public URL: {public_url}\n  (ngrok carries HTTP only: WebRTC media may need "
              f"--ice-server STUN/TURN; otherwise the page falls back to WebSocket streaming)",
              flush=True)

    def on_error(exc: TunnelError) -> None:
        print(f"error: no public URL: {exc}. Still serving locally on {url}", file=sys.stderr,
              flush=True)

    tunnel = PublicTunnel(cfg, on_open, on_error) if cfg.ngrok else None

    def announce(_: str) -> None:
        mark_serving()
        print(f"FaceDApps serving on {url} (model {app[CLASSIFIER].name}, backend "
              f"{app[CLASSIFIER].backend}); Ctrl-C to stop", flush=True)
        if tunnel is not None:
            print("Opening the public ngrok tunnel ...", flush=True)
            tunnel.start()

    try:
        web.run_app(app, host=cfg.host, port=cfg.port, print=announce, shutdown_timeout=5,
                    handle_signals=True, access_log_class=AccessLogger)
    except OSError as exc:
        raise ServeError(f"cannot listen on {cfg.host}:{cfg.port}: {exc}") from exc
    finally:
        if tunnel is not None:
            tunnel.close()
