"""MTCNN (Zhang et al. 2016, trained on WIDER FACE), the second detector of photos.

Its weights ship in the ``mtcnn`` wheel (MIT licence; ``mtcnn/assets/weights``), which runs them
with TensorFlow (already a dependency). BlazeFace full-range and MTCNN miss different faces in
group photos; the ``accurate`` mode (``core.faces``) keeps every BlazeFace detection and adds
each MTCNN face that overlaps none of them. On face_boxes_dev that raised recall of faces >= 24
px from 0.740 to 0.798 at precision 0.940 (held-out half: 0.758 -> 0.812), for about 9x the cost
per photo; README "Face detection" has the figures and the rule that chose these settings. Only
photos use it: it is far too slow for live frames.

This module returns plain arrays (``core.faces`` makes the ``Detection`` objects), so the two do
not import each other.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

import numpy as np

#: MTCNN's smallest face (pixels) and its three stage thresholds (PNet, RNet, ONet); the package
#: defaults except ONet's 0.9 (0.8 by default), chosen on the tune half of face_boxes_dev.
MIN_FACE = 20
THRESHOLDS = (0.6, 0.7, 0.9)
#: MTCNN boxes are tall rectangles; these map them onto the calibrated BlazeFace framing that
#: the crop rule expects (medians over 598 faces both detectors found on face_boxes_dev): width
#: x1.025, height x0.788, centre moved right 0.017 widths and down 0.135 heights (of the mapped
#: box).
SCALE_W, SCALE_H = 1.025, 0.788
SHIFT_X, SHIFT_Y = 0.017, 0.135


def available() -> bool:
    """Whether the ``mtcnn`` package is installed."""
    return importlib.util.find_spec("mtcnn") is not None


def map_boxes(xyxy: np.ndarray) -> np.ndarray:
    """MTCNN boxes ``(N, 4)`` x0,y0,x1,y1 in the BlazeFace framing (see :data:`SCALE_W`)."""
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    w, h = (b[:, 2] - b[:, 0]) * SCALE_W, (b[:, 3] - b[:, 1]) * SCALE_H
    cx = (b[:, 0] + b[:, 2]) / 2 + SHIFT_X * w
    cy = (b[:, 1] + b[:, 3]) / 2 + SHIFT_Y * h
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


class MtcnnDetector:
    """MTCNN on RGB images; the networks load on first use (about 2 s, TensorFlow included).
    Calls are serialised: photos are rare, and one TensorFlow graph run at a time keeps memory
    flat."""

    def __init__(self, min_face: int = MIN_FACE,
                 thresholds: tuple[float, float, float] = THRESHOLDS) -> None:
        if not available():
            raise RuntimeError("the accurate detector needs the mtcnn package "
                               "(pip install mtcnn)")
        self.min_face = min_face
        self.thresholds = thresholds
        self._net: Any = None
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes ``(N, 4)`` x0,y0,x1,y1 (mapped by :func:`map_boxes`, not clipped) and scores
        ``(N,)`` of the faces in an RGB uint8 image."""
        with self._lock:
            if self._net is None:
                from mtcnn import MTCNN

                self._net = MTCNN()
            p, r, o = self.thresholds
            raw = self._net.detect_faces(np.ascontiguousarray(rgb), min_face_size=self.min_face,
                                         threshold_pnet=p, threshold_rnet=r, threshold_onet=o,
                                         box_format="xyxy", output_type="numpy")
        raw = np.asarray(raw, np.float64).reshape(-1, 16)  # image, box, score, 5+5 landmarks
        return map_boxes(raw[:, 1:5]), raw[:, 5]
