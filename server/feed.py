"""WebSocket routes: the result feed (``/ws``) and the frame-ingest fallback (``/ws/stream``)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from functools import partial

from aiohttp import WSCloseCode, WSMsgType, web

from server.errors import CapacityError
from server.pipeline import decode_image
from server.protocol import dumps, error_message
from server.session import FrameSession

log = logging.getLogger(__name__)

#: Result messages queued per feed subscriber before older ones are dropped.
FEED_QUEUE = 64


class FeedHub:
    """Fan-out of result messages to ``/ws`` subscribers (bounded queue each, drop-oldest)."""

    def __init__(self) -> None:
        self.subscribers: dict[int, tuple[str | None, asyncio.Queue]] = {}
        self.sockets: set[web.WebSocketResponse] = set()

    def publish(self, msg: dict) -> None:
        if not self.subscribers:
            return
        text = None
        for session, q in self.subscribers.values():
            if session is not None and msg.get("session") != session:
                continue
            text = text or dumps(msg)
            if q.full():
                q.get_nowait()
            q.put_nowait(text)

    def subscribe(self, session: str | None) -> tuple[int, asyncio.Queue]:
        q: asyncio.Queue = asyncio.Queue(FEED_QUEUE)
        key = id(q)
        self.subscribers[key] = (session, q)
        return key, q

    def unsubscribe(self, key: int) -> None:
        self.subscribers.pop(key, None)

    async def close_all(self) -> None:
        await asyncio.gather(*(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
                               for ws in list(self.sockets)), return_exceptions=True)


async def _drain(ws: web.WebSocketResponse, on_message=None) -> None:
    async for msg in ws:
        if on_message is not None:
            await on_message(msg)


async def feed_handler(request: web.Request) -> web.WebSocketResponse:
    """``GET /ws[?session=ID]``: every result message (of one session) as JSON text."""
    from server.app import FEED, check_access

    check_access(request)
    hub: FeedHub = request.app[FEED]
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=4096)
    await ws.prepare(request)
    hub.sockets.add(ws)
    key, q = hub.subscribe(request.query.get("session"))
    reader = asyncio.create_task(_drain(ws))
    getter: asyncio.Task | None = None
    try:
        while not ws.closed:
            getter = asyncio.create_task(q.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                break
            await ws.send_str(getter.result())
    except (ConnectionResetError, RuntimeError):
        pass
    finally:
        hub.unsubscribe(key)
        hub.sockets.discard(ws)
        # Also when this handler is cancelled: no task may be left pending.
        pending = [t for t in (reader, getter) if t is not None]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await ws.close()
    return ws


async def stream_handler(request: web.Request) -> web.StreamResponse:
    """``GET /ws/stream``: binary JPEG frames in, result messages out (latest frame wins)."""
    from server.app import CONFIG, ENGINE, FEED, REGISTRY, check_access, client_ip

    check_access(request)
    cfg = request.app[CONFIG]
    registry = request.app[REGISTRY]
    ip = client_ip(request)
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=cfg.max_ws_message_bytes)
    try:
        registry.reserve(ip)
    except CapacityError as exc:
        # Browsers cannot read an HTTP error on an upgrade: say it on the socket, then close.
        await ws.prepare(request)
        await ws.send_str(dumps(error_message(str(exc))))
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"at capacity")
        return ws
    try:
        await ws.prepare(request)
    except BaseException:  # includes cancellation: the reservation must not leak
        registry.release(None, ip)
        raise
    hub: FeedHub = request.app[FEED]
    hub.sockets.add(ws)
    sid = uuid.uuid4().hex[:16]
    session = FrameSession(sid, request.app[ENGINE],
                           partial(decode_image, max_pixels=cfg.max_pixels), "ws")

    async def send(msg: dict) -> None:
        if not ws.closed:
            await ws.send_str(dumps(msg))

    session.sinks.append(send)
    registry.add(session)
    request.app[ENGINE].metrics.sessions.labels("ws").inc()
    session.start()
    times: list[float] = []
    try:
        await ws.send_str(dumps({"type": "hello", "session": sid}))
        async for msg in ws:
            now = time.monotonic()
            times = [t for t in times if now - t < 1.0] + [now]
            if len(times) > cfg.max_messages_per_s:
                await ws.send_str(dumps(error_message("too many messages; slow down")))
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"rate limit")
                break
            if msg.type == WSMsgType.BINARY:
                session.offer(msg.data)
            elif msg.type == WSMsgType.TEXT and msg.data.strip() == '{"type":"ping"}':
                await ws.send_str(dumps({"type": "pong"}))
            elif msg.type == WSMsgType.ERROR:
                break
    except ConnectionResetError:  # the client vanished while we were sending
        pass
    finally:
        hub.sockets.discard(ws)
        await session.close()
        registry.release(sid, ip)
        request.app[ENGINE].metrics.sessions.labels("ws").dec()
        await ws.close()
    return ws
