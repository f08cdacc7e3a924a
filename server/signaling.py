"""WebRTC signaling (``POST /offer``) and the registry of live sessions with its limits."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole
from aiortc.mediastreams import MediaStreamError

from server.config import ServerConfig
from server.errors import CapacityError
from server.pipeline import frame_to_bgr
from server.protocol import dumps
from server.session import Engine, FrameSession

log = logging.getLogger(__name__)

#: Do not queue more than this on a data channel (a slow client skips results instead).
MAX_BUFFERED = 256 * 1024


@dataclass
class Registry:
    """Live sessions by id, with global and per-address caps."""

    cfg: ServerConfig
    sessions: dict[str, "FrameSession"] = field(default_factory=dict)
    by_ip: dict[str, int] = field(default_factory=dict)
    peers: dict[str, "RtcPeer"] = field(default_factory=dict)
    #: Slots claimed by offers/streams still being set up (not yet in ``sessions``).
    _reserved: int = 0

    def reserve(self, ip: str) -> None:
        """Claim a slot for ``ip`` or raise CapacityError."""
        if len(self.sessions) + self._reserved >= self.cfg.max_sessions:
            raise CapacityError(f"server at capacity (session limit {self.cfg.max_sessions}); "
                                f"try again later")
        if self.by_ip.get(ip, 0) >= self.cfg.max_sessions_per_ip:
            raise CapacityError(f"too many sessions from your address "
                                f"(limit {self.cfg.max_sessions_per_ip})")
        self.by_ip[ip] = self.by_ip.get(ip, 0) + 1
        self._reserved += 1

    def add(self, s: FrameSession) -> None:
        self._reserved -= 1
        self.sessions[s.sid] = s

    def release(self, sid: str | None, ip: str) -> None:
        """Free the slot (session ``sid`` if it was added, else an unused reservation)."""
        if sid is None or self.sessions.pop(sid, None) is None:
            self._reserved -= 1
        n = self.by_ip.get(ip, 0) - 1
        if n > 0:
            self.by_ip[ip] = n
        else:
            self.by_ip.pop(ip, None)


def ice_configuration(cfg: ServerConfig) -> RTCConfiguration:
    servers = [RTCIceServer(urls=u, username=cfg.turn_username if u.startswith("turn") else None,
                            credential=cfg.turn_credential if u.startswith("turn") else None)
               for u in cfg.ice_servers]
    return RTCConfiguration(iceServers=servers)


class RtcPeer:
    """One WebRTC client: peer connection, video reader, data channels, watchdog."""

    def __init__(self, registry: Registry, engine: Engine, cfg: ServerConfig, ip: str) -> None:
        self.sid = uuid.uuid4().hex[:16]
        self.registry = registry
        self.cfg = cfg
        self.ip = ip
        self.pc = RTCPeerConnection(ice_configuration(cfg))
        self.session = FrameSession(self.sid, engine, frame_to_bgr, "webrtc")
        self.session.sinks.append(self._send)
        self.channels: list = []
        self.tasks: list[asyncio.Task] = []
        self.blackhole = MediaBlackhole()
        self._closing: asyncio.Task | None = None
        self.started = False
        self._msg_times: list[float] = []
        self.connected = asyncio.Event()
        pc = self.pc

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:
            self.channels.append(channel)

            @channel.on("message")
            def on_message(message) -> None:
                self._on_channel_message(channel, message)

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind == "video" and not any(t.get_name().startswith("read-") for t in
                                                 self.tasks):
                self._spawn(self._read(track), f"read-{self.sid}")
            else:
                self.blackhole.addTrack(track)  # every track is read, even unused ones

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("session %s: connection %s", self.sid, pc.connectionState)
            if pc.connectionState == "connected":
                self.connected.set()
            elif pc.connectionState in ("failed", "closed"):
                self.close_soon()

    def _spawn(self, coro, name: str) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(coro, name=name))

    def _on_channel_message(self, channel, message) -> None:
        now = time.monotonic()
        self._msg_times = [t for t in self._msg_times if now - t < 1.0] + [now]
        if len(self._msg_times) > self.cfg.max_messages_per_s:
            log.warning("session %s: data channel flood; closing", self.sid)
            self.close_soon()
            return
        if isinstance(message, str) and len(message) < 1024:
            try:
                msg = json.loads(message)
            except ValueError:
                return
            if isinstance(msg, dict) and msg.get("type") == "ping":
                self._send_text(dumps({"type": "pong"}), channel)

    def _send_text(self, text: str, channel) -> None:
        if channel.readyState == "open" and channel.bufferedAmount < MAX_BUFFERED:
            channel.send(text)

    def _send(self, msg: dict) -> None:
        text = dumps(msg)
        for ch in list(self.channels):
            try:
                self._send_text(text, ch)
            except Exception as exc:  # closing transport
                log.debug("session %s: send failed: %s", self.sid, exc)

    async def _read(self, track) -> None:
        """Always read the track (aiortc queues grow otherwise); keep only the newest frame."""
        try:
            while True:
                frame = await track.recv()
                self.session.offer(frame)
        except MediaStreamError:
            log.info("session %s: video ended", self.sid)
        finally:
            self.close_soon()

    async def _watchdog(self) -> None:
        """Close peers that never connect, or whose video goes silent; send heartbeats."""
        try:
            await asyncio.wait_for(self.connected.wait(), self.cfg.connect_timeout_s)
        except asyncio.TimeoutError:
            log.info("session %s: not connected after %.0f s; closing", self.sid,
                     self.cfg.connect_timeout_s)
            self.close_soon()
            return
        while True:
            await asyncio.sleep(self.cfg.heartbeat_s)
            self._send({"type": "ping", "t": time.time()})
            if time.monotonic() - self.session.last_frame_at > self.cfg.idle_timeout_s:
                log.info("session %s: no video for %.0f s; closing", self.sid,
                         self.cfg.idle_timeout_s)
                self.close_soon()
                return

    async def answer(self, sdp: str, kind: str) -> RTCSessionDescription:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription

    def start(self) -> None:
        """Register the peer and start processing (after a successful answer)."""
        self.started = True
        self.registry.add(self.session)
        self.registry.peers[self.sid] = self
        self.session.engine.metrics.sessions.labels("webrtc").inc()
        self.session.start()
        self._spawn(self._watchdog(), f"watchdog-{self.sid}")

    def close_soon(self) -> asyncio.Task:
        """Start closing (once); returns the closing task."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(
                self._do_close(), name=f"close-{self.sid}")
        return self._closing

    async def close(self) -> None:
        """Close everything of this peer and wait for it; idempotent."""
        await asyncio.shield(self.close_soon())

    async def _do_close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.session.close()
        await self.blackhole.stop()
        await self.pc.close()
        if self.started:
            self.registry.peers.pop(self.sid, None)
            self.registry.release(self.sid, self.ip)
            self.session.engine.metrics.sessions.labels("webrtc").dec()
        else:
            self.registry.release(None, self.ip)
        log.info("session %s: closed (%d frames received, %d processed, %d dropped)", self.sid,
                 self.session.frames_received, self.session.frames_processed,
                 self.session.frames_dropped)


def parse_offer(body: bytes, max_sdp: int) -> tuple[str, str]:
    """Validate an ``/offer`` body; ValueError with a message for the client."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
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
