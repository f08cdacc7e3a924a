"""Reading video files: upright frames with their timestamps (PyAV).

Whatever FFmpeg opens (mp4/mov/webm/mkv/avi/flv; H264/HEVC/VP8/VP9/MPEG-4) is read; the audio is
ignored; a phone video's display rotation is applied so faces are upright; variable frame rate
is handled by using each frame's own timestamp. A file that is not a video, or that breaks off
in the middle, raises :class:`VideoError` with one clear line (frames already yielded stay
valid, so callers keep what they analysed); FFmpeg's own message is kept apart in ``detail``
(for logs, not for clients).
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import cv2
import numpy as np

#: Clockwise display rotation -> OpenCV rotation code.
_ROTATE = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180,
           270: cv2.ROTATE_90_COUNTERCLOCKWISE}

Source = str | Path | BinaryIO


class VideoError(ValueError):
    """A file that cannot be read as video, or that breaks off (``frames`` read before it).
    ``reason``: what is wrong, without the file's name; ``source``: the file's name ("upload"
    for an in-memory file), which ``str()`` puts first; ``detail``: the decoder's own message,
    for logs (never shown to clients)."""

    def __init__(self, reason: str, source: str = "", frames: int = 0, detail: str = "") -> None:
        super().__init__(f"{source}: {reason}" if source else reason)
        self.reason = reason
        self.source = source
        self.frames = frames
        self.detail = detail


@dataclass(frozen=True)
class VideoInfo:
    """What the container says: upright size, average frame rate, duration (s), codec,
    clockwise display rotation (degrees), and the video stream's frame count where the header
    records one (MP4/MOV and AVI do; None otherwise)."""

    width: int
    height: int
    fps: float
    duration: float | None
    codec: str
    rotation: int
    frames: int | None = None


def _name(src: Source) -> str:
    return str(src) if isinstance(src, (str, Path)) else "upload"


def _open(src: Source) -> Any:
    import av

    try:
        return av.open(src if not isinstance(src, Path) else str(src))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise VideoError("cannot open as video", _name(src), detail=str(exc)) from None


_local = threading.local()


def frame_to_bgr(frame: Any) -> np.ndarray:
    """A decoded PyAV ``VideoFrame`` as a BGR array: bit for bit ``frame.to_ndarray(format=
    "bgr24")``, through one swscale context per thread, run on that one thread.

    PyAV's own ``to_ndarray`` makes a new context for every frame, with a pool of slice threads
    (one per CPU) that is spawned for the conversion and joined when the frame is freed: on a
    640x480 frame 0.7-0.8 CPU ms, plus 0.18 ms in whichever thread drops the frame last (in the
    live server, the event loop), against 0.2 ms here (README, "Speed")."""
    r = getattr(_local, "reformatter", None)
    if r is None:
        from av.video.reformatter import VideoReformatter  # av >= 17: threads=

        r = _local.reformatter = VideoReformatter()
    return r.reformat(frame, format="bgr24", threads=1).to_ndarray()


def clockwise(frame: Any) -> int:
    """The clockwise rotation (0/90/180/270) that shows ``frame`` upright."""
    return int(round(-float(getattr(frame, "rotation", 0) or 0))) % 360


def upright(bgr: np.ndarray, cw: int) -> np.ndarray:
    code = _ROTATE.get(cw)
    return bgr if code is None else cv2.rotate(bgr, code)


def probe(src: Source) -> VideoInfo:
    """Size, rate, duration, codec and rotation, from the first frame and the container."""
    if not isinstance(src, (str, Path)):
        src.seek(0)
    with _open(src) as c:
        if not c.streams.video:
            raise VideoError("no video stream", _name(src))
        s = c.streams.video[0]
        rate = float(s.average_rate or s.guessed_rate or 0.0)
        duration = (float(s.duration * s.time_base) if s.duration and s.time_base
                    else float(c.duration) / 1e6 if c.duration else None)
        import av

        try:
            cw = clockwise(next(c.decode(s)))
        except (StopIteration, av.error.FFmpegError):  # reported when frames are read
            cw = 0
        w, h = int(s.width), int(s.height)
        if cw in (90, 270):
            w, h = h, w
        return VideoInfo(w, h, rate, duration, s.codec_context.name, cw, int(s.frames) or None)


def frames(src: Source, fps: float | None = None,
           stats: dict[str, int] | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """``(seconds since the first frame, upright BGR frame)`` for every frame, or with ``fps``
    the first frame at or after each tick of a camera running at ``fps`` (by timestamp).
    ``stats["decoded"]`` counts every frame decoded (yielded or skipped). ValueError for an
    ``fps`` that is negative or not finite."""
    import av

    if fps is not None and not (0.0 <= fps < float("inf")):
        raise ValueError(f"fps must be a finite number >= 0, not {fps}")

    if not isinstance(src, (str, Path)):
        src.seek(0)
    container = _open(src)
    n = 0
    with container:
        if not container.streams.video:
            raise VideoError("no video stream", _name(src))
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        t0: float | None = None
        next_t = 0.0
        last_t = -1.0
        try:
            for frame in container.decode(stream):
                if stats is not None:
                    stats["decoded"] = stats.get("decoded", 0) + 1
                if frame.time is not None:
                    t = float(frame.time)
                else:  # no timestamp: one nominal frame after the last
                    rate = float(stream.average_rate or 25)
                    t = (last_t if last_t >= 0 else -1.0 / rate) + 1.0 / rate
                t0 = t if t0 is None else t0
                t -= t0
                if t <= last_t:  # out of order or repeated stamps: keep time moving
                    t = last_t + 1e-3
                last_t = t
                if fps:
                    if t + 1e-6 < next_t:
                        continue
                    while next_t <= t + 1e-6:
                        next_t += 1.0 / fps
                n += 1
                yield t, upright(frame_to_bgr(frame), clockwise(frame))
        except av.error.FFmpegError as exc:
            if n == 0:
                raise VideoError("no decodable video frames (the video data is corrupt)",
                                 _name(src), detail=str(exc)) from None
            raise VideoError(f"the video breaks off after {n} frames", _name(src), frames=n,
                             detail=str(exc)) from None
    if n == 0:
        raise VideoError("no decodable video frames", _name(src))


#: Leading bytes of the containers :func:`container_kind` names.
_SIGNATURES = ((4, b"ftyp", "mp4/mov"), (4, b"moov", "mp4/mov"), (4, b"mdat", "mp4/mov"),
               (4, b"wide", "mp4/mov"), (0, b"\x1a\x45\xdf\xa3", "mkv/webm"),
               (0, b"FLV\x01", "flv"))


#: ``ftyp`` brands of still images in the MP4 family (HEIC/HEIF and AVIF photos).
_IMAGE_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1",
                           b"msf1", b"avif", b"avis", b"avci", b"avcs", b"miaf", b"MiHE",
                           b"crx "})


def container_kind(data: bytes) -> str | None:
    """The video container ``data`` starts like (``"mp4/mov"``, ``"mkv/webm"``, ``"avi"``,
    ``"flv"``), from its first bytes only, or None; a file that starts like one but that
    :func:`inspect` cannot open is malformed or cut off, not of another type. HEIC and AVIF
    photos share the MP4 box layout and are not videos."""
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "avi"
    if data[4:8] == b"ftyp" and data[8:12] in _IMAGE_BRANDS:
        return None
    for at, magic, kind in _SIGNATURES:
        if data[at:at + len(magic)] == magic:
            return kind
    return None


def inspect(data_or_path: bytes | Source) -> str:
    """``"video"`` when FFmpeg finds a video stream in a container that is not a still image
    (FFmpeg opens a JPEG or PNG as a one-frame "video"), ``"not-video"`` when it opens the
    file and finds none (audio only, a photo), ``"unreadable"`` when it cannot open it; cheap:
    opens the container only."""
    src: Source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    try:
        with _open(src) as c:
            fmt = c.format.name
            still = fmt == "image2" or fmt.endswith("_pipe")
            return "video" if c.streams.video and not still else "not-video"
    except VideoError:
        return "unreadable"

