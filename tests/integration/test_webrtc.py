"""WebRTC loopback: a real aiortc client streams a real face and gets result messages back."""

import aiohttp
import pytest

from bench.rtc_client import FaceTrack, RtcClient
from core.runtimes import load_classifier
from server.app import create_app
from server.config import ServerConfig
from server.state import REGISTRY
from tests.helpers import FakeClassifier, iou, wait_for

pytestmark = pytest.mark.timeout(90)


async def start(aiohttp_server, classifier, **kw):
    app = create_app(ServerConfig(**kw), classifier=classifier)
    server = await aiohttp_server(app, host="127.0.0.1")
    return app, str(server.make_url("")).rstrip("/")


async def test_one_client_gets_boxes_on_the_face(aiohttp_server, tiny_model_dir):
    app, url = await start(aiohttp_server, load_classifier(tiny_model_dir, "keras"))
    async with aiohttp.ClientSession() as http:
        c = RtcClient(url)
        await c.connect(http)
        await wait_for(lambda: len(c.results) >= 5, 30, what="5 results")
        msg = c.results[-1]
        assert msg["session"] == c.session
        assert (msg["width"], msg["height"]) == (640, 480)
        assert msg["latency_ms"] > 0
        assert len(msg["faces"]) == 1
        face = msg["faces"][0]
        assert iou(face["box"], c.track.box) > 0.25
        assert abs(sum(face["scores"].values()) - 1.0) < 0.01
        assert face["label"] in face["scores"] and 0 <= face["score"] <= 1
        frames = [m["frame"] for m in c.results]
        assert frames == sorted(frames) and len(set(frames)) == len(frames)
        ids = {m["faces"][0]["id"] for m in c.results if m["faces"]}
        assert len(ids) == 1  # a still face keeps its track id
        # the same session's results on the /ws feed
        async with http.ws_connect(url + f"/ws?session={c.session}") as ws:
            assert await ws.receive_json(timeout=10) == {"type": "hello", "session": c.session}
            fed = await ws.receive_json(timeout=10)
            assert fed["type"] == "result" and fed["session"] == c.session
        metrics = await (await http.get(url + "/metrics")).text()
        assert "facedapps_frames_processed_total" in metrics
        await c.close()
        await wait_for(lambda: not app[REGISTRY].sessions, 10, what="session removal")


async def test_two_clients_get_their_own_results(aiohttp_server):
    fake = FakeClassifier()
    app, url = await start(aiohttp_server, fake)
    async with aiohttp.ClientSession() as http:
        a = RtcClient(url, FaceTrack(0, x=40, y=40))
        b = RtcClient(url, FaceTrack(1, x=400, y=260))
        await a.connect(http)
        await b.connect(http)
        assert a.session != b.session
        await wait_for(lambda: len(a.results) >= 5 and len(b.results) >= 5, 30,
                       what="results for both clients")
        for c in (a, b):
            assert {m["session"] for m in c.results} == {c.session}
            x, y, w, h = c.results[-1]["faces"][0]["box"]  # the face inside its pasted image
            tx, ty, tw, th = c.track.box
            assert tx <= x + w / 2 <= tx + tw and ty <= y + h / 2 <= ty + th
        health = await (await http.get(url + "/healthz")).json()
        assert health["sessions"] == 2
        await a.close()
        await b.close()
        await wait_for(lambda: not app[REGISTRY].sessions, 10, what="session removal")


async def test_capacity_answers_503(aiohttp_server):
    app, url = await start(aiohttp_server, FakeClassifier(), max_sessions=1)
    async with aiohttp.ClientSession() as http:
        a = RtcClient(url)
        await a.connect(http)
        await wait_for(lambda: a.results, 30, what="results")  # connected
        b = RtcClient(url)
        with pytest.raises(RuntimeError, match="503"):
            await b.connect(http)
        await b.close()
        await a.close()
        await wait_for(lambda: not app[REGISTRY].sessions, 10, what="session removal")


async def test_shutdown_closes_connected_peers(aiohttp_server):
    app, url = await start(aiohttp_server, FakeClassifier())
    async with aiohttp.ClientSession() as http:
        c = RtcClient(url)
        await c.connect(http)
        await wait_for(lambda: len(c.results) >= 2, 30, what="results")
        peer = next(iter(app[REGISTRY].peers.values()))
        await app.shutdown()
        assert not app[REGISTRY].peers and not app[REGISTRY].sessions
        assert peer.pc.connectionState == "closed"
        assert all(t.done() for t in peer.tasks)
        await c.close()


async def test_peer_that_never_connects_is_closed_by_the_watchdog(aiohttp_server):
    app, url = await start(aiohttp_server, FakeClassifier(), connect_timeout_s=1.0)
    async with aiohttp.ClientSession() as http:
        c = RtcClient(url)
        await c.connect(http)
        await c.close()  # gone before ICE completed: no goodbye reaches the server
        await wait_for(lambda: not app[REGISTRY].sessions, 15, what="watchdog close")
