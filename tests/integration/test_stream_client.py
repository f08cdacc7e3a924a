"""``run.py stream``: the headless client against a test server, over WebRTC and WebSocket."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from server.app import create_app
from server.config import ServerConfig
from streamer.client import CSV_HEADER, ResultWriter, StreamConfig, StreamError, run
from tests.helpers import FakeClassifier, write_video

pytestmark = pytest.mark.timeout(120)


async def start(aiohttp_server, **kw) -> str:
    app = create_app(ServerConfig(**kw), classifier=FakeClassifier())
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/")


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
    with pytest.raises(StreamError, match="401"):
        await run(StreamConfig(url, video=clip, transport="webrtc"), ResultWriter(io.StringIO()))
    with pytest.raises(StreamError, match="401"):
        await run(StreamConfig(url, video=clip, transport="ws"), ResultWriter(io.StringIO()))
    out = io.StringIO()
    await run(StreamConfig(url, video=clip, token="T0K", transport="ws", drain_s=0.2),
              ResultWriter(out))
    assert out.getvalue()


async def test_stop_ends_a_stream_cleanly(aiohttp_server, tmp_path):
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
    assert await asyncio.wait_for(run(StreamConfig(url, video=long_clip, transport="ws"),
                                      writer, stop), 30) == "ws"
    assert 3 <= writer.results < 100


async def test_unreachable_server_and_bad_arguments(clip):
    with pytest.raises(StreamError, match="cannot reach"):
        await run(StreamConfig("http://127.0.0.1:9", video=clip, transport="ws"),
                  ResultWriter(io.StringIO()))
    with pytest.raises(ValueError, match="exactly one"):
        StreamConfig("http://x", video=clip, camera="0")


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
