"""``run.py stream``: the headless client against a test server, over WebRTC and WebSocket."""

from __future__ import annotations

import asyncio
import io
import json

import cv2
import numpy as np
import pytest
from aiohttp import web

from server.app import create_app
from server.config import ServerConfig
from streamer.client import (
    CSV_HEADER,
    ConnectionLost,
    ResultWriter,
    StreamConfig,
    StreamError,
    run,
    server_url,
)
from tests.helpers import FakeClassifier, write_video

pytestmark = pytest.mark.timeout(120)


async def start(aiohttp_server, **kw) -> str:
    return (await start_server(aiohttp_server, **kw))[1]


async def start_server(aiohttp_server, **kw):
    """The test server (to stop it midway) and its URL."""
    app = create_app(ServerConfig(**kw), classifier=FakeClassifier())
    server = await aiohttp_server(app, host="127.0.0.1")
    return server, str(server.make_url("")).rstrip("/")


def result(frame: int) -> dict:
    """A result message with one face, as the server sends it."""
    return {"type": "result", "session": "s", "frame": frame, "latency_ms": 5.0,
            "faces": [{"id": 1, "box": [1, 2, 3, 4], "label": "happy", "score": 0.9,
                       "scores": {"happy": 0.9}}]}


@pytest.fixture
def clip(tmp_path):
    return str(write_video(tmp_path / "c.mp4", "libx264", seconds=1.5))


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
async def test_a_file_streams_and_every_result_is_a_json_line(aiohttp_server, clip, transport):
    url = await start(aiohttp_server)
    out = io.StringIO()
    used = await run(StreamConfig(url, video=clip, transport=transport, drain_s=0.5),
                     ResultWriter(out))
    assert used == transport
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert len(lines) >= 5 and all(m["type"] == "result" for m in lines)
    assert any(m["faces"] and m["faces"][0]["label"] == "happy" for m in lines)
    frames = [m["frame"] for m in lines]
    assert frames == sorted(frames)


async def test_csv_rows_one_per_face(aiohttp_server, clip):
    url = await start(aiohttp_server)
    out = io.StringIO()
    await run(StreamConfig(url, video=clip, transport="ws", drain_s=0.5), ResultWriter(out, "csv"))
    rows = out.getvalue().splitlines()
    assert rows[0].split(",") == CSV_HEADER and len(rows) >= 6
    assert rows[1].split(",")[CSV_HEADER.index("label")] == "happy"


async def test_the_token_is_sent_and_a_refusal_is_one_clear_error(aiohttp_server, clip):
    url = await start(aiohttp_server, access_token="T0K")
    with pytest.raises(StreamError, match="401 Unauthorized: access token required$"):
        await run(StreamConfig(url, video=clip, transport="webrtc"), ResultWriter(io.StringIO()))
    with pytest.raises(StreamError, match="401"):
        await run(StreamConfig(url, video=clip, transport="ws"), ResultWriter(io.StringIO()))
    out = io.StringIO()
    await run(StreamConfig(url, video=clip, token="T0K", transport="ws", drain_s=0.2),
              ResultWriter(out))
    assert out.getvalue()


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
async def test_stop_ends_a_stream_cleanly(aiohttp_server, tmp_path, transport):
    url = await start(aiohttp_server)
    long_clip = str(write_video(tmp_path / "long.mp4", "libx264", seconds=20))
    out, stop = io.StringIO(), asyncio.Event()
    writer = ResultWriter(out)
    original = writer.write

    def write_then_stop(msg: dict) -> None:  # Ctrl-C after the first results
        original(msg)
        if writer.results >= 3:
            stop.set()

    writer.write = write_then_stop  # type: ignore[method-assign]
    assert await asyncio.wait_for(run(StreamConfig(url, video=long_clip, transport=transport),
                                      writer, stop), 30) == transport
    assert 3 <= writer.results < 100


async def test_unreachable_server_and_bad_arguments(clip):
    with pytest.raises(StreamError, match="cannot reach"):
        await run(StreamConfig("http://127.0.0.1:9", video=clip, transport="ws"),
                  ResultWriter(io.StringIO()))
    with pytest.raises(ValueError, match="exactly one"):
        StreamConfig("http://x", video=clip, camera="0")
    for fps in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fps must be a number > 0"):
            StreamConfig("http://x", video=clip, fps=fps)


def test_the_cli_says_what_went_wrong_in_one_line(clip, capsys):
    from run import main

    assert main(["stream", "--server", "http://127.0.0.1:9", "--video", clip, "--transport",
                 "ws"]) == 1
    assert "error: cannot reach" in capsys.readouterr().err


async def test_auto_falls_back_to_the_websocket_when_webrtc_does_not_connect(aiohttp_server,
                                                                              clip):
    url = await start(aiohttp_server)
    out = io.StringIO()
    # a connect timeout no ICE exchange can meet stands in for a tunnel that carries no UDP
    cfg = StreamConfig(url, video=clip, transport="auto", webrtc_timeout_s=0.001, drain_s=0.5)
    assert await run(cfg, ResultWriter(out)) == "ws"
    assert out.getvalue().count("\n") >= 5


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
async def test_a_server_gone_midway_is_a_lost_connection_and_the_results_stay(
        aiohttp_server, tmp_path, transport):
    server, url = await start_server(aiohttp_server)
    long_clip = str(write_video(tmp_path / "long.mp4", "libx264", seconds=20))
    path = tmp_path / "out.csv"
    writer, first = ResultWriter(str(path), "csv"), asyncio.Event()
    original = writer.write

    def write_and_tell(msg: dict) -> None:
        original(msg)
        first.set()

    writer.write = write_and_tell  # type: ignore[method-assign]
    task = asyncio.ensure_future(run(StreamConfig(url, video=long_clip, transport=transport),
                                     writer))
    await asyncio.wait_for(first.wait(), 30)
    await server.close()  # what SIGTERM does: the server closes every session
    with pytest.raises(ConnectionLost) as lost:
        await asyncio.wait_for(task, 30)
    writer.close()
    assert str(lost.value) == ("the connection to the server was lost after "
                               f"{writer.results} results")
    assert 1 <= writer.results < 100  # far from the 20 s file's end
    rows = path.read_text().splitlines()
    assert rows[0].split(",") == CSV_HEADER and len(rows) == 1 + writer.results


@pytest.mark.parametrize("transport", ["webrtc", "ws"])
async def test_results_that_cannot_be_written_end_the_stream_with_that_error(
        aiohttp_server, tmp_path, transport):
    """An OSError while writing a result (a full disk) comes out of run() as itself, not as a
    lost connection, and not inside aiortc's event handler."""
    _, url = await start_server(aiohttp_server)
    long_clip = str(write_video(tmp_path / "long.mp4", "libx264", seconds=20))
    writer = ResultWriter(str(tmp_path / "out.csv"), "csv")

    def full_disk(msg: dict) -> None:
        if msg.get("type") == "result":
            raise OSError(28, "No space left on device")

    writer.write = full_disk  # type: ignore[method-assign]
    with pytest.raises(OSError, match="No space left"):
        await asyncio.wait_for(run(StreamConfig(url, video=long_clip, transport=transport),
                                   writer), 60)


def test_the_cli_exits_1_on_a_lost_connection_and_keeps_the_csv(clip, tmp_path, capsys,
                                                                monkeypatch):
    from run import main

    async def two_results_then_lost(cfg, writer, stop=None):
        writer.write(result(1))
        writer.write(result(2))
        raise ConnectionLost("the connection to the server was lost after 2 results")

    monkeypatch.setattr("streamer.client.run", two_results_then_lost)
    path = tmp_path / "out.csv"
    assert main(["stream", "--server", "http://127.0.0.1:9", "--video", clip,
                 "--csv", str(path)]) == 1
    err = capsys.readouterr().err
    assert err == "error: the connection to the server was lost after 2 results\n"
    rows = path.read_text().splitlines()
    assert rows[0].split(",") == CSV_HEADER and [r.split(",")[1] for r in rows[1:]] == ["1", "2"]


@pytest.mark.parametrize("given, url", [
    ("127.0.0.1:8791", "http://127.0.0.1:8791"),
    ("localhost:8791/", "http://localhost:8791"),
    ("[::1]:8791", "http://[::1]:8791"),
    ("https://demo.example.org/", "https://demo.example.org"),
    ("http://10.0.0.2:8080/facedapps", "http://10.0.0.2:8080/facedapps"),
])
def test_a_server_url_or_a_bare_host_and_port(given, url):
    assert server_url(given) == url
    assert StreamConfig(given, video="v.mp4").server == url


@pytest.mark.parametrize("given", ["ws://127.0.0.1:8791", "ftp://h", "127.0.0.1", "http://",
                                   "http://h:99999", "http://h:0", "http://h/?a=1", "h:port"])
def test_a_server_that_is_not_an_http_url_is_refused(given):
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        server_url(given)


def test_the_cli_refuses_a_non_http_server_and_prefixes_a_bare_host_port(clip, capsys):
    from run import main

    assert main(["stream", "--server", "ws://127.0.0.1:9", "--video", clip]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --server must be http://HOST:PORT") and err.count("\n") == 1
    assert main(["stream", "--server", "127.0.0.1:9", "--video", clip, "--transport", "ws"]) == 1
    assert "error: cannot reach http://127.0.0.1:9:" in capsys.readouterr().err


def test_a_failed_connection_leaves_an_existing_csv_as_it_was(clip, tmp_path, capsys):
    from run import main

    path = tmp_path / "earlier.csv"
    path.write_text("earlier,results\n")
    assert main(["stream", "--server", "http://127.0.0.1:9", "--video", clip, "--transport",
                 "ws", "--csv", str(path)]) == 1
    assert "error: cannot reach" in capsys.readouterr().err
    assert path.read_text() == "earlier,results\n"


def test_an_unwritable_csv_is_refused_before_connecting(clip, tmp_path, capsys):
    from run import main

    for bad, why in [(tmp_path / "missing" / "out.csv", "no such directory"),
                     (tmp_path, "is a directory")]:
        # port 9 refuses connections: "cannot reach" would mean it connected first
        assert main(["stream", "--server", "http://127.0.0.1:9", "--video", clip,
                     "--csv", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot write --csv {bad}: {why}") and err.count("\n") == 1
    assert not (tmp_path / "missing").exists()


def test_a_csv_path_is_opened_at_the_first_result(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("earlier\n")
    writer = ResultWriter(str(path), "csv")
    writer.write({"type": "hello"})  # not a result: nothing opened yet
    assert path.read_text() == "earlier\n"
    writer.write(result(7))
    writer.close()
    rows = path.read_text().splitlines()
    assert rows[0].split(",") == CSV_HEADER and len(rows) == 2
    assert rows[1].split(",")[CSV_HEADER.index("label")] == "happy"


async def refusing_server(aiohttp_server, status: int, body: str, content_type: str) -> str:
    async def offer(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type=content_type)

    app = web.Application()
    app.router.add_post("/offer", offer)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/")


HTML = "<html><head><title>502 Bad Gateway</title></head><body>" + "x" * 500 + "</body></html>"


@pytest.mark.parametrize("status, body, content_type, message", [
    (502, HTML, "text/html", "the server refused the stream: 502 Bad Gateway"),
    (503, '{"error": "too many sessions"}', "application/json",
     "the server refused the stream: 503 Service Unavailable: too many sessions"),
    (500, '["not", "an", "object"]', "application/json",
     "the server refused the stream: 500 Internal Server Error"),
    (200, HTML, "text/html",
     "/offer did not answer with a session description (is it a facedapps server?)"),
])
async def test_a_refused_offer_is_its_status_and_error_text_never_a_page(
        aiohttp_server, clip, status, body, content_type, message):
    url = await refusing_server(aiohttp_server, status, body, content_type)
    with pytest.raises(StreamError) as refused:
        await run(StreamConfig(url, video=clip, transport="webrtc"), ResultWriter(io.StringIO()))
    text = str(refused.value)
    assert text == message or text == url + message
    assert "<" not in text and len(text) < 120


def test_an_image_or_a_video_without_frames_is_refused_before_connecting(clip, tmp_path):
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), np.full((48, 64, 3), 128, np.uint8))
    data = open(clip, "rb").read()
    at = data.index(b"mdat") - 4  # the header intact, every byte of the frames scrambled
    size = int.from_bytes(data[at:at + 4], "big")
    noise = np.random.default_rng(0).integers(0, 256, size - 8, dtype=np.uint8).tobytes()
    scrambled = tmp_path / "scrambled.mp4"
    scrambled.write_bytes(data[:at + 8] + noise + data[at + size:])
    # port 9 refuses connections: "cannot reach" would mean it connected first
    for path in (photo, scrambled, tmp_path / "absent.mp4"):
        for transport in ("webrtc", "ws"):
            with pytest.raises(StreamError, match=f"^{path}: no (video frames|such file)"):
                asyncio.run(run(StreamConfig("http://127.0.0.1:9", video=str(path),
                                             transport=transport), ResultWriter(io.StringIO())))


def test_the_cli_says_a_photo_has_no_video_frames(tmp_path, capsys):
    from run import main

    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), np.full((48, 64, 3), 128, np.uint8))
    assert main(["stream", "--server", "http://127.0.0.1:9", "--video", str(photo)]) == 1
    assert capsys.readouterr().err == f"error: {photo}: no video frames (not a video file)\n"
