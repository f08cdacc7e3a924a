"""The WebSocket frame transport (``GET /ws/stream``) for clients whose WebRTC cannot connect
(e.g. behind an HTTP tunnel): binary JPEG frames in, result messages out, latest frame wins.

Same peer interface as ``webrtc`` (``server.registry.Peer``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from functools import partial

from aiohttp import WSCloseCode, WSMsgType, web

from core.pipeline import decode_image
from server.access import client_ip
from server.config import ServerConfig
from server.engine import Engine
from server.errors import CapacityError
from server.protocol import (
    TOO_MANY_MESSAGES,
    close_with_error,
    dumps,
    error_message,
    hello_message,
)
from server.ratelimit import RateLimiter
from server.registry import Registry
from server.session import FrameSession
from server.state import CONFIG, ENGINE, REGISTRY

log = logging.getLogger(__name__)


class WsStreamPeer:
    """One ``/ws/stream`` client."""

    transport = "ws"

    def __init__(self, ws: web.WebSocketResponse, registry: Registry, engine: Engine,
                 cfg: ServerConfig, ip: str) -> None:
        self.sid = uuid.uuid4().hex[:16]
        self.ws = ws
        self.registry = registry
        self.cfg = cfg
        self.ip = ip
        self.session = FrameSession(self.sid, engine,
                                    partial(decode_image, max_pixels=cfg.max_pixels),
                                    self.transport)
        self.session.sinks.append(self._send)
        self._limiter = RateLimiter(cfg.max_messages_per_s)
        self._closed = False

    async def _send(self, msg: dict) -> None:
        if not self.ws.closed:
            await self.ws.send_str(dumps(msg))

    def start(self) -> None:
        self.registry.add(self)
        self.session.start()

    async def run(self) -> None:
        """Say hello, then read frames until the client goes, floods, or sends no frame for
        ``idle_timeout_s`` (as a WebRTC peer whose video goes silent: the slot is freed)."""
        await self.ws.send_str(dumps(hello_message(self.sid)))
        idle_s = self.cfg.idle_timeout_s
        while True:
            wait_s = idle_s - (time.monotonic() - self.session.last_frame_at)
            if wait_s <= 0:  # checked on every message too: text messages do not keep it open
                log.info("session %s: no frame for %.0f s; closing", self.sid, idle_s)
                await close_with_error(self.ws, f"no frame for {idle_s:g} s: the stream is "
                                       "closed", WSCloseCode.POLICY_VIOLATION, b"idle")
                break
            try:
                msg = await self.ws.receive(timeout=wait_s)
            except asyncio.TimeoutError:
                continue
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                break
            if not self._limiter.allow():
                await close_with_error(self.ws, TOO_MANY_MESSAGES, WSCloseCode.POLICY_VIOLATION,
                                       b"rate limit")
                break
            if msg.type == WSMsgType.BINARY:
                self.session.offer(msg.data)
            elif msg.type == WSMsgType.TEXT and (answer := _answer_text(msg.data)) is not None:
                await self.ws.send_str(dumps(answer))
            elif msg.type == WSMsgType.ERROR:
                break

    async def close(self, code: int = WSCloseCode.GOING_AWAY) -> None:
        """Stop the session, free the slot, close the socket; idempotent. The slot is freed
        before anything is awaited, so a cancelled handler cannot leak it."""
        if self._closed:
            return
        self._closed = True
        self.registry.release(self.ip, self)
        try:
            await self.session.close()
        finally:
            await self.ws.close(code=code, message=b"server shutdown"
                                if code == WSCloseCode.GOING_AWAY else b"")
            s = self.session
            log.info("session %s: closed (%d frames received, %d processed, %d dropped)",
                     self.sid, s.frames_received, s.frames_processed, s.frames_dropped)


#: What a text message other than a ping gets (the socket stays open).
UNKNOWN_TEXT = 'unknown message: send frames as binary JPEG messages, or the text {"type":"ping"}'


def _answer_text(text: str) -> dict | None:
    """A ping (any JSON spacing) gets a pong, a pong nothing (the page answers pings with one),
    any other text an error message."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        msg = None
    kind = msg.get("type") if isinstance(msg, dict) else None
    if kind == "ping":
        return {"type": "pong"}
    if kind == "pong":
        return None
    return error_message(UNKNOWN_TEXT)


async def stream_handler(request: web.Request) -> web.StreamResponse:
    """``GET /ws/stream``: binary JPEG frames in, result messages out (latest frame wins)."""
    cfg = request.app[CONFIG]
    registry = request.app[REGISTRY]
    ip = client_ip(request)
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=cfg.max_ws_message_bytes)
    try:
        registry.reserve(ip)
    except CapacityError as exc:
        # Browsers cannot read an HTTP error on an upgrade: say it on the socket, then close.
        await ws.prepare(request)
        await close_with_error(ws, str(exc), WSCloseCode.TRY_AGAIN_LATER, b"at capacity")
        return ws
    try:
        await ws.prepare(request)
    except BaseException:  # includes cancellation: the reservation must not leak
        registry.release(ip)
        raise
    peer = WsStreamPeer(ws, registry, request.app[ENGINE], cfg, ip)
    peer.start()
    log.info("session %s: new WebSocket stream from %s", peer.sid, ip)
    try:
        await peer.run()
    except ConnectionResetError:  # the client vanished while we were sending
        log.info("session %s: connection reset", peer.sid)
    finally:
        await peer.close(code=WSCloseCode.OK)
    return ws
