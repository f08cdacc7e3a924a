"""``python run.py stream``: a file or a camera to a server, results as JSON lines or CSV.

Like the page: WebRTC first (aiortc; the video track and a ``results`` data channel offered to
``POST /offer``), and when WebRTC does not connect within ``webrtc_timeout_s`` (an HTTP tunnel
carries no UDP), JPEG frames over ``/ws/stream`` instead. The access token goes as ``?token=``
on every request, basic auth (for an ngrok demo) as the ``Authorization`` header. A file is
sent at its own pace and the client ends after its last result; a camera streams until Ctrl-C.
A connection that breaks after the stream started raises :class:`ConnectionLost` (the results
so far are kept), unlike the end of the file or ``stop``.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, TextIO
from urllib.parse import urlsplit

import aiohttp

from core.preprocess import LABELS

log = logging.getLogger(__name__)

#: CSV columns, one row per face of each result.
CSV_HEADER = ["session", "frame", "latency_ms", "face_id", "x", "y", "w", "h", "label", "score",
              "uncertain", *LABELS]


class StreamError(RuntimeError):
    """The server refused the stream or cannot be reached (one clear line for the CLI)."""


class ConnectionLost(StreamError):
    """The connection to the server broke after the stream had started."""


#: A bare ``HOST:PORT`` (``127.0.0.1:8080``, ``localhost:8080``, ``[::1]:8080``): http:// is meant.
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}")


def server_url(text: str) -> str:
    """``http(s)://HOST[:PORT][/PREFIX]`` without a trailing slash; a bare ``HOST:PORT`` gets
    ``http://``; ValueError for anything else (``ws://``, no host, a query)."""
    url = text.strip().rstrip("/")
    if "://" not in url and _HOST_PORT.fullmatch(url):
        url = "http://" + url
    parts = urlsplit(url)
    try:
        port_ok = parts.port != 0
    except ValueError:  # not a number, or out of range
        port_ok = False
    if (parts.scheme not in ("http", "https") or not parts.hostname or not port_ok
            or parts.query or parts.fragment):
        raise ValueError(f"--server must be http://HOST:PORT or https://HOST (got {text!r})")
    return url


def check_writable(path: str) -> None:
    """ValueError (one line) when ``path`` cannot be written as a file; creates and truncates
    nothing."""
    full = os.path.abspath(path)
    parent = os.path.dirname(full)
    if os.path.isdir(full):
        raise ValueError("is a directory")
    if not os.path.isdir(parent):
        raise ValueError(f"no such directory: {parent}")
    if not os.access(full if os.path.exists(full) else parent, os.W_OK):
        raise ValueError("permission denied")


@dataclass(frozen=True)
class StreamConfig:
    """Where to send what, and how."""

    server: str
    #: A video file, or None with ``camera``.
    video: str | None = None
    #: A camera: a V4L2 device number (``/dev/videoN``) or a device path.
    camera: str | None = None
    token: str | None = None
    #: ``user:password`` for a server behind basic auth (the ngrok demo).
    basic_auth: str | None = None
    #: ``auto`` (WebRTC, then the WebSocket fallback), ``webrtc`` or ``ws``.
    transport: str = "auto"
    webrtc_timeout_s: float = 5.0
    #: Frames per second sent over the WebSocket transport.
    fps: float = 15.0
    #: Wait this long for the last results after a file ends.
    drain_s: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "server", server_url(self.server))
        if (self.video is None) == (self.camera is None):
            raise ValueError("give exactly one of --video FILE and --camera N")
        if self.transport not in ("auto", "webrtc", "ws"):
            raise ValueError("transport must be auto, webrtc or ws")
        if self.basic_auth is not None and ":" not in self.basic_auth:
            raise ValueError("--basic-auth must be USER:PASSWORD")
        if not 0 < self.fps < float("inf"):  # also refuses nan
            raise ValueError(f"fps must be a number > 0, not {self.fps}")


class ResultWriter:
    """Writes result messages as JSON lines, or as CSV rows (one per face). ``out`` is a stream,
    or a file path opened (and truncated) only at the first result or :meth:`open`, so a stream
    that never starts leaves an existing file as it was; :meth:`close` closes that file."""

    def __init__(self, out: TextIO | str, fmt: str = "jsonl") -> None:
        self.fmt = fmt
        self.results = 0
        self._path = out if isinstance(out, str) else None
        self.out: TextIO | None = None
        self._csv: Any = None
        if not isinstance(out, str):
            self._start(out)

    def _start(self, out: TextIO) -> TextIO:
        self.out = out
        if self.fmt == "csv":
            self._csv = csv.writer(out)
            self._csv.writerow(CSV_HEADER)
            out.flush()
        return out

    def open(self) -> TextIO:
        """The output, opened now if it is a path not opened yet (a CSV gets its header)."""
        if self.out is not None:
            return self.out
        assert self._path is not None
        return self._start(open(self._path, "w", newline="", encoding="utf-8"))

    def close(self) -> None:
        """Close the file this writer opened (never a stream it was given)."""
        if self._path is not None and self.out is not None:
            self.out.close()

    def write(self, msg: dict) -> None:
        if msg.get("type") != "result":
            return
        out = self.open()
        self.results += 1
        if self._csv is None:
            out.write(json.dumps(msg, separators=(",", ":")) + "\n")
        else:
            for f in msg.get("faces", []):
                scores = f.get("scores", {})
                self._csv.writerow([msg.get("session"), msg.get("frame"), msg.get("latency_ms"),
                                    f.get("id"), *f.get("box", [None] * 4), f.get("label"),
                                    f.get("score"), int(bool(f.get("uncertain"))),
                                    *(scores.get(lab) for lab in LABELS)])
        out.flush()


def _auth(cfg: StreamConfig) -> aiohttp.BasicAuth | None:
    if cfg.basic_auth is None:
        return None
    user, password = cfg.basic_auth.split(":", 1)
    return aiohttp.BasicAuth(user, password)


def _params(cfg: StreamConfig) -> dict[str, str]:
    return {"token": cfg.token} if cfg.token else {}


def _player(cfg: StreamConfig) -> Any:
    import av
    from aiortc.contrib.media import MediaPlayer

    try:
        if cfg.video is not None:
            return MediaPlayer(cfg.video)
        dev = cfg.camera or "0"
        path = f"/dev/video{dev}" if dev.isdigit() else dev
        return MediaPlayer(path, format="v4l2", options={"framerate": "15",
                                                          "video_size": "640x480"})
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise StreamError(f"cannot open {cfg.video or cfg.camera}: {exc}") from None


async def _refusal(r: aiohttp.ClientResponse) -> str:
    """``403 Forbidden``, with the server's text when the body is ``{"error": ...}`` (never an
    HTML page)."""
    status = f"{r.status} {r.reason or ''}".strip()
    try:
        body = await r.json(content_type=None)
    except (ValueError, aiohttp.ClientError):  # not JSON (an HTML error page), or cut off
        body = None
    if isinstance(body, dict) and body.get("error"):
        return f"{status}: {body['error']}"
    return status


def check_video(path: str) -> None:
    """StreamError unless ``path`` is a video file with a decodable frame (an image, an audio
    file or a video without frames would stream nothing)."""
    from core.video import VideoError, frames, inspect

    if not os.path.isfile(path):
        raise StreamError(f"{path}: no such file")
    kind = inspect(path)
    if kind != "video":
        raise StreamError(f"{path}: no video frames (" + ("cannot open as video)"
                          if kind == "unreadable" else "not a video file)"))
    try:
        for _ in frames(path):  # one frame is enough (frames() raises when there is none)
            break
    except VideoError:
        raise StreamError(f"{path}: no video frames (no decodable frame)") from None


async def stream_webrtc(cfg: StreamConfig, http: aiohttp.ClientSession,
                        on_message: Callable[[dict], None], stop: asyncio.Event) -> bool:
    """Stream over WebRTC until the source ends or ``stop``; False when it did not connect
    within ``webrtc_timeout_s`` (the caller may fall back); :class:`ConnectionLost` when the
    connection fails or the server closes it before the source ends."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    player = _player(cfg)
    if player.video is None:
        raise StreamError(f"{cfg.video or cfg.camera}: no video stream")
    pc = RTCPeerConnection()
    connected = asyncio.Event()
    #: "ended" (the source) or "lost" (the connection), whichever comes first.
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    failed: list[Exception] = []  # the results could not be written (e.g. the disk is full)

    def finish(why: str) -> None:
        if not outcome.done():
            outcome.set_result(why)

    def on_result(text: Any) -> None:
        try:
            _deliver(text, on_message)
        except Exception as exc:  # noqa: BLE001 - raised from run(), not inside aiortc
            failed.append(exc)
            finish("failed")

    channel = pc.createDataChannel("results")
    channel.on("message", on_result)
    sender = pc.addTrack(player.video)

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState == "connected":
            connected.set()
        elif pc.connectionState in ("failed", "closed") and connected.is_set():
            finish("lost")

    @player.video.on("ended")
    def on_ended() -> None:
        # aiortc's sender also stops the track when the connection closes under it
        up = pc.connectionState == "connected" and sender.transport.state == "connected"
        finish("ended" if up else "lost")

    try:
        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer"}
        async with http.post(cfg.server + "/offer", json=body, params=_params(cfg)) as r:
            if r.status != 200:
                raise StreamError(f"the server refused the stream: {await _refusal(r)}")
            try:
                answer = await r.json(content_type=None)
            except ValueError:
                answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("sdp"), str):
            raise StreamError(f"{cfg.server}/offer did not answer with a session description "
                              "(is it a facedapps server?)")
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"],
                                                            answer.get("type", "answer")))
        try:
            await asyncio.wait_for(connected.wait(), cfg.webrtc_timeout_s)
        except asyncio.TimeoutError:
            log.info("WebRTC did not connect within %.0f s", cfg.webrtc_timeout_s)
            return False
        log.info("streaming over WebRTC (session %s)", answer.get("session"))
        stopped = asyncio.ensure_future(stop.wait())
        waiters: list[asyncio.Future[Any]] = [outcome, stopped]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if failed:
            raise failed[0]
        if stop.is_set():
            return True
        if outcome.result() == "lost":
            raise ConnectionLost()
        await _drain(cfg, stop)
        if failed:
            raise failed[0]
        return True
    finally:
        await pc.close()
        if player.video is not None:
            player.video.stop()


def _deliver(text: Any, on_message: Callable[[dict], None]) -> None:
    """Hand one text message to ``on_message``; one that is not a JSON object is skipped."""
    if not isinstance(text, str):
        return
    try:
        msg = json.loads(text)
    except ValueError:
        msg = None
    if not isinstance(msg, dict):
        log.warning("skipping a message from the server that is not a JSON object")
        return
    on_message(msg)


async def _drain(cfg: StreamConfig, stop: asyncio.Event) -> None:
    """Wait up to ``drain_s`` for results still on their way (or until ``stop``)."""
    try:
        await asyncio.wait_for(stop.wait(), cfg.drain_s)
    except asyncio.TimeoutError:
        pass  # the drain time is up: the normal end of a file


def _jpeg_frames(cfg: StreamConfig):
    import cv2

    from core.video import frames

    if cfg.video is None:
        raise StreamError("the WebSocket transport sends files only (--video)")
    for t, bgr in frames(cfg.video, cfg.fps):
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if ok:
            yield t, buf.tobytes()


async def stream_ws(cfg: StreamConfig, http: aiohttp.ClientSession,
                    on_message: Callable[[dict], None], stop: asyncio.Event) -> None:
    """Stream a file over ``/ws/stream`` at ``cfg.fps``, paced by the frames' timestamps;
    :class:`ConnectionLost` when the socket closes before the file ends."""
    url = cfg.server.replace("http", "ws", 1) + "/ws/stream"
    try:
        ws = await http.ws_connect(url, params=_params(cfg), heartbeat=20)
    except aiohttp.WSServerHandshakeError as exc:
        raise StreamError(f"the server refused the WebSocket stream: {exc.status}") from None
    async with ws:
        hello = await ws.receive_json(timeout=10)
        if hello.get("type") == "error":
            raise StreamError(f"the server refused the stream: {hello.get('error')}")
        log.info("streaming over WebSocket (session %s)", hello.get("session"))

        async def read() -> None:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    _deliver(msg.data, on_message)

        def reader_failed() -> None:
            """Raise what ended the reader (writing a result failed), if anything did."""
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]

        reader = asyncio.ensure_future(read())
        try:
            t0 = time.monotonic()
            for t, jpg in _jpeg_frames(cfg):
                if stop.is_set() or reader.done():
                    break
                delay = t0 + t - time.monotonic()
                if delay > 0:  # the file's own pace, as a camera would send it
                    await asyncio.sleep(delay)
                try:
                    await ws.send_bytes(jpg)
                except aiohttp.ClientConnectionError:
                    raise ConnectionLost() from None
            reader_failed()
            if reader.done() and not stop.is_set():  # the server closed the socket
                raise ConnectionLost()
            if not stop.is_set():
                await _drain(cfg, stop)
            reader_failed()
        finally:
            reader.cancel()
            await asyncio.wait([reader])


async def run(cfg: StreamConfig, writer: ResultWriter, stop: asyncio.Event | None = None) -> str:
    """Stream until the source ends or ``stop`` is set; returns the transport used."""
    stop = stop or asyncio.Event()
    if cfg.video is not None:
        check_video(cfg.video)  # before connecting: an image or an empty video streams nothing
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(auth=_auth(cfg), timeout=timeout) as http:
        try:
            if cfg.transport in ("auto", "webrtc"):
                if await stream_webrtc(cfg, http, writer.write, stop):
                    return "webrtc"
                if cfg.transport == "webrtc":
                    raise StreamError("WebRTC did not connect (use --transport auto to fall back "
                                      "to the WebSocket transport)")
                log.warning("WebRTC did not connect; using the WebSocket fallback")
            await stream_ws(cfg, http, writer.write, stop)
            return "ws"
        except ConnectionLost:
            raise ConnectionLost(f"the connection to the server was lost after {writer.results} "
                                 "results") from None
        except aiohttp.ClientConnectionError as exc:
            raise StreamError(f"cannot reach {cfg.server}: {exc}") from None
