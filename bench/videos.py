"""The bench's client videos: real faces by default, made once and cached in the out folder.

Every video is constrained-baseline H264 (Annex B, no B-frames, a keyframe per second) in
MPEG-TS at 15 fps, which aiortc's ``MediaPlayer(path, decode=False)`` relays without
re-encoding, as a webcam's encoder would send it:

- ``real`` (default): the labelled dev clips of ``../shared/data/labeled_videos_dev`` (real
  actors: MEAD face crops and eNTERFACE'05 frames), each scaled into 640x480 and joined; real
  faces cost more to carry and decode than a synthetic one.
- ``street``: ``../shared/data/videos/street_group_1080p.mp4`` at 1280x720, looped: several
  small faces walking towards the camera (a many-face, large-frame load).
- ``synthetic``: FER2013 faces drifting on a flat grey background (``bench.face_video``).
- a path: any video file, converted the same way.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from core.video import frames

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
FPS = 15
CHOICES = ("real", "street", "synthetic")


class VideoMissing(RuntimeError):
    """The source of a bench video is not on this machine (e.g. no ../shared)."""


def letterbox(bgr: np.ndarray, w: int, h: int) -> tuple[np.ndarray, float, int, int]:
    """``bgr`` scaled to fit ``w`` x ``h`` and centred on black, with the scale and the
    position ``(x, y)`` of the scaled image in it (to map boxes)."""
    ih, iw = bgr.shape[:2]
    s = min(w / iw, h / ih)
    nw, nh = max(2, int(round(iw * s))), max(2, int(round(ih * s)))
    out = np.zeros((h, w, 3), np.uint8)
    x, y = (w - nw) // 2, (h - nh) // 2
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    out[y:y + nh, x:x + nw] = cv2.resize(bgr, (nw, nh), interpolation=interp)
    return out, s, x, y


def _fit(bgr: np.ndarray, w: int, h: int) -> np.ndarray:
    """``bgr`` scaled to fit ``w`` x ``h`` and centred on black (letterboxed)."""
    return letterbox(bgr, w, h)[0]


def encode_ts(path: Path, images: Iterator[np.ndarray], width: int, height: int,
              container_format: str = "mpegts") -> Path:
    """Write ``images`` (BGR, ``width`` x ``height``) as baseline H264 at 15 fps, in MPEG-TS
    (or another ``container_format``, e.g. ``mp4``)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with av.open(str(tmp), mode="w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"profile": "baseline", "bf": "0", "g": str(FPS), "preset": "veryfast"}
        for i, img in enumerate(images):
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def _real_frames(min_seconds: float) -> Iterator[np.ndarray]:
    clips_dir = SHARED / "labeled_videos_dev"
    clips = sorted(p for p in clips_dir.glob("*") if p.suffix in (".mp4", ".avi"))
    if not clips:
        raise VideoMissing(f"{clips_dir}: no clips (the real bench video needs ../shared)")
    n = 0
    while n < min_seconds * FPS:
        for clip in clips:
            for _, bgr in frames(clip, FPS):
                n += 1
                yield _fit(bgr, 640, 480)


def _street_frames(min_seconds: float) -> Iterator[np.ndarray]:
    src = SHARED / "videos" / "street_group_1080p.mp4"
    if not src.exists():
        raise VideoMissing(f"{src} is missing (the street bench video needs ../shared)")
    n = 0
    while n < min_seconds * FPS:
        for _, bgr in frames(src, FPS):
            n += 1
            yield cv2.resize(bgr, (1280, 720), interpolation=cv2.INTER_AREA)


def _file_frames(src: Path, min_seconds: float) -> Iterator[np.ndarray]:
    n = 0
    while n < min_seconds * FPS:
        for _, bgr in frames(src, FPS):
            n += 1
            yield _fit(bgr, 640, 480)


def bench_video(choice: str, out: Path, seconds: float) -> tuple[Path, str]:
    """The cached client video for ``choice`` (``real``, ``street``, ``synthetic`` or a file)
    lasting at least ``seconds``, and a one-line description. VideoMissing without its source."""
    length = int(max(40, np.ceil(seconds / 10) * 10))
    if choice == "synthetic":
        from bench.face_video import make_frames

        cycle = make_frames(8.0, FPS)
        path = out / f"synthetic-640x480-{FPS}fps-{length}s.ts"
        if not path.exists():
            encode_ts(path, (cycle[i % len(cycle)] for i in range(length * FPS)), 640, 480)
        return path, f"synthetic: FER2013 faces on grey, 640x480, {FPS} fps"
    if choice == "real":
        path = out / f"real-640x480-{FPS}fps-{length}s.ts"
        if not path.exists():
            log.info("encoding %s from the dev clips", path)
            encode_ts(path, _capped(_real_frames(length), length), 640, 480)
        return path, (f"real: the 32 labelled dev clips (one real face each) joined, 640x480, "
                      f"{FPS} fps")
    if choice == "street":
        path = out / f"street-1280x720-{FPS}fps-{length}s.ts"
        if not path.exists():
            log.info("encoding %s", path)
            encode_ts(path, _capped(_street_frames(length), length), 1280, 720)
        return path, f"street: street_group_1080p (several small faces) at 1280x720, {FPS} fps"
    src = Path(choice)
    if not src.is_file():
        raise VideoMissing(f"--video {choice}: not real, street, synthetic or a file")
    path = out / f"file-{src.stem}-640x480-{FPS}fps-{length}s.ts"
    if not path.exists():
        encode_ts(path, _capped(_file_frames(src, length), length), 640, 480)
    return path, f"{src.name} at 640x480, {FPS} fps"


def _capped(images: Iterator[np.ndarray], seconds: int) -> Iterator[np.ndarray]:
    for i, img in enumerate(images):
        if i >= seconds * FPS:
            return
        yield img


def decoded_frames(path: Path, n: int) -> list[np.ndarray]:
    """The first ``n`` frames of ``path`` as BGR arrays (for the isolated pipeline)."""
    out = []
    for _, bgr in frames(path):
        out.append(bgr)
        if len(out) >= n:
            break
    return out
