"""Shared test helpers: a tiny real model folder, face frames, bounded waits."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import av
import cv2
import numpy as np

from bench.face_video import face_frame
from core.preprocess import INPUT_SIZE, LABELS

ROOT = Path(__file__).resolve().parents[1]
FACES_DIR = ROOT / "tests" / "fixtures" / "faces"
SHARED_ZIP = ROOT.parent / "shared" / "data" / "fer2013-train-validation.zip"


def make_tiny_model_dir(path: Path) -> Path:
    """A randomly initialised VGG16 (width 1/16) exported with real metadata."""
    from training.model import build_model

    path.mkdir(parents=True, exist_ok=True)
    model = build_model(width=0.0625)
    model.save(path / "model.keras")
    (path / "metadata.json").write_text(json.dumps({
        "name": "tiny-test", "format_version": 1, "files": {"keras": "model.keras"},
        "labels": list(LABELS), "input": {"size": INPUT_SIZE, "channels": 1,
                                          "dtype": "float32", "range": [0, 255]}}))
    return path


class FakeClassifier:
    """Deterministic stand-in: probabilities from mean brightness; records batch sizes."""

    name = "fake"
    backend = "fake"
    device = "CPU"
    labels = LABELS

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.batches: list[int] = []

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.batches.append(len(x))
        out = np.full((len(x), len(LABELS)), 0.01, np.float32)
        out[:, 3] = 0.94  # happy
        return out


def face_images() -> list[np.ndarray]:
    """The fixture FER2013 faces (48x48 gray)."""
    return [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(FACES_DIR.glob("*.jpg"))]


def iou(a, b) -> float:
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    ix = max(0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    iy = max(0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = ix * iy
    return inter / float(aw * ah + bw * bh - inter)


async def assert_malformed_multipart_refused(client, path: str, message: str) -> None:
    """A multipart body without a boundary, and one whose parts cannot be parsed, get 400 with
    ``message`` (ours, not the parser's)."""
    for ctype, body in (("multipart/form-data", b"--x\r\n"),  # no boundary parameter
                        ("multipart/form-data; boundary=x", b"garbage without parts")):
        r = await client.post(path, data=body, headers={"Content-Type": ctype})
        assert r.status == 400, await r.text()
        assert (await r.json())["error"] == message


async def wait_for(pred, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``pred()`` until truthy, or fail after ``timeout`` seconds (never sleeps blindly)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


#: Index of the first happy fixture face (for ``face_frame``).
HAPPY = next(i for i, n in enumerate(sorted(p.name for p in FACES_DIR.glob("*.jpg")))
             if n.startswith("happy"))


def write_video(path: Path, codec: str = "libx264", fmt: str | None = None, seconds: float = 1.2,
                fps: int = 15, size: tuple[int, int] = (320, 240),
                options: dict[str, str] | None = None) -> Path:
    """One real face drifting on grey, encoded with ``codec`` into ``path``'s container
    (``options``: the muxer's, e.g. ``{"movflags": "faststart"}`` for an MP4 index first)."""
    w, h = size
    with av.open(str(path), "w", format=fmt, options=options or {}) as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for k in range(int(seconds * fps)):
            img, _ = face_frame(HAPPY, x=w // 4 + k % 8, y=h // 6, side=min(w, h) * 7 // 12,
                                size=(w, h))
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path


