"""HTTP routes through pytest-aiohttp: health, metrics, predict, offer validation."""

import io
import json
import logging
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from server.app import create_app
from server.config import ServerConfig
from server.state import PREDICT_READING
from tests.helpers import (
    FakeClassifier,
    assert_malformed_multipart_refused,
    face_frame,
    iou,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def client(aiohttp_client):
    app = create_app(ServerConfig(max_sessions=2, max_pixels=2000 * 2000,
                                  max_body_bytes=512 * 1024), classifier=FakeClassifier())
    return await aiohttp_client(app)


def jpeg(img, q=90) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes()


async def test_healthz_and_metrics(client):
    r = await client.get("/healthz")
    body = await r.json()
    assert r.status == 200
    assert body == {"status": "ok", "model": "fake", "backend": "fake", "device": "CPU",
                    "infer_threads": None, "detect_workers": ServerConfig().detect_workers
                    or os.cpu_count(),
                    "detector": {"live": "live", "photo": "accurate", "live_now": "live"},
                    "reuse_s": 0.2, "reuse_max_s": 0.3, "sessions": 0}
    r = await client.get("/metrics")
    text = await r.text()
    assert r.status == 200
    for name in ("facedapps_sessions", "facedapps_frames_received_total",
                 "facedapps_frames_dropped_total", "facedapps_batch_size",
                 "facedapps_latency_seconds"):
        assert name in text


async def test_one_inference_worker_per_gpu(aiohttp_client, monkeypatch):
    """With several GPUs the app loads one classifier copy per GPU, each with its own worker,
    and spreads faces over them; /healthz lists the devices."""
    import asyncio

    import server.app as app_mod
    from server.batcher import BatcherGroup

    gpus = []
    for i in range(2):
        c = FakeClassifier(delay_s=0.05)
        c.device = f"GPU:{i}"
        gpus.append(c)
    monkeypatch.setattr(app_mod, "load_replicas", lambda *a, **k: gpus)
    client = await aiohttp_client(create_app(ServerConfig(max_pixels=2000 * 2000,
                                                          max_predict_concurrency=6)))
    body = await (await client.get("/healthz")).json()
    assert body["device"] == "GPU:0,GPU:1" and body["backend"] == "fake"
    assert isinstance(client.app[app_mod.ENGINE].batcher, BatcherGroup)
    img, _ = face_frame()
    data = cv2.imencode(".png", img)[1].tobytes()
    rs = await asyncio.gather(*(client.post("/api/predict", data=data) for _ in range(6)))
    for r in rs:
        assert r.status == 200 and (await r.json())["faces"][0]["label"] == "happy"
    assert gpus[0].batches and gpus[1].batches  # both copies did work


async def test_index_and_config(client):
    r = await client.get("/")
    assert r.status == 200 and "<html" in (await r.text()).lower()
    cfg = await (await client.get("/config")).json()
    assert cfg["ice_servers"] == [] and cfg["transport"] == "auto"


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp", "multipart"])
async def test_predict_finds_the_face(client, fmt):
    frame, box = face_frame(0)
    if fmt in ("png", "webp"):
        data = cv2.imencode(f".{fmt}", frame)[1].tobytes()
        r = await client.post("/api/predict", data=data,
                              headers={"Content-Type": f"image/{fmt}"})
    elif fmt == "jpeg":
        r = await client.post("/api/predict", data=jpeg(frame),
                              headers={"Content-Type": "image/jpeg"})
    else:
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("image", jpeg(frame), filename="f.jpg", content_type="image/jpeg")
        r = await client.post("/api/predict", data=form)
    body = await r.json()
    assert r.status == 200, body
    assert (body["width"], body["height"]) == (640, 480)
    assert len(body["faces"]) == 1
    face = body["faces"][0]
    assert iou(face["box"], box) > 0.25
    assert face["label"] == "happy" and set(face["scores"]) == {
        "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}


def face_crop(side: int = 48):
    """The fixture face alone, ``side`` pixels square (as a FER2013 image)."""
    img, (x, y, w, h) = face_frame(0)
    return cv2.resize(img[y:y + h, x:x + w], (side, side), interpolation=cv2.INTER_AREA)


async def test_predict_face_crop_is_taken_whole(client):
    crop = face_crop()
    r = await client.post("/api/predict", data=jpeg(crop))
    body = await r.json()
    assert r.status == 200 and body["faces"][0]["box"] == [0, 0, 48, 48]


def tiff_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (64, 64)).save(buf, format="TIFF")
    return buf.getvalue()


def huge_png(side: int = 20000) -> bytes:
    # side x side declared in the header; the pixel limit refuses it before decoding.
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG")
    return buf.getvalue()


def png(img) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


@pytest.mark.parametrize("data,status", [
    (b"", 400),
    (jpeg(face_frame(0)[0])[:300], 400),  # truncated
    (b"\xff\xd8\xff" + b"\x00" * 50, 400),  # JPEG magic, garbage after
    (b"hello, not an image", 415),
    (b"GIF89a" + b"\x00" * 20, 415),
], ids=["empty", "truncated", "garbage-jpeg", "text", "gif"])
async def test_predict_bad_input(client, data, status):
    r = await client.post("/api/predict", data=data)
    body = await r.json()
    assert r.status == status, body
    assert isinstance(body["error"], str) and body["error"]


async def test_predict_errors_are_ours_not_the_decoders(client):
    """The image library's own messages (its limits, its exception text) stay in the server."""
    r = await client.post("/api/predict", data=b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    body = await r.json()
    assert r.status == 400
    assert body["error"] == "unreadable jpeg image (corrupt or truncated header)"
    r = await client.post("/api/predict", data=huge_png(30000))  # past PIL's own bomb limit
    body = await r.json()
    assert r.status == 413
    assert body["error"] == "image too large: at most 4000000 pixels are accepted"  # the fixture's


async def test_predict_tiny_and_blank_images(client):
    """An image too small to hold a face is refused; a blank small image has no face (it would
    otherwise be taken whole as a face crop and get a label)."""
    r = await client.post("/api/predict", data=png(np.zeros((1, 1), np.uint8)))
    body = await r.json()
    assert r.status == 400 and body["error"] == "image is 1x1; at least 24x24 pixels are needed"
    r = await client.post("/api/predict", data=png(np.full((96, 96), 128, np.uint8)))
    body = await r.json()
    assert r.status == 200 and body["faces"] == [] and body["width"] == 96
    body = await (await client.post("/api/predict", data=png(face_crop(96)))).json()
    assert [f["box"] for f in body["faces"]] == [[0, 0, 96, 96]]  # a face: taken whole


async def test_predict_tiff_huge_and_oversized(client):
    r = await client.post("/api/predict", data=tiff_bytes())
    assert r.status == 415
    r = await client.post("/api/predict", data=huge_png())
    assert r.status == 413 and "pixels" in (await r.json())["error"]
    r = await client.post("/api/predict", data=b"\xff\xd8\xff" + b"\x00" * (600 * 1024))
    assert r.status == 413 and "error" in await r.json()


async def test_predict_multipart_without_image_field(client):
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("other", b"x", filename="x.bin")
    r = await client.post("/api/predict", data=form)
    assert r.status == 400
    assert (await r.json())["error"] == "multipart body needs a field named 'image'"
    await assert_malformed_multipart_refused(
        client, "/api/predict",
        "malformed body: send the image as the raw body or the multipart field 'image'")


@pytest.mark.parametrize("body", [
    b"",
    b"x" * (1024 * 1024),
    bytes(range(256)) * 4,
    b"not json",
    b"[1, 2]",
    json.dumps({"sdp": "v=0\r\n", "type": "answer"}).encode(),
    json.dumps({"type": "offer"}).encode(),
    json.dumps({"sdp": 5, "type": "offer"}).encode(),
    json.dumps({"sdp": "hello", "type": "offer"}).encode(),
    json.dumps({"sdp": "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
                "type": "offer"}).encode(),
    json.dumps({"sdp": "v=0\r\n" + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n" * 300,
                "type": "offer"}).encode(),
    json.dumps({"sdp": "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n",
                "type": "offer"}).encode(),
], ids=["empty", "1MB", "binary", "not-json", "list", "type-answer", "no-sdp", "sdp-int",
        "sdp-garbage", "no-media", "300-mlines", "broken-video"])
async def test_offer_malformed_is_4xx(client, body):
    r = await client.post("/offer", data=body, headers={"Content-Type": "application/json"})
    assert 400 <= r.status < 500, await r.text()
    assert "error" in await r.json()
    health = await (await client.get("/healthz")).json()
    assert health["sessions"] == 0  # nothing leaked


async def test_offer_foreign_origin_is_refused(client):
    r = await client.post("/offer", data=b"{}", headers={"Origin": "http://evil.example"})
    assert r.status == 403


async def test_unknown_route_is_json_404(client):
    r = await client.get("/nope")
    assert r.status == 404


async def test_unreadable_bodies_missing_files_and_wrong_methods_are_json_4xx(client, caplog):
    # a body that says gzip but is not: the client's mistake, so 400 (it was a 500), and no
    # error in the log (aiohttp read on after the 400 and logged an "Unhandled exception")
    png = cv2.imencode(".png", face_frame(0)[0])[1].tobytes()
    for route in ("/api/predict", "/api/jobs", "/offer"):
        # (aiohttp drops the connection after such a body: one connection per request)
        r = await client.post(route, data=png, headers={"Content-Encoding": "gzip",
                                                        "Connection": "close"})
        body = await r.json()
        assert r.status == 400 and "cannot be read" in body["error"], (route, body)
    r = await client.get("/static/nope.js")  # aiohttp's static route answered with no body
    assert r.status == 404 and (await r.json()) == {"error": "no such file"}
    for bad in ("%2e%2e%2fREADME.md", "a.js%00", "a" * 300):  # outside, a NUL, too long
        r = await client.get(f"/static/{bad}")
        assert r.status == 404 and "error" in await r.json(), bad
    r = await client.get("/static/main.js")
    assert r.status == 200 and r.content_type == "application/javascript"
    r = await client.get("/api/predict")
    assert r.status == 405 and r.headers["Allow"] == "POST" and "error" in await r.json()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


async def test_a_stalled_upload_does_not_hold_a_classification_place(aiohttp_client):
    """Classification places are taken once a photo has arrived: a client that sends part of
    its body and stops does not lock others out (and gets 408 at the read timeout)."""
    import asyncio

    app = create_app(ServerConfig(max_predict_concurrency=1, max_predict_reading=2,
                                  predict_read_timeout_s=5.0), classifier=FakeClassifier())
    client = await aiohttp_client(app)

    async def stall():
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 100000\r\n\r\n\x89PNG")
        await writer.drain()
        return reader, writer

    first = await stall()
    await wait_for(lambda: app[PREDICT_READING].active == 1, 10, what="the stall reading")
    png = cv2.imencode(".png", face_crop())[1].tobytes()  # taken whole: no detector to load
    r = await client.post("/api/predict", data=png)  # the only classification place is free
    assert r.status == 200 and len((await r.json())["faces"]) == 1
    second = await stall()  # but arriving bodies are bounded too (memory)
    await wait_for(lambda: app[PREDICT_READING].active == 2, 10, what="both stalls reading")
    r = await client.post("/api/predict", data=png)
    assert r.status == 503 and "arriving at once" in (await r.json())["error"]
    for reader, writer in (first, second):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 408") and b"Connection: close" in head
        writer.close()


async def test_an_idle_websocket_stream_is_closed_and_frees_its_slot(aiohttp_client):
    import asyncio

    import aiohttp

    from server.state import REGISTRY

    app = create_app(ServerConfig(idle_timeout_s=0.5), classifier=FakeClassifier())
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/ws/stream")
    assert (await ws.receive_json(timeout=10))["type"] == "hello"
    assert len(app[REGISTRY].sessions) == 1

    async def chatter():  # text messages more often than the idle check used to wait
        while not ws.closed:
            await ws.send_str('{"type": "ping"}')
            await asyncio.sleep(0.03)  # pacing, well under the 60 messages/s limit

    talking = asyncio.ensure_future(chatter())
    while (msg := await ws.receive_json(timeout=10))["type"] == "pong":  # no frame sent
        pass
    talking.cancel()
    assert msg["type"] == "error" and "no frame for 0.5 s" in msg["error"]
    closing = await ws.receive(timeout=10)
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008
    await wait_for(lambda: not app[REGISTRY].sessions, 10, what="the slot to be freed")


def test_the_access_log_leaves_out_the_query_string(caplog):
    import logging

    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from server.app import AccessLogger

    request = make_mocked_request("GET", "/api/sessions/abc/timeline.json?token=s3cret")
    forged = make_mocked_request("GET", "/static/a%0d%0aFAKE%20200")
    with caplog.at_level(logging.INFO, logger="test.access"):
        for r in (request, forged):
            AccessLogger(logging.getLogger("test.access"), "").log(r, web.Response(), 0.01)
    assert "/api/sessions/abc/timeline.json" in caplog.text and "s3cret" not in caplog.text
    # the path as sent (still encoded): a CR/LF in it cannot forge a second log line
    assert "/static/a%0d%0aFAKE%20200" in caplog.records[1].getMessage()


async def test_a_session_timeline_starts_with_the_session(client):
    """``start`` is when the session began (not null until a face appears), ``t`` counts from
    it; the CSV has the documented header."""
    import time

    before = time.time()
    ws = await client.ws_connect("/ws/stream")
    sid = (await ws.receive_json(timeout=10))["session"]
    empty = await (await client.get(f"/api/sessions/{sid}/timeline.json")).json()
    assert empty["faces"] == {} and before - 1 <= empty["start"] <= time.time()
    await ws.send_bytes(jpeg(face_frame(0)[0]))
    while (msg := await ws.receive_json(timeout=10))["type"] != "result":
        pass
    assert msg["faces"]
    tl = await (await client.get(f"/api/sessions/{sid}/timeline.json")).json()
    assert tl["start"] == empty["start"]
    [(face_id, seconds)] = tl["faces"].items()
    assert seconds[0]["t"] >= 0 and seconds[0]["n"] == 1 and len(seconds[0]["probs"]) == 7
    csv_text = await (await client.get(f"/api/sessions/{sid}/timeline.csv")).text()
    assert csv_text.splitlines()[0] == ("face_id,second,n,angry,disgust,fear,happy,sad,"
                                        "surprise,neutral")
    await ws.close()
