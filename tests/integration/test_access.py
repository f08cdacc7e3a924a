"""The access rule on every route, the upload concurrency limit, and the client-facing error
vocabulary."""

from __future__ import annotations

import asyncio
import threading

import aiohttp
import cv2
import pytest

from server.access import PUBLIC_ROUTES
from server.app import create_app
from server.config import ServerConfig
from server.errors import INTERNAL
from server.state import PREDICT_GATE
from tests.helpers import FakeClassifier, face_frame, wait_for

pytestmark = pytest.mark.timeout(60)

TOKEN = "s3cret-token"


def png(img) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def concrete(path: str) -> str:
    """A request path for a route's canonical path (placeholders filled in)."""
    out = (path.replace("{sid}", "0123456789abcdef").replace("{fmt}", "json")
           .replace("{job}", "0123456789abcdef").replace("{file}", "frames.csv")
           .replace("/static/{path}", "/static/style.css"))
    assert "{" not in out, f"fill in the placeholders of {path}"
    return out


def routes(app) -> list[tuple[str, str]]:
    return sorted({(r.method, r.resource.canonical) for r in app.router.routes()
                   if r.method != "HEAD"})


@pytest.fixture
async def guarded(aiohttp_client):
    return await aiohttp_client(create_app(ServerConfig(access_token=TOKEN),
                                           classifier=FakeClassifier()))


async def call(client, method: str, path: str, **kw) -> int:
    if path.startswith("/ws"):
        try:
            ws = await client.ws_connect(path, **kw)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        return 101
    async with client.request(method, path, **kw) as r:
        return r.status


async def test_every_route_but_the_public_ones_needs_the_token(guarded):
    found = routes(guarded.app)
    # the list the rule is checked against is the app's own: a new route is covered here
    assert {p for _, p in found} >= {"/offer", "/api/predict", "/ws", "/ws/stream", "/metrics",
                                     "/api/sessions/{sid}/timeline.{fmt}", "/healthz",
                                     "/api/jobs", "/api/jobs/{job}", "/api/jobs/{job}/{file}"}
    for method, path in found:
        url = concrete(path)
        without = await call(guarded, method, url)
        wrong = await call(guarded, method, url, headers={"X-Access-Token": "wrong"})
        with_token = await call(guarded, method, url, headers={"X-Access-Token": TOKEN})
        if path in PUBLIC_ROUTES:
            assert without not in (401, 403), (method, path, without)
        else:
            assert (without, wrong) == (401, 401), (method, path)
        assert with_token not in (401, 403), (method, path, with_token)


async def test_predict_needs_the_token_and_answers_with_it(guarded):
    data = png(face_frame(1)[0])
    r = await guarded.post("/api/predict", data=data)
    assert r.status == 401 and (await r.json())["error"] == "access token required"
    r = await guarded.post("/api/predict?token=nope", data=data)  # says what is wrong
    assert r.status == 401 and (await r.json())["error"] == "access token not valid"
    r = await guarded.post(f"/api/predict?token={TOKEN}", data=data)
    assert r.status == 200 and len((await r.json())["faces"]) == 1


async def test_the_public_routes_are_only_the_page_its_config_and_health():
    assert PUBLIC_ROUTES == {"/", "/config", "/healthz", "/static/{path}"}


class GatedClassifier(FakeClassifier):
    """Blocks in ``predict_batch`` until released (from the test's thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict_batch(self, x):
        self.entered.set()
        assert self.release.wait(30)
        return super().predict_batch(x)


async def test_predict_beyond_the_concurrency_limit_is_503(aiohttp_client):
    clf = GatedClassifier()
    client = await aiohttp_client(create_app(ServerConfig(max_predict_concurrency=1),
                                             classifier=clf))
    data = png(face_frame(0)[0])
    first = asyncio.ensure_future(client.post("/api/predict", data=data))
    await wait_for(lambda: client.app[PREDICT_GATE].active == 1, 10, what="first upload running")
    r = await client.post("/api/predict", data=data)
    assert r.status == 503 and "busy" in (await r.json())["error"]
    clf.release.set()
    r1 = await first
    assert r1.status == 200 and (await r1.json())["faces"][0]["label"] == "happy"
    assert client.app[PREDICT_GATE].active == 0  # the slot is free again
    r = await client.post("/api/predict", data=data)
    assert r.status == 200


class FailingClassifier(FakeClassifier):
    def predict_batch(self, x):
        raise RuntimeError("secret detail: /srv/models/x.keras is corrupt")


async def test_a_failing_frame_gets_a_fixed_message_not_the_exception_text(aiohttp_client):
    client = await aiohttp_client(create_app(ServerConfig(), classifier=FailingClassifier()))
    ws = await client.ws_connect("/ws/stream")
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    await ws.send_bytes(cv2.imencode(".jpg", face_frame(0)[0])[1].tobytes())
    msg = await ws.receive_json(timeout=10)
    assert msg["type"] == "error" and msg["error"] == INTERNAL
    assert "secret" not in msg["error"]
    await ws.close()
    r = await client.post("/api/predict", data=png(face_frame(0)[0]))
    body = await r.json()
    assert r.status == 500 and body == {"error": "internal error"}


async def test_healthz_stays_open_for_probes(guarded):
    body = await (await guarded.get("/healthz")).json()
    assert body["status"] == "ok" and body["sessions"] == 0
