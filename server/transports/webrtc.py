"""The WebRTC peer: peer connection, video reader, data channels, watchdog.

Same peer interface as ``ws_stream`` (``server.registry.Peer``): ``sid``, ``ip``,
``transport``, ``session``, ``start()`` once the client is answered, ``close()``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from core.video import frame_to_bgr
from server.config import ServerConfig
from server.engine import Engine
from server.protocol import dumps
from server.ratelimit import RateLimiter
from server.registry import Registry
from server.session import FrameSession

log = logging.getLogger(__name__)

#: Do not queue more than this on a data channel (a slow client skips results instead).
MAX_BUFFERED = 256 * 1024
#: Data channels a peer may open; more are closed at once (every result goes to each one).
MAX_CHANNELS = 4


def ice_configuration(cfg: ServerConfig) -> RTCConfiguration:
    servers = [RTCIceServer(urls=u, username=cfg.turn_username if u.startswith("turn") else None,
                            credential=cfg.turn_credential if u.startswith("turn") else None)
               for u in cfg.ice_servers]
    return RTCConfiguration(iceServers=servers)


class RtcPeer:
    """One WebRTC client."""

    transport = "webrtc"

    def __init__(self, registry: Registry, engine: Engine, cfg: ServerConfig, ip: str) -> None:
        self.sid = uuid.uuid4().hex[:16]
        self.registry = registry
        self.cfg = cfg
        self.ip = ip
        self.pc = RTCPeerConnection(ice_configuration(cfg))
        self.session = FrameSession(self.sid, engine, frame_to_bgr, self.transport)
        self.session.sinks.append(self._send)
        self.channels: list = []
        self.tasks: list[asyncio.Task] = []
        self._closing: asyncio.Task | None = None
        self.started = False
        self._limiter = RateLimiter(cfg.max_messages_per_s)
        self.connected = asyncio.Event()
        pc = self.pc

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:
            if len(self.channels) >= MAX_CHANNELS:
                log.info("session %s: more than %d data channels; closing the new one",
                         self.sid, MAX_CHANNELS)
                channel.close()
                return
            self.channels.append(channel)

            @channel.on("message")
            def on_message(message) -> None:
                self._on_channel_message(channel, message)

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
        if self._closing is not None:
            return
        if not self._limiter.allow():
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
            except Exception as exc:  # aiortc raises several types on a closing transport
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
        """Answer the offer, receiving its first video track only: every other media section
        (audio, more video) is answered inactive, so its media is neither sent nor decoded
        (frames of a track nobody reads would queue in aiortc without bound)."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        video = None
        for t in self.pc.getTransceivers():
            if video is None and t.kind == "video":
                video = t
            else:
                t.direction = "inactive"
        if video is None:
            raise ValueError("offer has no video track")
        self._spawn(self._read(video.receiver.track), f"read-{self.sid}")
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription

    def start(self) -> None:
        """Register the peer and start processing (after a successful answer)."""
        self.started = True
        self.registry.add(self)
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
        if self.tasks:
            await asyncio.wait(self.tasks)
        for t in self.tasks:
            if not t.cancelled() and t.exception() is not None:
                log.error("session %s: task %s failed", self.sid, t.get_name(),
                          exc_info=t.exception())
        await self.session.close()
        await self.pc.close()
        self.registry.release(self.ip, self if self.started else None)
        s = self.session
        log.info("session %s: closed (%d frames received, %d processed, %d dropped)", self.sid,
                 s.frames_received, s.frames_processed, s.frames_dropped)
