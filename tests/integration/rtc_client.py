"""An in-process aiortc client for loopback tests and the benchmark."""

from __future__ import annotations

import json

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from av import VideoFrame

from tests.helpers import face_frame


class FaceTrack(VideoStreamTrack):
    """15 fps... as fast as aiortc paces (30 fps): a real face at a fixed place."""

    def __init__(self, face: int = 0, x: int = 220, y: int = 120) -> None:
        super().__init__()
        self.img, self.box = face_frame(face, x, y)

    async def recv(self) -> VideoFrame:
        pts, tb = await self.next_timestamp()
        f = VideoFrame.from_ndarray(self.img, format="bgr24")
        f.pts, f.time_base = pts, tb
        return f


class RtcClient:
    """Offer a face track + a data channel; collect the messages that come back."""

    def __init__(self, base_url: str, track: FaceTrack | None = None) -> None:
        self.base_url = base_url
        self.track = track or FaceTrack()
        self.pc = RTCPeerConnection()
        self.messages: list[dict] = []
        self.session: str | None = None

    @property
    def results(self) -> list[dict]:
        return [m for m in self.messages if m.get("type") == "result"]

    async def connect(self, http: aiohttp.ClientSession) -> None:
        self.pc.addTrack(self.track)
        ch = self.pc.createDataChannel("results")
        ch.on("message", lambda m: self.messages.append(json.loads(m)))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with http.post(self.base_url + "/offer", json={
                "sdp": self.pc.localDescription.sdp, "type": "offer"}) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"offer refused: {r.status} {body}")
        self.session = body["session"]
        await self.pc.setRemoteDescription(RTCSessionDescription(body["sdp"], body["type"]))

    async def close(self) -> None:
        await self.pc.close()
