"""Hardening: access checks and limits, churn, a slow model, and shutdown with clients.

Everything talks to 127.0.0.1 only, is bounded in count and time, and stops by itself.
Nothing here asserts how fast or how small the server is (that is the benchmark's job): the
tests check counts and orderings that hold on any machine. Waits are bounded waits on a
condition (``wait_for``) or on an event; the only sleeps are a client's own pacing.
Run with ``pytest -s`` to see the figures (cycles, tasks, threads, frames dropped).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
import traceback

import aiohttp
import cv2
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from bench.rtc_client import FaceTrack, RtcClient
from server.app import create_app
from server.config import ServerConfig
from server.state import METRICS, REGISTRY
from tests.helpers import ROOT, FakeClassifier, face_frame, wait_for

pytestmark = pytest.mark.timeout(180)


def small_jpeg(i: int = 0) -> bytes:
    frame, _ = face_frame(i, x=80, y=40, side=140, size=(320, 240))
    return cv2.imencode(".jpg", frame)[1].tobytes()


class SmallFaceTrack(FaceTrack):
    """A 320x240 face track (cheap to encode on a busy CI machine); ``freeze()`` stops it
    sending, as a tab whose camera died would, without closing the connection."""

    def __init__(self, face: int = 0) -> None:
        super().__init__(face)
        self.img, self.box = face_frame(face, x=80, y=40, side=140, size=(320, 240))
        self.frozen = asyncio.Event()

    def freeze(self) -> None:
        self.frozen.set()

    async def recv(self):
        if self.frozen.is_set():
            await asyncio.Event().wait()  # silent forever (until the pc closes the track)
        return await super().recv()


async def start(aiohttp_server, classifier=None, **kw):
    app = create_app(ServerConfig(**kw), classifier=classifier or FakeClassifier())
    server = await aiohttp_server(app, host="127.0.0.1")
    return app, server, str(server.make_url("")).rstrip("/")


def assert_registry_empty(app) -> None:
    reg = app[REGISTRY]
    assert reg.sessions == {} and reg.peers == {} and reg.by_ip == {}
    assert reg._reserved == 0, "a capacity reservation leaked"


async def video_offer() -> tuple[RTCPeerConnection, dict]:
    """A real offer (video + data channel) from an aiortc client."""
    pc = RTCPeerConnection()
    pc.addTrack(SmallFaceTrack())
    pc.createDataChannel("results")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, {"sdp": pc.localDescription.sdp, "type": "offer"}


async def expect_capacity_refusal(http: aiohttp.ClientSession, url: str, **kw) -> None:
    """``/ws/stream`` at capacity: browsers cannot read an HTTP status on an upgrade, so the
    server says it on the socket and closes with 1013 (try again later)."""
    ws = await http.ws_connect(url, **kw)
    msg = await ws.receive_json(timeout=5)
    assert msg["type"] == "error" and "your address" in msg["error"], msg
    closing = await ws.receive(timeout=5)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER
    await ws.close()


# --------------------------------------------------------------------------- origin, token, caps

@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", ["/ws", "/ws/stream"])
async def test_websocket_upgrade_with_foreign_origin_is_403(aiohttp_server, path):
    app, server, url = await start(aiohttp_server, allowed_origins=("https://friend.example",))
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await http.ws_connect(url + path, headers={"Origin": "http://evil.example"})
        assert e.value.status == 403
        # the server's own origin and a configured one are accepted
        for origin in (url, "https://friend.example"):
            ws = await http.ws_connect(url + path, headers={"Origin": origin})
            if path == "/ws/stream":
                assert (await ws.receive_json(timeout=5))["type"] == "hello"
            await ws.close()
    await wait_for(lambda: not app[REGISTRY].sessions, 5, what="session removal")
    assert_registry_empty(app)


@pytest.mark.timeout(60)
async def test_public_tunnel_origin_passes_same_origin_check(aiohttp_server):
    """Through ngrok the browser's Origin is the public https origin and the agent forwards
    the public Host unchanged, so the same-origin check passes without configuration."""
    app, server, url = await start(aiohttp_server, ngrok=True, insecure_public=True)
    host = "abcd-1-2-3-4.ngrok-free.app"
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url + "/ws/stream", headers={
            "Host": host, "Origin": f"https://{host}", "X-Forwarded-For": "203.0.113.7"})
        assert (await ws.receive_json(timeout=5))["type"] == "hello"
        assert app[REGISTRY].by_ip == {"203.0.113.7": 1}
        await ws.close()
        r = await http.post(url + "/offer", data=b"{}", headers={
            "Host": host, "Origin": "https://evil.example"})
        assert r.status == 403


@pytest.fixture
async def capped(aiohttp_server):
    """A server allowing 2 sessions per address, with this address's 2 streams open:
    ``(app, url, http, [stream a, stream b])``; everything closed afterwards."""
    app, server, url = await start(aiohttp_server, max_sessions=10, max_sessions_per_ip=2)
    async with aiohttp.ClientSession() as http:
        streams = [await http.ws_connect(url + "/ws/stream") for _ in range(2)]
        for ws in streams:
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
        try:
            yield app, url, http, streams
        finally:
            for ws in streams:
                await ws.close()
    await wait_for(lambda: not app[REGISTRY].sessions, 5, what="session removal")
    assert_registry_empty(app)


@pytest.mark.timeout(60)
async def test_per_address_cap_refuses_another_stream(capped):
    app, url, http, streams = capped
    await expect_capacity_refusal(http, url + "/ws/stream")
    assert len(app[REGISTRY].sessions) == 2


@pytest.mark.timeout(60)
async def test_per_address_cap_refuses_an_offer_with_503(capped):
    """WebRTC offers count against the same per-address cap: 503 with a message."""
    app, url, http, streams = capped
    pc, offer = await video_offer()
    try:
        r = await http.post(url + "/offer", json=offer)
        body = await r.json()
    finally:
        await pc.close()
    assert r.status == 503 and "your address" in body["error"]
    assert len(app[REGISTRY].sessions) == 2


@pytest.mark.timeout(60)
async def test_per_address_cap_frees_the_slot_when_a_session_ends(capped):
    app, url, http, streams = capped
    await streams[0].close()
    await wait_for(lambda: len(app[REGISTRY].sessions) == 1, 5, what="slot freed")
    c = await http.ws_connect(url + "/ws/stream")  # room again
    streams.append(c)  # closed by the fixture
    assert (await c.receive_json(timeout=5))["type"] == "hello"


@pytest.mark.timeout(60)
async def test_behind_ngrok_the_cap_applies_per_visitor(aiohttp_server):
    """All tunnelled requests come from the local agent; X-Forwarded-For tells visitors apart."""
    app, server, url = await start(aiohttp_server, max_sessions_per_ip=1, ngrok=True,
                                   insecure_public=True)
    async with aiohttp.ClientSession() as http:
        a = await http.ws_connect(url + "/ws/stream", headers={"X-Forwarded-For": "198.51.100.1"})
        b = await http.ws_connect(url + "/ws/stream",
                                  headers={"X-Forwarded-For": "10.9.9.9, 198.51.100.2"})
        for ws in (a, b):
            await ws.receive_json(timeout=5)
        assert app[REGISTRY].by_ip == {"198.51.100.1": 1, "198.51.100.2": 1}
        await expect_capacity_refusal(http, url + "/ws/stream",
                                      headers={"X-Forwarded-For": "198.51.100.1"})
        for ws in (a, b):
            await ws.close()
    await wait_for(lambda: not app[REGISTRY].sessions, 5, what="session removal")
    assert_registry_empty(app)


TOKEN = "s3cret-token"


@pytest.fixture
async def token_server(aiohttp_server):
    """A server that requires the access token ``TOKEN``: ``(app, url)``."""
    app, _, url = await start(aiohttp_server, access_token=TOKEN, connect_timeout_s=2)
    return app, url


@pytest.mark.timeout(60)
async def test_access_token_is_announced_and_healthz_is_not_gated(token_server):
    app, url = token_server
    async with aiohttp.ClientSession() as http:
        cfg = await (await http.get(url + "/config")).json()
        assert cfg["access_token_required"] is True
        assert (await http.get(url + "/healthz")).status == 200


@pytest.mark.timeout(60)
@pytest.mark.parametrize("query,headers", [("", {}), ("?token=wrong", {}),
                                           ("", {"X-Access-Token": "nope"})],
                         ids=["none", "wrong-query", "wrong-header"])
async def test_missing_or_wrong_access_token_is_401_everywhere(token_server, query, headers):
    app, url = token_server
    pc, offer = await video_offer()
    try:
        async with aiohttp.ClientSession() as http:
            r = await http.post(url + "/offer" + query, json=offer, headers=headers)
            assert r.status == 401 and "token" in (await r.json())["error"]
            for path in ("/ws/stream", "/ws"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                    await http.ws_connect(url + path + query, headers=headers)
                assert e.value.status == 401, path
    finally:
        await pc.close()
    assert_registry_empty(app)  # nothing was reserved for a refused client


@pytest.mark.timeout(60)
async def test_right_access_token_opens_offer_stream_and_feed(token_server):
    app, url = token_server
    pc, offer = await video_offer()
    async with aiohttp.ClientSession() as http:
        r = await http.post(url + f"/offer?token={TOKEN}", json=offer)
        body = await r.json()
        assert r.status == 200 and body["type"] == "answer" and body["session"]
        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], body["type"]))
        ws = await http.ws_connect(url + "/ws/stream", headers={"X-Access-Token": TOKEN})
        assert (await ws.receive_json(timeout=5))["type"] == "hello"
        feed = await http.ws_connect(url + f"/ws?token={TOKEN}")
        await ws.close()
        await feed.close()
        await pc.close()
    await wait_for(lambda: not app[REGISTRY].sessions, 20, what="session removal")
    assert_registry_empty(app)


@pytest.mark.timeout(90)
async def test_data_channel_flood_closes_the_peer(aiohttp_server):
    app, server, url = await start(aiohttp_server, max_messages_per_s=20)
    async with aiohttp.ClientSession() as http:
        c = RtcClient(url, SmallFaceTrack())
        await c.connect(http)
        await wait_for(lambda: c.results, 30, what="first result")
        ch = c.channel
        ch.send(json.dumps({"type": "ping"}))
        await wait_for(lambda: any(m.get("type") == "pong" for m in c.messages), 10,
                       what="pong to a ping")
        for _ in range(200):
            ch.send('{"type":"ping"}')
        await wait_for(lambda: not app[REGISTRY].sessions, 15, what="flooding peer closed")
        await c.close()
    assert_registry_empty(app)


@pytest.mark.timeout(60)
async def test_extra_tracks_are_answered_inactive_and_extra_channels_closed(aiohttp_server):
    """Only the first video track is received: a second video and an audio track are answered
    inactive, so nothing is sent or decoded for them (unread tracks used to fill memory without
    bound); data channels beyond MAX_CHANNELS are closed (each result goes to every one)."""
    from aiortc import AudioStreamTrack

    from server.transports.webrtc import MAX_CHANNELS

    app, server, url = await start(aiohttp_server)
    pc = RTCPeerConnection()
    pc.addTrack(SmallFaceTrack())
    pc.addTrack(AudioStreamTrack())
    pc.addTrack(SmallFaceTrack(1))
    channels = [pc.createDataChannel(f"c{i}") for i in range(MAX_CHANNELS + 3)]
    results: list[dict] = []
    channels[0].on("message", lambda m: results.append(json.loads(m)))
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        r = await http.post(url + "/offer", json={"sdp": pc.localDescription.sdp,
                                                   "type": "offer"})
        assert r.status == 200, await r.text()
        answer = await r.json()
    media = answer["sdp"].split("\r\nm=")[1:]
    directions = [(m.split()[0], next(d for d in ("recvonly", "inactive", "sendrecv",
                                                  "sendonly") if f"a={d}" in m))
                  for m in media if not m.startswith("application")]
    assert directions == [("video", "recvonly"), ("audio", "inactive"), ("video", "inactive")]
    await pc.setRemoteDescription(RTCSessionDescription(**{k: answer[k]
                                                           for k in ("sdp", "type")}))
    await wait_for(lambda: any(m.get("type") == "result" and m.get("faces") for m in results),
                   30, what="a result from the first video track")
    await wait_for(lambda: sum(c.readyState == "open" for c in channels) == MAX_CHANNELS, 10,
                   what="extra data channels closed")
    peer = next(iter(app[REGISTRY].peers.values()))
    assert len(peer.channels) == MAX_CHANNELS
    await pc.close()
    await wait_for(lambda: not app[REGISTRY].sessions, 40, what="session closed")
    assert_registry_empty(app)


@pytest.mark.timeout(60)
async def test_offer_nested_too_deep_is_400(aiohttp_server):
    app, server, url = await start(aiohttp_server)
    async with aiohttp.ClientSession() as http:
        r = await http.post(url + "/offer", data=b"[" * 100_000 + b"]" * 100_000)
        assert r.status in (400, 413) and "error" in await r.json()
        r = await http.post(url + "/offer", data=b"[" * 5_000 + b"]" * 5_000)
        assert r.status == 400 and "JSON" in (await r.json())["error"]
    assert_registry_empty(app)


@pytest.mark.timeout(60)
async def test_feed_floods_and_subscribers_beyond_the_cap_are_closed(aiohttp_server,
                                                                       monkeypatch):
    import server.feed as feed

    monkeypatch.setattr(feed, "MAX_SUBSCRIBERS", 2)
    app, server, url = await start(aiohttp_server, max_messages_per_s=20)
    async with aiohttp.ClientSession() as http:
        subs = [await http.ws_connect(url + "/ws") for _ in range(2)]
        for ws in subs:
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
        third = await http.ws_connect(url + "/ws")
        msg = await third.receive_json(timeout=5)
        assert msg["type"] == "error" and "feed subscribers" in msg["error"]
        await third.receive(timeout=5)
        assert third.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER
        flooder = subs[0]
        for _ in range(100):
            await flooder.send_str("x")
        msg = await flooder.receive_json(timeout=5)
        assert msg["type"] == "error" and "too many messages" in msg["error"]
        await flooder.receive(timeout=5)
        assert flooder.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION
        await wait_for(lambda: len(app[feed.FEED].subscribers) == 1, 5, what="unsubscribed")
        for ws in subs:
            await ws.close()


@pytest.mark.timeout(60)
async def test_client_gone_mid_offer_leaks_nothing(aiohttp_server, monkeypatch, caplog):
    """The client disconnects while the server is still answering (the handler is cancelled):
    the reservation is freed and the half-made peer's tasks end."""
    from server import signaling

    answer = signaling.RtcPeer.answer
    answering = asyncio.Event()  # the server is inside its answer, its reader task exists
    cancelled = asyncio.Event()  # the server noticed the client was gone
    release = asyncio.Event()  # only a safety net: the handler is cancelled before this

    async def held_answer(self, sdp, kind):
        result = await answer(self, sdp, kind)  # the video reader task exists by now
        answering.set()
        try:
            await release.wait()  # held until the client has gone
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return result

    monkeypatch.setattr(signaling.RtcPeer, "answer", held_answer)
    app, server, url = await start(aiohttp_server)
    reg = app[REGISTRY]
    pc, offer = await video_offer()
    try:
        async with aiohttp.ClientSession() as http:
            post = asyncio.create_task(http.post(url + "/offer", json=offer))
            await asyncio.wait_for(answering.wait(), 30)
            post.cancel()  # the client gives up; leaving the session closes its connection
            await asyncio.gather(post, return_exceptions=True)
        await asyncio.wait_for(cancelled.wait(), 10)  # the server's handler was cancelled
    finally:
        release.set()
    await pc.close()
    await wait_for(lambda: reg._reserved == 0 and not reg.by_ip, 10, what="reservation freed")
    await wait_for(lambda: not [t for t in asyncio.all_tasks()
                                if t.get_name().startswith(("read-", "close-"))], 10,
                   what="the peer's tasks to end")
    assert_registry_empty(app)
    gc.collect()
    assert "destroyed but it is pending" not in caplog.text


# --------------------------------------------------------------------------- churn

class RawWebSocket:
    """A minimal WebSocket client on a raw socket, so a test can drop it mid-message."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, path: str = "/ws/stream") -> "RawWebSocket":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        status = await asyncio.wait_for(reader.readline(), 10)
        assert b" 101 " in status, status
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        return cls(reader, writer)

    @staticmethod
    def frame(payload: bytes, opcode: int = 0x2) -> bytes:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        data = np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), n)
        return head + mask + data.tobytes()

    def abort(self) -> None:
        self.writer.transport.abort()  # RST, no close frame


class Churn:
    """Connect/disconnect cycles of every kind against one server; counts what ran."""

    def __init__(self, url: str, port: int, http: aiohttp.ClientSession, registry) -> None:
        self.url, self.port, self.http, self.registry = url, port, http, registry
        self.jpeg = small_jpeg(1)
        self.counts: dict[str, int] = {}
        self.rng = random.Random(7)

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    async def ws_clean(self) -> None:
        ws = await self.http.ws_connect(self.url + "/ws/stream")
        assert (await ws.receive_json(timeout=10))["type"] == "hello"
        await ws.send_bytes(self.jpeg)
        msg = await ws.receive_json(timeout=20)
        assert msg["type"] == "result", msg
        await ws.close()
        self._count("ws-clean")

    async def ws_abrupt(self) -> None:
        ws = await RawWebSocket.connect(self.port)
        if self.rng.random() < 0.7:  # usually mid-processing: a frame, then half of another
            ws.writer.write(RawWebSocket.frame(self.jpeg))
            ws.writer.write(RawWebSocket.frame(self.jpeg)[: len(self.jpeg) // 2])
            await ws.writer.drain()
            await asyncio.sleep(self.rng.random() * 0.03)  # pacing: drop at a random moment
        ws.abort()
        self._count("ws-abrupt")

    async def rtc_clean(self) -> None:
        c = RtcClient(self.url, SmallFaceTrack(self.rng.randrange(6)))
        try:
            await c.connect(self.http)
            await wait_for(lambda: c.results, 30, what="first WebRTC result")
        finally:
            await c.close()
        self._count("rtc-clean")

    async def rtc_before_ice(self) -> None:
        """Gone before ICE completes: only the server's connect watchdog can clean up."""
        c = RtcClient(self.url, SmallFaceTrack())
        try:
            await c.connect(self.http)
        finally:
            await c.close()
        self._count("rtc-before-ice")

    async def rtc_cancelled(self) -> None:
        """The client gives up at a random point of its connect (test cancels it)."""
        c = RtcClient(self.url, SmallFaceTrack())
        task = asyncio.ensure_future(c.connect(self.http))
        await asyncio.sleep(self.rng.random() * 0.3)  # pacing: give up at a random moment
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await c.close()
        self._count("rtc-cancelled")

    async def rtc_silent(self) -> None:
        """Connected, then the video goes silent without a goodbye: the idle watchdog."""
        track = SmallFaceTrack()
        c = RtcClient(self.url, track)
        try:
            await c.connect(self.http)
            await wait_for(lambda: c.results, 30, what="first WebRTC result")
            track.freeze()
            await wait_for(lambda: c.pc.connectionState in ("closed", "failed")
                           or c.session not in self.registry.sessions, 20, what="idle close")
        finally:
            await c.close()
        self._count("rtc-silent")

    async def batch(self, coros, width: int) -> None:
        for i in range(0, len(coros), width):
            await asyncio.gather(*coros[i:i + width])


def live_objects() -> dict[str, int]:
    """How many session-related objects (both ends: this process runs the clients too) are
    still alive after a full garbage collection."""
    from server.session import FrameSession
    from server.transports.webrtc import RtcPeer
    from server.transports.ws_stream import WsStreamPeer

    kinds = (FrameSession, RtcPeer, WsStreamPeer, RTCPeerConnection, RtcClient)
    gc.collect()
    counts = dict.fromkeys((k.__name__ for k in kinds), 0)
    for obj in gc.get_objects():
        for k in kinds:
            if isinstance(obj, k):
                counts[k.__name__] += 1
    return counts


def session_tasks() -> list[str]:
    """Names of the live tasks that belong to a session or peer (``proc-``, ``read-``, ...)."""
    return sorted(t.get_name() for t in asyncio.all_tasks()
                  if t.get_name().startswith(("proc-", "read-", "close-", "watchdog-")))


@pytest.mark.timeout(240)
def log_loop_errors_as_text(loop: asyncio.AbstractEventLoop) -> None:
    """Log the loop's unhandled errors (e.g. aiortc's "Task exception was never retrieved" when
    a client closes mid-connect) as text only. The default handler logs the exception object,
    and pytest keeps every log record of a test: its traceback would keep the frames, and the
    peer connection in them, alive until the test ends, which reads as a leak here."""
    def handler(_loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        detail = "".join(traceback.format_exception(exc)) if exc is not None else ""
        logging.getLogger("asyncio").error("%s\n%s", context.get("message"), detail)

    loop.set_exception_handler(handler)


async def test_churn_returns_to_baseline(aiohttp_server):
    """200+ connect/disconnect cycles (clean and abrupt, WebSocket and WebRTC): afterwards no
    sessions, peers or reservations, no session object left alive, and tasks and threads back
    to their count after the warm-up (counts, not megabytes: memory is the benchmark's job)."""
    log_loop_errors_as_text(asyncio.get_running_loop())  # the test's own loop, not shared
    app, server, url = await start(
        aiohttp_server, max_sessions=64, max_sessions_per_ip=64, connect_timeout_s=1.0,
        idle_timeout_s=1.5, heartbeat_s=0.5)
    reg = app[REGISTRY]

    def settled() -> bool:
        return not reg.sessions and not reg.peers and reg._reserved == 0 and not reg.by_ip

    # Objects another test of this process still holds are not this test's leak.
    before = live_objects()

    def freed() -> bool:
        return all(n <= before[k] for k, n in live_objects().items())

    def quiet() -> bool:
        """Settled, and every session's tasks and objects are gone."""
        return settled() and not session_tasks() and freed()

    async with aiohttp.ClientSession() as http:
        churn = Churn(url, server.port, http, reg)

        async def round_(n_ws: int, n_rtc: int) -> None:
            ws = [churn.ws_clean() if i % 2 else churn.ws_abrupt() for i in range(n_ws)]
            await churn.batch(ws, 8)
            rtc = []
            for i in range(n_rtc):
                rtc.append([churn.rtc_clean, churn.rtc_before_ice, churn.rtc_cancelled,
                            churn.rtc_silent][i % 4]())
            await churn.batch(rtc, 4)
            await wait_for(settled, 30, what="all sessions closed")

        # warm-up: thread pools, codecs, detector and allocator reach their steady state
        await round_(24, 24)
        try:
            await wait_for(quiet, 30, 0.2, what="the warm-up's sessions to be gone")
        finally:
            print(f"after warm-up: settled={settled()} session tasks={session_tasks()} "
                  f"objects={live_objects()} (before: {before})")
        base_tasks = len(asyncio.all_tasks())
        base_threads = threading.active_count()
        print(f"\nchurn baseline after warm-up: tasks={base_tasks} threads={base_threads}")
        churn.counts.clear()
        for _ in range(4):
            await round_(50, 7)

    total = sum(churn.counts.values())
    print(f"churn: {total} cycles {churn.counts}")
    assert total >= 200 and churn.counts["rtc-clean"] + churn.counts["rtc-silent"] >= 10
    assert sum(v for k, v in churn.counts.items() if k.startswith("rtc")) >= 20

    await wait_for(settled, 30, what="all sessions closed")
    assert_registry_empty(app)
    metrics = app[METRICS].render().decode()
    for transport in ("ws", "webrtc"):
        assert f'facedapps_sessions{{transport="{transport}"}} 0.0' in metrics

    def back_to_baseline() -> bool:
        return (not session_tasks() and len(asyncio.all_tasks()) <= base_tasks
                and threading.active_count() <= base_threads)

    try:
        await wait_for(back_to_baseline, 20, 0.2, what="tasks and threads back to baseline")
    finally:
        print(f"churn after: tasks={len(asyncio.all_tasks())} (baseline {base_tasks}) "
              f"threads={threading.active_count()} (baseline {base_threads}); "
              f"session tasks left: {session_tasks()}")
    # Nothing of the 200+ sessions is still referenced (a leak would keep them, and their
    # frames, alive): every session, peer and peer connection was freed.
    try:
        await wait_for(freed, 20, 0.2, what="session objects to be freed")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still alive: {live_objects()} (before: {before})") from None


# --------------------------------------------------------------------------- slow model

class StreamClient:
    """A ``/ws/stream`` client: counts the frames it sends, keeps every message it receives.
    Frame ``k`` of a session is the ``k``-th binary message sent (the server numbers them)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, sid: str) -> None:
        self.ws, self.sid = ws, sid
        self.sent = 0
        self.messages: list[dict] = []
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, url: str) -> "StreamClient":
        ws = await http.ws_connect(url + "/ws/stream")
        hello = await ws.receive_json(timeout=10)
        assert hello["type"] == "hello" and hello["session"], hello
        return cls(ws, hello["session"])

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(msg.data))

    async def send(self, data: bytes) -> None:
        self.sent += 1
        await self.ws.send_bytes(data)

    @property
    def results(self) -> list[dict]:
        return [m for m in self.messages if m["type"] == "result"]

    def answered(self, frame: int) -> bool:
        """A result or an error for ``frame`` came back."""
        return any(m.get("frame") == frame for m in self.messages)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(self._reader, 10)


@pytest.fixture
def in_flight(monkeypatch) -> dict[str, int]:
    """Per session id, the most frames that were being processed at the same time."""
    from server.session import FrameSession

    process = FrameSession.process
    now: dict[str, int] = {}
    peak: dict[str, int] = {}

    async def counted(self, picked):
        now[self.sid] = now.get(self.sid, 0) + 1
        peak[self.sid] = max(peak.get(self.sid, 0), now[self.sid])
        try:
            return await process(self, picked)
        finally:
            now[self.sid] -= 1

    monkeypatch.setattr(FrameSession, "process", counted)
    return peak


@pytest.fixture
async def slow_stream(aiohttp_server, in_flight):
    """Two clients stream a face at 15 fps for 3 s into a model that takes 200 ms per batch.
    Returns ``(app, fake classifier, [(client, its server-side session)], in_flight)``; each
    client has waited (bounded) for the answer to its last frame before closing."""
    fake = FakeClassifier(delay_s=0.2)
    app, server, url = await start(aiohttp_server, fake, max_messages_per_s=60)
    fps, n = 15, 45

    async def client(i: int, http: aiohttp.ClientSession):
        c = await StreamClient.open(http, url)
        session = app[REGISTRY].sessions[c.sid]  # kept: its counters outlive the session
        frame = small_jpeg(i)
        t0 = time.perf_counter()
        for k in range(n):
            # pacing: a 15 fps camera (the test's own frame clock, not a wait for the server)
            await asyncio.sleep(max(0.0, t0 + k / fps - time.perf_counter()))
            await c.send(frame)
        await wait_for(lambda: c.answered(n), 30, what=f"client {i}: the answer to frame {n}")
        await c.close()
        return c, session

    async with aiohttp.ClientSession() as http:
        outs = await asyncio.gather(client(0, http), client(1, http))
    await wait_for(lambda: not app[REGISTRY].sessions, 10, what="session removal")
    for i, (c, session) in enumerate(outs):
        print(f"\nclient {i}: sent {c.sent} frames at {fps} fps, got {len(c.results)} results; "
              f"server: {session.frames_processed} processed, {session.frames_dropped} dropped")
    return app, fake, outs, in_flight


@pytest.mark.timeout(120)
async def test_slow_model_drops_stale_frames_instead_of_queueing_them(slow_stream):
    """Latest frame wins: a session never has more than one frame in processing, every frame
    it received was either processed or replaced by a newer one (none is waiting in a queue),
    and frames were dropped (counted per session and in the metrics)."""
    app, fake, outs, in_flight = slow_stream
    for c, session in outs:
        assert session.frames_received == c.sent
        assert session.frames_processed + session.frames_dropped == session.frames_received
        assert session.frames_dropped > 0, "frames are dropped, not queued"
        assert in_flight[c.sid] == 1, "at most one frame in flight per session"
    dropped = app[METRICS].frames_dropped._value.get()
    assert dropped == sum(session.frames_dropped for _, session in outs)
    # one frame in flight per session, one face per frame: no batch bigger than the clients
    assert fake.batches and max(fake.batches) <= len(outs), fake.batches


@pytest.mark.timeout(120)
async def test_slow_model_results_keep_coming_for_ever_newer_frames(slow_stream):
    """Results keep coming while frames are dropped; each is for a newer frame than the one
    before, and the last frame sent is never dropped (it is the latest): its result comes."""
    app, fake, outs, in_flight = slow_stream
    for c, session in outs:
        numbers = [m["frame"] for m in c.results]
        # results for frames between the first and the last: progress during the stream
        assert len(numbers) >= 3, "the slow model still makes progress"
        assert all(a < b for a, b in zip(numbers, numbers[1:])), numbers
        assert numbers[-1] == c.sent, "the newest frame is processed"
        assert [m for m in c.messages if m["type"] == "error"] == []
        assert len(numbers) == session.frames_processed


class GatedClassifier(FakeClassifier):
    """A fake classifier whose calls wait until ``release()``; ``calls`` counts calls begun."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.gate = threading.Event()

    def release(self) -> None:
        self.gate.set()

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if not self.gate.wait(30):
            raise TimeoutError("the test never released the classifier")
        return super().predict_batch(x)


@pytest.mark.timeout(60)
async def test_frames_arriving_while_the_model_is_busy_leave_only_the_newest(aiohttp_server):
    """While frame 1 is in the model, frames 2..6 arrive: each replaces the one before, so
    only frame 6 is processed next; frames 2..5 are counted as dropped."""
    gated = GatedClassifier()
    app, server, url = await start(aiohttp_server, gated, reuse_s=0,
                                   reuse_max_s=0)  # every frame classified
    try:
        async with aiohttp.ClientSession() as http:
            c = await StreamClient.open(http, url)
            session = app[REGISTRY].sessions[c.sid]
            frame = small_jpeg(0)
            await c.send(frame)
            await wait_for(lambda: gated.calls == 1, 30, what="frame 1 in the classifier")
            for _ in range(5):
                await c.send(frame)
            await wait_for(lambda: session.frames_received == 6, 10, what="frames 2..6 in")
            gated.release()
            await wait_for(lambda: c.answered(6), 30, what="the result of frame 6")
            await c.close()
    finally:
        gated.release()
    assert [m["frame"] for m in c.results] == [1, 6]
    assert (session.frames_processed, session.frames_dropped) == (2, 4)
    assert gated.batches == [1, 1]
    assert app[METRICS].frames_dropped._value.get() == 4


@pytest.mark.timeout(60)
async def test_logs_hold_no_image_data(aiohttp_server, caplog):
    """Frames processed, dropped and refused (a broken JPEG) and a session closed, with every
    logger at DEBUG: no log message holds image bytes."""
    caplog.set_level(logging.DEBUG)
    app, server, url = await start(aiohttp_server)
    jpeg = small_jpeg(0)
    async with aiohttp.ClientSession() as http:
        c = await StreamClient.open(http, url)
        for _ in range(5):  # back to back: some are dropped
            await c.send(jpeg)
        await c.send(jpeg[: len(jpeg) // 2])  # frame 6: a broken JPEG, refused
        await wait_for(lambda: c.answered(6), 30, what="the answer to frame 6")
        await c.close()
    await wait_for(lambda: not app[REGISTRY].sessions, 10, what="session removal")
    assert any(m["type"] == "error" and m["frame"] == 6 for m in c.messages), c.messages
    assert caplog.records
    for rec in caplog.records:
        text = rec.getMessage()
        assert len(text) < 2000 and "\\xff\\xd8" not in text and "/9j/" not in text, text[:200]


# --------------------------------------------------------------------------- shutdown

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(240)
async def test_sigterm_with_clients_connected_exits_cleanly(tmp_path, tiny_model_dir):
    port = _free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as ferr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "run.py"), "serve", "--port", str(port), "--model",
            str(tiny_model_dir), stdout=asyncio.subprocess.PIPE, stderr=ferr, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        line = b""
        deadline = time.monotonic() + 150
        while b"serving on" not in line:
            assert time.monotonic() < deadline, err_path.read_text()[-3000:]
            line = await asyncio.wait_for(proc.stdout.readline(), 150)
            assert line, f"server exited: {err_path.read_text()[-3000:]}"
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url + "/ws/stream")
            assert (await ws.receive_json(timeout=10))["type"] == "hello"
            await ws.send_bytes(small_jpeg(0))
            assert (await ws.receive_json(timeout=60))["type"] == "result"
            rtc = RtcClient(url, SmallFaceTrack())
            await rtc.connect(http)
            await wait_for(lambda: rtc.results, 60, what="WebRTC result from the subprocess")
            feed = await http.ws_connect(url + "/ws")
            assert (await feed.receive_json(timeout=30))["type"] == "hello"
            assert (await feed.receive_json(timeout=30))["type"] == "result"
            health = await (await http.get(url + "/healthz")).json()
            assert health["sessions"] == 2
            proc.send_signal(signal.SIGTERM)
            msg = await ws.receive(timeout=10)
            while (fmsg := await feed.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT:
                pass
            rc = await asyncio.wait_for(proc.wait(), 10)  # bounded: a hang fails the test
            await wait_for(lambda: rtc.pc.connectionState in ("closed", "failed"), 30,
                           what="the server's peer connection to close")
            await rtc.close()
        print(f"\nSIGTERM -> exit {rc}; /ws/stream got {msg.type.name} "
              f"{ws.close_code}, /ws got {fmsg.type.name} {feed.close_code}")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = err_path.read_text()
    assert rc == 0, stderr[-3000:]
    assert ws.close_code == feed.close_code == aiohttp.WSCloseCode.GOING_AWAY
    for bad in ("Task exception was never retrieved", "Traceback", "was destroyed but it is "
                                                                    "pending"):
        assert bad not in stderr, stderr[-3000:]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("flags", [["--max-batch", "0"], ["--infer-threads", "-1"],
                                   ["--detect-workers", "-2"], ["--max-sessions", "0"]])
def test_serve_refuses_bad_settings_without_a_traceback(flags):
    import subprocess

    r = subprocess.run([sys.executable, str(ROOT / "run.py"), "serve", "--port", "0", *flags],
                       capture_output=True, text=True, timeout=100, cwd=ROOT)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr, r.stderr[-2000:]


@pytest.mark.timeout(60)
async def test_sessions_use_the_engines_current_reuse_age(aiohttp_server):
    """The age the load controller has reached is what sessions plan with: at a long age a
    tracked face's later frames reuse its probabilities (the classifier sees only frame 1);
    /healthz and /metrics report the age."""
    from server.adapt import AdaptiveReuse
    from server.state import ENGINE

    counting = GatedClassifier()
    counting.release()
    app, server, url = await start(aiohttp_server, counting)
    async with aiohttp.ClientSession() as http:
        health = await (await http.get(url + "/healthz")).json()
        assert (health["reuse_s"], health["reuse_max_s"]) == (0.2, 0.3)
        engine = app[ENGINE]
        engine.reuse = AdaptiveReuse(0.0, 600.0)
        engine.reuse.level_s = 600.0  # as after a long overload
        c = await StreamClient.open(http, url)
        for k in range(1, 4):
            await c.send(small_jpeg(0))
            await wait_for(lambda: c.answered(k), 30, what=f"the result of frame {k}")
        await c.close()
        health = await (await http.get(url + "/healthz")).json()
        metrics = await (await http.get(url + "/metrics")).text()
    assert counting.calls == 1
    assert all(len(m["faces"]) == 1 for m in c.results)
    assert health["reuse_s"] >= 450.0 and health["reuse_max_s"] == 600.0
    assert app[METRICS].faces_reused._value.get() == 2
    assert "facedapps_reuse_seconds" in metrics


@pytest.mark.timeout(60)
async def test_an_inference_outage_logs_once_and_is_not_taken_for_overload(aiohttp_server,
                                                                           caplog):
    """While the (Ray) classifier does not answer, every frame gets an error message, the
    session logs one line (it logged one per frame) and the load controller neither lengthens
    the reuse age nor sheds detection; when it answers again results come back."""
    from server.errors import InferenceUnavailable
    from server.state import ENGINE

    class Outage(FakeClassifier):
        down = True

        def predict_batch(self, x):
            if self.down:
                raise InferenceUnavailable()
            return super().predict_batch(x)

    clf = Outage()
    app, server, url = await start(aiohttp_server, classifier=clf, reuse_s=0.0,
                                   reuse_max_s=0.3)
    caplog.set_level(logging.INFO, logger="server.session")
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url + "/ws/stream")
        assert (await ws.receive_json(timeout=5))["type"] == "hello"

        async def answer_to_frame(i: int) -> dict:
            await ws.send_bytes(small_jpeg(i))
            while True:
                msg = await ws.receive_json(timeout=10)
                if msg["type"] in ("result", "error"):
                    return msg

        errors = [await answer_to_frame(i) for i in range(40)]
        assert all(m["type"] == "error" and "inference tier" in m["error"] for m in errors)
        refused = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) == 1, [r.getMessage() for r in refused]
        engine = app[ENGINE]
        assert engine.reuse.value(time.monotonic()) == 0.0 and not engine.reuse.shedding
        clf.down = False
        assert (await answer_to_frame(99))["type"] == "result"
        await ws.close()
