"""WebSocket frame transport (/ws/stream) and result feed (/ws)."""

import aiohttp
import cv2
import pytest

from server.app import create_app
from server.config import ServerConfig
from server.state import REGISTRY
from tests.helpers import FakeClassifier, face_frame, iou, wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def client(aiohttp_client):
    app = create_app(ServerConfig(max_ws_message_bytes=256 * 1024, max_messages_per_s=30),
                     classifier=FakeClassifier())
    return await aiohttp_client(app)


def jpeg(img) -> bytes:
    return cv2.imencode(".jpg", img)[1].tobytes()


async def test_stream_frames_get_results_and_feed_sees_them(client):
    frame, box = face_frame(2)
    feed = await client.ws_connect("/ws")
    assert await feed.receive_json(timeout=5) == {"type": "hello", "session": None}
    ws = await client.ws_connect("/ws/stream")
    hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "hello"
    for _ in range(3):
        await ws.send_bytes(jpeg(frame))
        msg = await ws.receive_json(timeout=10)
        assert msg["type"] == "result" and msg["session"] == hello["session"]
        assert iou(msg["faces"][0]["box"], box) > 0.25
        face = msg["faces"][0]
        # the filtered decision: the fake's happy is confident, so not uncertain
        assert face["label"] == "happy" and face["uncertain"] is False
    fed = await feed.receive_json(timeout=5)
    assert fed["type"] == "result" and fed["session"] == hello["session"]
    await ws.close()
    await feed.close()
    await wait_for(lambda: not client.app[REGISTRY].sessions, 5, what="session removal")


async def test_stream_bad_frame_gets_error_and_stays_open(client):
    ws = await client.ws_connect("/ws/stream")
    await ws.receive_json(timeout=5)
    await ws.send_bytes(b"definitely not a jpeg")
    msg = await ws.receive_json(timeout=10)
    assert msg["type"] == "error" and "JPEG" in msg["error"]
    frame, _ = face_frame(0)
    await ws.send_bytes(jpeg(frame))
    assert (await ws.receive_json(timeout=10))["type"] == "result"
    await ws.close()


async def test_stream_text_messages_get_a_pong_or_an_error(client):
    ws = await client.ws_connect("/ws/stream")
    await ws.receive_json(timeout=5)
    await ws.send_str('{"type":"pong"}')  # answered by nothing: the next answer is the ping's
    for text in ('{"type":"ping"}', '{ "type": "ping", "t": 1 }'):
        await ws.send_str(text)
        assert await ws.receive_json(timeout=5) == {"type": "pong"}
    for text in ("hello there", '{"type":"bogus"}', "[1, 2, 3]", "[" * 100000):
        await ws.send_str(text)
        msg = await ws.receive_json(timeout=5)
        assert msg["type"] == "error" and msg["error"].startswith("unknown message"), text
    frame, _ = face_frame(0)
    await ws.send_bytes(jpeg(frame))  # the socket stayed open
    assert (await ws.receive_json(timeout=10))["type"] == "result"
    await ws.close()


async def test_stream_oversized_message_closes_the_socket(client):
    ws = await client.ws_connect("/ws/stream")
    await ws.receive_json(timeout=5)
    await ws.send_bytes(b"\xff\xd8\xff" + b"\x00" * (300 * 1024))
    msg = await ws.receive(timeout=10)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING)
    await wait_for(lambda: not client.app[REGISTRY].sessions, 5, what="session removal")


async def test_stream_flood_is_cut_off(client):
    ws = await client.ws_connect("/ws/stream")
    await ws.receive_json(timeout=5)
    for _ in range(200):
        if ws.closed:
            break
        await ws.send_bytes(b"\xff\xd8\xff")
    kinds = []
    while True:
        msg = await ws.receive(timeout=10)
        kinds.append(msg.type)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
    assert ws.close_code == 1008
    await wait_for(lambda: not client.app[REGISTRY].sessions, 5, what="session removal")


async def test_feed_filters_by_session(client):
    frame, _ = face_frame(0)
    a = await client.ws_connect("/ws/stream")
    b = await client.ws_connect("/ws/stream")
    sa = (await a.receive_json(timeout=5))["session"]
    await b.receive_json(timeout=5)
    feed = await client.ws_connect(f"/ws?session={sa}")
    # the hello says the subscription is live: nothing published from now on is missed
    assert await feed.receive_json(timeout=5) == {"type": "hello", "session": sa}
    for ws in (a, b, a):
        await ws.send_bytes(jpeg(frame))
        await ws.receive_json(timeout=10)
    got = [await feed.receive_json(timeout=5) for _ in range(2)]
    assert {m["session"] for m in got} == {sa}
    for ws in (a, b, feed):
        await ws.close()


async def test_stream_at_capacity_says_so_on_the_socket(aiohttp_client):
    app = create_app(ServerConfig(max_sessions=1), classifier=FakeClassifier())
    client = await aiohttp_client(app)
    a = await client.ws_connect("/ws/stream")
    await a.receive_json(timeout=5)
    b = await client.ws_connect("/ws/stream")
    msg = await b.receive_json(timeout=5)
    assert msg["type"] == "error" and "capacity" in msg["error"]
    closing = await b.receive(timeout=5)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert b.close_code == 1013
    await a.close()
    await wait_for(lambda: not app[REGISTRY].sessions, 5, what="session removal")


async def test_stream_small_faces_are_found_by_the_live_scan_and_keep_their_ids(client):
    """Twelve 40 px faces in 640x480 JPEG frames: the whole-frame pass finds none; the session's
    scan finds them window by window, and a face once found is on every later result with the
    same id (carried between its scans), each id on a real face, no extra ids."""
    from tests.detection_scenes import face_grid

    img, boxes = face_grid([40] * 12, 640, 480, cols=4)
    ws = await client.ws_connect("/ws/stream")
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    seen: list[set[int]] = []
    for _ in range(14):  # one 12-frame cycle and a bit
        await ws.send_bytes(jpeg(img))
        msg = await ws.receive_json(timeout=10)
        assert msg["type"] == "result", msg
        for face in msg["faces"]:  # its centre on one of the pasted faces
            x, y, w, h = face["box"]
            cx, cy = x + w / 2, y + h / 2
            assert any(bx <= cx <= bx + bw and by <= cy <= by + bh
                       for bx, by, bw, bh in boxes), face
        seen.append({face["id"] for face in msg["faces"]})
    assert not seen[0] and len(seen[-1]) >= 3, seen
    for earlier, later in zip(seen, seen[1:]):
        assert earlier <= later
    assert set().union(*seen) == seen[-1]
    await ws.close()


async def test_under_sustained_overload_live_frames_shed_the_scan(client):
    """While the server sheds detection (server.adapt: the reuse age at its cap and frames still
    dropped), live frames take one fast whole-frame pass: a close face is still found, the 40 px
    faces the scan would find are not, and /healthz says which detector is in use."""
    from server.state import ENGINE
    from tests.detection_scenes import face_grid

    engine = client.app[ENGINE]
    assert engine.overload_pipeline is not None and engine.overload_pipeline.mode == "fast"
    engine.reuse.shedding = True  # as after an overload (the controller: tests/unit/test_adapt)
    health = await (await client.get("/healthz")).json()
    assert health["detector"] == {"live": "live", "photo": "accurate", "live_now": "fast"}
    ws = await client.ws_connect("/ws/stream")
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    frame, box = face_frame(2)
    await ws.send_bytes(jpeg(frame))
    msg = await ws.receive_json(timeout=10)
    assert [iou(f["box"], box) > 0.3 for f in msg["faces"]] == [True]
    small, _ = face_grid([40] * 12, 640, 480, cols=4)
    for _ in range(6):
        await ws.send_bytes(jpeg(small))
        assert (await ws.receive_json(timeout=10))["faces"] == []
    assert "facedapps_frames_shed_total 7.0" in await (await client.get("/metrics")).text()
    engine.reuse.shedding = False  # the load fell: the scan starts a new cycle
    found = 0
    for _ in range(14):
        await ws.send_bytes(jpeg(small))
        found = len((await ws.receive_json(timeout=10))["faces"])
    assert found >= 3
    health = await (await client.get("/healthz")).json()
    assert health["detector"]["live_now"] == "live"
    await ws.close()
