"""The result feed (``GET /ws[?session=ID]``): every result message, fanned out to subscribers."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSCloseCode, web

from server.protocol import TOO_MANY_MESSAGES, close_with_error, dumps, hello_message
from server.ratelimit import RateLimiter
from server.state import CONFIG, FEED

log = logging.getLogger(__name__)

#: Result messages queued per feed subscriber before older ones are dropped.
FEED_QUEUE = 64
#: Feed subscribers at once (each costs a queue and a copy of every result); more are told so
#: and closed with 1013.
MAX_SUBSCRIBERS = 256


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


async def _drain(ws: web.WebSocketResponse, limiter: RateLimiter) -> None:
    """Read (and ignore) what the subscriber sends, which notices the close; a subscriber that
    sends more than the server's message rate is closed with 1008, as on ``/ws/stream``."""
    async for _ in ws:
        if not limiter.allow():
            await close_with_error(ws, TOO_MANY_MESSAGES, WSCloseCode.POLICY_VIOLATION,
                                   b"rate limit")
            return


async def feed_handler(request: web.Request) -> web.WebSocketResponse:
    """``GET /ws[?session=ID]``: a ``hello`` once subscribed, then every result message (of
    one session) as JSON text."""
    hub = request.app[FEED]
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=4096)
    await ws.prepare(request)
    if len(hub.subscribers) >= MAX_SUBSCRIBERS:
        await close_with_error(ws, f"server busy: {MAX_SUBSCRIBERS} feed subscribers; try later",
                               WSCloseCode.TRY_AGAIN_LATER, b"at capacity")
        return ws
    hub.sockets.add(ws)
    session = request.query.get("session")
    key, q = hub.subscribe(session)
    reader = asyncio.create_task(_drain(ws, RateLimiter(request.app[CONFIG].max_messages_per_s)))
    getter: asyncio.Task | None = None
    try:
        await ws.send_str(dumps(hello_message(session)))
        while not ws.closed:
            getter = asyncio.create_task(q.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                break
            await ws.send_str(getter.result())
    except ConnectionResetError:  # the subscriber vanished while we were sending
        log.debug("feed subscriber gone")
    finally:
        hub.unsubscribe(key)
        hub.sockets.discard(ws)
        # Also when this handler is cancelled: no task may be left pending.
        pending = [t for t in (reader, getter) if t is not None and not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending)
        await ws.close()
    return ws
