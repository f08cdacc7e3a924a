"""The aiohttp application: routes, shared state under AppKeys, lifecycles, shutdown."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator

from aiohttp import web

from server.batcher import Batcher, BatcherGroup
from server.classifier import Classifier, load_replicas
from server.config import ServerConfig, infer_threads_for
from server.errors import CapacityError, ImageError, ServeError
from server.feed import FeedHub, feed_handler, stream_handler
from server.metrics import Metrics
from server.pipeline import FacePipeline
from server.session import Engine
from server.signaling import Registry, RtcPeer, parse_offer

__all__ = ["create_app", "serve", "ServeError"]

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", ServerConfig)
CLASSIFIER = web.AppKey("classifier", Classifier)
#: Every loaded copy of the classifier, one per inference worker (one per GPU; one on CPU).
REPLICAS = web.AppKey("replicas", list)
ENGINE = web.AppKey("engine", Engine)
REGISTRY = web.AppKey("registry", Registry)
FEED = web.AppKey("feed", FeedHub)
METRICS = web.AppKey("metrics", Metrics)


def client_ip(request: web.Request) -> str:
    """The client's address; behind the ngrok agent (a loopback peer), the last
    ``X-Forwarded-For`` entry, which ngrok appends."""
    ip = request.remote or "unknown"
    if request.app[CONFIG].ngrok and ip in ("127.0.0.1", "::1"):
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
        if forwarded:
            return forwarded
    return ip


def check_access(request: web.Request) -> None:
    """Same-origin (or allowed origin) and, when configured, the access token."""
    cfg = request.app[CONFIG]
    origin = request.headers.get("Origin")
    if origin is not None:
        host = request.headers.get("Host", "")
        own = {f"http://{host}", f"https://{host}"}
        if origin not in own and origin not in cfg.allowed_origins:
            raise web.HTTPForbidden(text='{"error": "origin not allowed"}',
                                    content_type="application/json")
    token = cfg.access_token
    if token:
        given = request.query.get("token") or request.headers.get("X-Access-Token") or ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise web.HTTPUnauthorized(text='{"error": "access token required"}',
                                       content_type="application/json")


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


# --------------------------------------------------------------------------- handlers

async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(Path(request.app[CONFIG].client_dir) / "index.html")


async def client_config(request: web.Request) -> web.Response:
    cfg = request.app[CONFIG]
    servers = []
    for u in cfg.ice_servers:
        entry: dict = {"urls": [u]}
        if u.startswith("turn") and cfg.turn_username:
            entry.update(username=cfg.turn_username, credential=cfg.turn_credential or "")
        servers.append(entry)
    return web.json_response({"ice_servers": servers, "transport": "auto",
                              "webrtc_timeout_ms": 5000,
                              "access_token_required": bool(cfg.access_token)})


async def offer(request: web.Request) -> web.Response:
    check_access(request)
    cfg = request.app[CONFIG]
    registry = request.app[REGISTRY]
    try:
        body = await request.read()
        sdp, kind = parse_offer(body, cfg.max_sdp_chars)
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "request body too large")
    except ValueError as exc:
        return _error(400, str(exc))
    ip = client_ip(request)
    try:
        registry.reserve(ip)
    except CapacityError as exc:
        return _error(503, str(exc))
    peer = RtcPeer(registry, request.app[ENGINE], cfg, ip)
    try:
        answer = await peer.answer(sdp, kind)
    except asyncio.CancelledError:  # client gone mid-offer: free the slot, stop its tasks
        peer.close_soon()
        raise
    except Exception as exc:  # aiortc raises ValueError, KeyError, ... on bad SDP
        log.info("rejected offer from %s: %r", ip, exc)
        await peer.close()
        return _error(400, f"could not use this offer: {exc or type(exc).__name__}")
    peer.start()
    log.info("session %s: new WebRTC peer from %s", peer.sid, ip)
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "session": peer.sid})


async def predict(request: web.Request) -> web.Response:
    """``POST /api/predict``: one JPEG/PNG (raw body or multipart field ``image``)."""
    cfg = request.app[CONFIG]
    try:
        if request.content_type.startswith("multipart/"):
            data = b""
            reader = await request.multipart()
            async for part in reader:
                if getattr(part, "name", None) == "image":
                    data = await part.read(decode=False)  # type: ignore[union-attr]
                    break
            if not data:
                return _error(400, "multipart body needs a field named 'image'")
        else:
            data = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"image too large (at most {cfg.max_body_bytes} bytes)")
    except ValueError as exc:
        return _error(400, f"malformed body: {exc}")
    loop = asyncio.get_running_loop()
    engine = request.app[ENGINE]
    from server.pipeline import decode_image
    from server.protocol import face_dict

    try:
        img = await loop.run_in_executor(engine.executor, decode_image, data, cfg.max_pixels)
    except ImageError as exc:
        return _error(exc.status, str(exc))
    ff = await loop.run_in_executor(engine.executor, engine.pipeline.faces_for_image, img)
    probs = await engine.batcher.submit(ff.batch) if ff.boxes else ff.batch[:0]
    faces = [face_dict(None, b, p, p) for b, p in zip(ff.boxes, probs)]
    return web.json_response({"width": ff.width, "height": ff.height, "faces": faces})


async def healthz(request: web.Request) -> web.Response:
    clf = request.app[CLASSIFIER]
    return web.json_response({"status": "ok", "model": clf.name, "backend": clf.backend,
                              "device": ",".join(getattr(c, "device", "CPU")
                                                 for c in request.app[REPLICAS]),
                              "infer_threads": getattr(clf, "threads", None),
                              "detect_workers": _workers(request.app[CONFIG]),
                              "sessions": len(request.app[REGISTRY].sessions)})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(),
                        content_type="text/plain", charset="utf-8")


async def session_timeline(request: web.Request) -> web.Response:
    """``GET /api/sessions/{id}/timeline.json|csv``: per-second probabilities of each face."""
    check_access(request)
    s = request.app[REGISTRY].sessions.get(request.match_info["sid"])
    if s is None:
        return _error(404, "no such live session")
    if request.match_info["fmt"] == "csv":
        return web.Response(text=s.timeline.to_csv(), content_type="text/csv",
                            headers={"Content-Disposition":
                                     f'attachment; filename="timeline-{s.sid}.csv"'})
    return web.json_response(s.timeline.to_json())


@web.middleware
async def error_middleware(request: web.Request, handler):
    """JSON errors for everything; never a traceback to the client."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, "internal error")


# --------------------------------------------------------------------------- lifecycle

def _workers(cfg: ServerConfig) -> int:
    return cfg.detect_workers or max(1, os.cpu_count() or 1)


def create_app(cfg: ServerConfig, classifier: Classifier | None = None) -> web.Application:
    """Build the application. ``classifier`` defaults to loading ``cfg.model_dir``."""
    app = web.Application(client_max_size=cfg.max_body_bytes, middlewares=[error_middleware])
    app[CONFIG] = cfg
    app[METRICS] = Metrics()
    app[FEED] = FeedHub()
    app[REGISTRY] = Registry(cfg)
    if classifier is None:
        replicas = load_replicas(cfg.model_dir, cfg.backend, threads=infer_threads_for(cfg),
                                 max_batch=cfg.max_batch_size)
    else:
        replicas = [classifier]
    app[CLASSIFIER] = replicas[0]
    app[REPLICAS] = replicas

    async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
        # Decoding + detection threads, and one inference worker per classifier copy: one per
        # GPU, or one on the CPU (whose runtime has its own threads, see infer_threads_for).
        detect_pool = ThreadPoolExecutor(_workers(cfg), thread_name_prefix="detect")
        infer_pools = [ThreadPoolExecutor(1, thread_name_prefix=f"infer{i}")
                       for i in range(len(replicas))]
        batchers = [Batcher(c.predict_batch, pool, cfg.max_batch_size, cfg.max_wait_ms,
                            on_batch=app[METRICS].on_batch)
                    for c, pool in zip(replicas, infer_pools)]
        batcher = batchers[0] if len(batchers) == 1 else BatcherGroup(batchers)
        batcher.start()
        app[ENGINE] = Engine(FacePipeline(), detect_pool, batcher, app[METRICS],
                             app[FEED].publish)
        yield
        await batcher.stop()
        detect_pool.shutdown(wait=True, cancel_futures=True)
        for pool in infer_pools:
            pool.shutdown(wait=True, cancel_futures=True)

    async def on_shutdown(app: web.Application) -> None:
        peers = list(app[REGISTRY].peers.values())
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        await app[FEED].close_all()

    app.cleanup_ctx.append(engine_ctx)
    app.on_shutdown.append(on_shutdown)
    r = app.router
    r.add_get("/", index)
    r.add_static("/static/", cfg.client_dir)
    r.add_get("/config", client_config)
    r.add_post("/offer", offer)
    r.add_post("/api/predict", predict)
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
    r.add_get("/ws", feed_handler)
    r.add_get("/ws/stream", stream_handler)
    r.add_get(r"/api/sessions/{sid}/timeline.{fmt:json|csv}", session_timeline)
    return app


def serve(cfg: ServerConfig) -> None:
    """Load the model, start the server, print its URL; blocks until Ctrl-C / SIGTERM.

    With ``cfg.ngrok``, a public tunnel is opened in the background once the site is up; if
    that fails, a one-line error is printed and the server keeps serving locally.
    """
    import sys

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
        print(f"FaceDApps serving on {url} (model {app[CLASSIFIER].name}, backend "
              f"{app[CLASSIFIER].backend}); Ctrl-C to stop", flush=True)
        if tunnel is not None:
            print("Opening the public ngrok tunnel ...", flush=True)
            tunnel.start()

    try:
        web.run_app(app, host=cfg.host, port=cfg.port, print=announce, shutdown_timeout=5,
                    handle_signals=True)
    except OSError as exc:
        raise ServeError(f"cannot listen on {cfg.host}:{cfg.port}: {exc}") from exc
    finally:
        if tunnel is not None:
            tunnel.close()
