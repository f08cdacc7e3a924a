"""An aiortc client for the benchmark and the loopback tests: offers a video source and a data
channel to ``/offer`` and collects the messages that come back, with their arrival times."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription, VideoStreamTrack
from aiortc.contrib.media import MediaPlayer
from av import VideoFrame

from bench.face_video import face_frame


class FaceTrack(VideoStreamTrack):
    """A real face at a fixed place, as fast as aiortc paces frames (30 fps)."""

    def __init__(self, face: int = 0, x: int = 220, y: int = 120) -> None:
        super().__init__()
        self.img, self.box = face_frame(face, x, y)

    async def recv(self) -> VideoFrame:
        pts, tb = await self.next_timestamp()
        f = VideoFrame.from_ndarray(self.img, format="bgr24")
        f.pts, f.time_base = pts, tb
        return f


class RtcClient:
    """One peer. The source is ``track`` (default: a :class:`FaceTrack`) or, with ``video``,
    an H264 MPEG-TS file relayed without re-encoding (cheap load: no client-side encoding)."""

    def __init__(self, base_url: str, track: VideoStreamTrack | None = None,
                 video: Path | None = None, token: str | None = None) -> None:
        self.base_url = base_url
        self.token = token
        self.pc = RTCPeerConnection()
        #: ``(arrival time (monotonic s), message)`` of every message received.
        self.received: list[tuple[float, dict]] = []
        self.session: str | None = None
        self.player: MediaPlayer | None = None
        if video is not None:
            self.player = MediaPlayer(str(video), decode=False)
            if self.player.video is None:
                raise RuntimeError(f"{video}: no video stream")
            tr = self.pc.addTransceiver(self.player.video, direction="sendonly")
            tr.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                    if c.mimeType in ("video/H264", "video/rtx")])
            self.track = None
        else:
            self.track = track or FaceTrack()
            self.pc.addTrack(self.track)
        self.channel = self.pc.createDataChannel("results")
        self.channel.on("message", self._on_message)

    def _on_message(self, message) -> None:
        try:
            msg = json.loads(message)
        except (TypeError, ValueError):
            return
        if isinstance(msg, dict):
            self.received.append((time.monotonic(), msg))

    @property
    def messages(self) -> list[dict]:
        return [m for _, m in self.received]

    @property
    def results(self) -> list[dict]:
        return [m for _, m in self.received if m.get("type") == "result"]

    @property
    def errors(self) -> list[dict]:
        return [m for _, m in self.received if m.get("type") == "error"]

    def window(self, t0: float, t1: float) -> list[dict]:
        """Result messages that arrived in ``[t0, t1)``."""
        return [m for t, m in self.received if t0 <= t < t1 and m.get("type") == "result"]

    async def connect(self, http: aiohttp.ClientSession) -> None:
        """Offer, and apply the answer; RuntimeError with the server's answer if refused."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        params = {"token": self.token} if self.token else None
        async with http.post(self.base_url + "/offer", params=params, json={
                "sdp": self.pc.localDescription.sdp, "type": "offer"}) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"offer refused: {r.status} {body}")
        self.session = body["session"]
        await self.pc.setRemoteDescription(RTCSessionDescription(body["sdp"], body["type"]))

    async def close(self) -> None:
        await self.pc.close()
        if self.player is not None and self.player.video is not None:
            self.player.video.stop()
