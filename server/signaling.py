"""WebRTC signaling: ``POST /offer`` (validate the offer, claim a slot, answer)."""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from server.access import client_ip
from server.errors import CapacityError, json_error
from server.state import CONFIG, ENGINE, REGISTRY
from server.transports.webrtc import RtcPeer

log = logging.getLogger(__name__)


def parse_offer(body: bytes, max_sdp: int) -> tuple[str, str]:
    """Validate an ``/offer`` body; ValueError with a message for the client."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        raise ValueError("body must be JSON: {\"sdp\": str, \"type\": \"offer\"}") from None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    sdp, kind = data.get("sdp"), data.get("type")
    if kind != "offer":
        raise ValueError("\"type\" must be \"offer\"")
    if not isinstance(sdp, str) or not sdp.strip():
        raise ValueError("\"sdp\" must be a non-empty string")
    if len(sdp) > max_sdp:
        raise ValueError(f"sdp too large ({len(sdp)} > {max_sdp} characters)")
    if not sdp.startswith("v=0"):
        raise ValueError("sdp is not a session description (must start with v=0)")
    mlines = [ln for ln in sdp.splitlines() if ln.startswith("m=")]
    if not any(ln.startswith("m=video") for ln in mlines):
        raise ValueError("offer has no video track")
    if len(mlines) > 8:
        raise ValueError(f"offer has {len(mlines)} media sections; at most 8 are accepted")
    return sdp, kind


async def offer(request: web.Request) -> web.Response:
    """``POST /offer``: ``{"sdp", "type": "offer"}`` -> ``{"sdp", "type", "session"}``."""
    cfg = request.app[CONFIG]
    registry = request.app[REGISTRY]
    try:
        body = await request.read()
        sdp, kind = parse_offer(body, cfg.max_sdp_chars)
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, "request body too large")
    except ValueError as exc:
        return json_error(400, str(exc))
    ip = client_ip(request)
    try:
        registry.reserve(ip)
    except CapacityError as exc:
        return json_error(503, str(exc))
    peer = RtcPeer(registry, request.app[ENGINE], cfg, ip)
    try:
        answer = await peer.answer(sdp, kind)
    except asyncio.CancelledError:  # client gone mid-offer: free the slot, stop its tasks
        peer.close_soon()
        raise
    except Exception as exc:  # aiortc raises ValueError, KeyError, ... on bad SDP
        log.info("rejected offer from %s: %r", ip, exc)
        await peer.close()
        return json_error(400, "could not use this offer (is it a browser's WebRTC offer with a "
                           "video track?)")
    peer.start()
    log.info("session %s: new WebRTC peer from %s", peer.sid, ip)
    return web.json_response({"sdp": answer.sdp, "type": answer.type, "session": peer.sid})
