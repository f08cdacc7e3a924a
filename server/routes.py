"""The plain HTTP routes: the page and its config, ``POST /api/predict``, health, metrics and
session timelines. (``/offer`` is in ``signaling``, the WebSockets in ``feed`` and
``transports.ws_stream``; the access rule for all of them is ``access.access_middleware``.)"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from aiohttp import web

from core.errors import ImageError
from server.adapt import AdaptiveReuse
from server.config import detect_workers_for
from server.errors import CapacityError, json_error
from server.state import (
    CLASSIFIER,
    CONFIG,
    ENGINE,
    METRICS,
    PREDICT_GATE,
    PREDICT_READING,
    REGISTRY,
    REPLICAS,
)

log = logging.getLogger(__name__)


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(Path(request.app[CONFIG].client_dir) / "index.html")


async def static_file(request: web.Request) -> web.StreamResponse:
    """``GET /static/{path}``: a file of the page; a JSON 404 for anything else (aiohttp's own
    static route answered a missing file with an empty body)."""
    root = Path(request.app[CONFIG].client_dir).resolve()
    try:
        path = (root / request.match_info["path"]).resolve()
        found = root in path.parents and path.is_file()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a name too long, a link loop
        found = False
    if not found:
        return json_error(404, "no such file")
    return web.FileResponse(path)


async def client_config(request: web.Request) -> web.Response:
    """``GET /config``: ICE servers and transport settings for the page."""
    cfg = request.app[CONFIG]
    servers = []
    for u in cfg.ice_servers:
        entry: dict = {"urls": [u]}
        if u.startswith("turn") and cfg.turn_username:
            entry.update(username=cfg.turn_username, credential=cfg.turn_credential or "")
        servers.append(entry)
    return web.json_response({"ice_servers": servers, "transport": "auto",
                              "webrtc_timeout_ms": 5000,
                              "access_token_required": bool(cfg.access_token),
                              "max_upload_bytes": cfg.max_upload_bytes,
                              "job_ttl_s": cfg.job_ttl_s})


MALFORMED_BODY = "malformed body: send the image as the raw body or the multipart field 'image'"


async def _read_image(request: web.Request) -> bytes:
    """The uploaded image: the raw body, or the multipart field ``image`` (ImageError if none)."""
    if not request.content_type.startswith("multipart/"):
        return await request.read()
    try:
        reader = await request.multipart()
        async for part in reader:
            if getattr(part, "name", None) == "image":
                return await part.read(decode=False)  # type: ignore[union-attr]
    except (ValueError, KeyError) as exc:  # no boundary, a broken part: the parser's text stays
        raise ImageError(MALFORMED_BODY) from exc
    raise ImageError("multipart body needs a field named 'image'")


async def predict(request: web.Request) -> web.Response:
    """``POST /api/predict``: one JPEG/PNG/WebP -> ``{"width", "height", "faces"}``; the body
    is read first (408 after ``predict_read_timeout_s``), then at most
    ``max_predict_concurrency`` photos are classified at once (503 beyond)."""
    cfg = request.app[CONFIG]
    reading = request.app[PREDICT_READING]
    if not reading.enter():
        return json_error(503, f"server busy (at most {reading.limit} photos arriving at once); "
                          "try again")
    try:
        data = await asyncio.wait_for(_read_image(request), cfg.predict_read_timeout_s)
    except asyncio.TimeoutError:
        late = json_error(408, f"the image did not arrive within {cfg.predict_read_timeout_s:g} s")
        late.force_close()
        return late
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, f"image too large (at most {cfg.max_body_bytes} bytes)")
    except ImageError as exc:
        return json_error(exc.status, str(exc))
    finally:
        reading.leave()
    gate = request.app[PREDICT_GATE]
    if not gate.enter():
        return json_error(503, f"server busy (at most {gate.limit} photos at once); try again")
    try:
        return web.json_response(await request.app[ENGINE].classify_image(data))
    except ImageError as exc:
        return json_error(exc.status, str(exc))
    except CapacityError as exc:
        return json_error(503, str(exc))
    finally:
        gate.leave()


def _detector_modes(request: web.Request) -> dict[str, str]:
    """``{"live": mode, "photo": mode, "live_now": mode}``: the face detector modes configured
    and the one live frames use now (``fast`` while overloaded; see core.faces, server.adapt)."""
    engine = request.app.get(ENGINE)
    if engine is not None:
        return engine.detector_modes()
    cfg = request.app[CONFIG]
    return {"live": cfg.detect_live_mode, "photo": cfg.detect_photo_mode,
            "live_now": cfg.detect_live_mode}


def _reuse(request: web.Request) -> dict:
    """``reuse_s`` (the age now), ``reuse_max_s``: the load-adaptive classification plan."""
    engine = request.app.get(ENGINE)
    if engine is not None:
        r = engine.reuse
    else:  # before start-up: what the engine will use, by the same rule
        cfg = request.app[CONFIG]
        r = AdaptiveReuse(cfg.reuse_s, cfg.reuse_max_s)
    return {"reuse_s": r.value(time.monotonic()), "reuse_max_s": r.cap_s}


async def healthz(request: web.Request) -> web.Response:
    clf = request.app[CLASSIFIER]
    return web.json_response({"status": "ok", "model": clf.name, "backend": clf.backend,
                              "device": ",".join(getattr(c, "device", "CPU")
                                                 for c in request.app[REPLICAS]),
                              "infer_threads": getattr(clf, "threads", None),
                              "detect_workers": detect_workers_for(request.app[CONFIG]),
                              "detector": _detector_modes(request),
                              **_reuse(request),
                              "sessions": len(request.app[REGISTRY].sessions)})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(),
                        content_type="text/plain", charset="utf-8")


async def session_timeline(request: web.Request) -> web.Response:
    """``GET /api/sessions/{id}/timeline.json|csv``: per-second probabilities of each face."""
    s = request.app[REGISTRY].sessions.get(request.match_info["sid"])
    if s is None:
        return json_error(404, "no such live session")
    if request.match_info["fmt"] == "csv":
        return web.Response(text=s.timeline.to_csv(), content_type="text/csv",
                            headers={"Content-Disposition":
                                     f'attachment; filename="timeline-{s.sid}.csv"'})
    return web.json_response(s.timeline.to_json())
