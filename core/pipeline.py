"""Image -> faces -> probabilities -> face results: the one implementation, used by the live
sessions, ``POST /api/predict``, ``run.py predict``, training data loading and the tools.

Synchronous (the server runs it in executor threads). "No face" has one shape everywhere: a
:class:`FrameFaces` with no boxes (and an empty batch), which becomes an empty face list.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from core.errors import ImageError
from core.faces import DEFAULT_MODE, DetectorMode, FaceDetector, FrameScan, resolve_mode
from core.preprocess import LABELS, crop_face, is_face_crop, preprocess_face, to_batch

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def image_kind(data: bytes) -> str | None:
    """``"jpeg"``, ``"png"``, ``"webp"`` or None, from the magic bytes."""
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


#: Images with a side shorter than this are refused: no face the product can read fits in them.
MIN_IMAGE_SIDE = 24
#: A small image taken whole as a face crop (``is_face_crop``) whose 1st and 99th percentile
#: gray levels are less than this far apart is blank, not a face.
BLANK_RANGE = 4.0


#: The pixel limit for photos read from the user's own disk (``run.py predict``/``analyze``):
#: a 48-megapixel phone photo (8000x6000) fits. The server's limit is lower
#: (``ServerConfig.max_pixels``, 4096x4096).
LOCAL_MAX_PIXELS = 8192 * 8192


def decode_image(data: bytes, max_pixels: int = 4096 * 4096) -> np.ndarray:
    """Decode a JPEG, PNG or WebP image into BGR, refusing other types, oversized images and
    images with a side under :data:`MIN_IMAGE_SIDE`.

    The size is read from the header before any pixel is decoded (decompression bombs).
    """
    if not data:
        raise ImageError("empty image")
    kind = image_kind(data)
    if kind is None:
        raise ImageError("only JPEG, PNG and WebP images are accepted", status=415)
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError as exc:  # its text quotes PIL's own limit, not ours
        raise ImageError(f"image too large: at most {max_pixels} pixels are accepted",
                         status=413) from exc
    except Exception as exc:  # PIL raises many types for garbage headers; its text stays here
        raise ImageError(f"unreadable {kind} image (corrupt or truncated header)") from exc
    if w * h > max_pixels:
        raise ImageError(f"image is {w}x{h}; at most {max_pixels} pixels are accepted", status=413)
    if min(w, h) < MIN_IMAGE_SIDE:
        raise ImageError(f"image is {w}x{h}; at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels "
                         "are needed")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError(f"truncated or corrupt {kind} image")
    return img


def is_blank(image: np.ndarray) -> bool:
    """Whether ``image`` (gray or BGR) has no contrast: its 1st and 99th percentile gray levels
    are less than :data:`BLANK_RANGE` apart."""
    gray = image if image.ndim == 2 else cv2.cvtColor(to_bgr(image), cv2.COLOR_BGR2GRAY)
    lo, hi = np.percentile(gray, (1.0, 99.0))
    return bool(hi - lo < BLANK_RANGE)


def to_bgr(image: np.ndarray) -> np.ndarray:
    """A gray, BGR or BGRA image as 3-channel BGR (the detector's input)."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


@dataclass
class FrameFaces:
    """Faces found in one frame: boxes ``[x, y, w, h]`` (the detector's order: largest first)
    and the classifier's input batch, one row per box; ``carried``: per box, whether a video's
    detector kept it from an earlier frame (``core.faces.FrameScan``; empty: none was)."""

    width: int
    height: int
    boxes: list[tuple[int, int, int, int]]
    batch: np.ndarray
    carried: list[bool] = field(default_factory=list)

    def subset(self, rows: Sequence[int]) -> FrameFaces:
        """The same frame with only the faces ``rows`` (in that order)."""
        idx = list(rows)
        return FrameFaces(self.width, self.height, [self.boxes[i] for i in idx],
                          self.batch[idx] if idx else self.batch[:0],
                          [self.carried[i] for i in idx] if self.carried else [])


def face_dict(face_id: int | None, box: Sequence[int], probs: np.ndarray,
              label: str | None = None, score: float | None = None,
              uncertain: bool | None = None) -> dict:
    """One face object of the interface. ``scores`` are this frame's ``probs``; ``label`` and
    ``score`` are the tracked, filtered decision when given (``uncertain`` with it), else this
    frame's argmax; ``id`` only when the face is tracked."""
    if label is None:
        k = int(np.argmax(probs))
        label, score = LABELS[k], float(probs[k])
    d: dict = {}
    if face_id is not None:
        d["id"] = int(face_id)
    d.update({
        "box": [int(v) for v in box],
        "label": label,
        "score": round(float(score or 0.0), 4),
        "scores": {lab: round(float(p), 4) for lab, p in zip(LABELS, probs)},
    })
    if uncertain is not None:
        d["uncertain"] = bool(uncertain)
    return d


def face_results(ff: FrameFaces, probs: np.ndarray) -> list[dict]:
    """Untracked face objects (a still image): one per box, label from its own probabilities."""
    return [face_dict(None, b, p) for b, p in zip(ff.boxes, probs)]


class FacePipeline:
    """Face detection + the shared preprocessing. Thread-safe (the detector keeps its
    interpreters per thread); the detector is made on first use, so a pipeline that only
    sees face crops never loads it.

    ``mode``: the detector mode (``core.faces.MODES``): ``live`` (default; live frames, within
    about 2x the cost of ``fast``), ``accurate`` (photos: small and distant faces, more time),
    ``fast`` (the short-range selfie detector). Ignored when a ``detector`` is given."""

    def __init__(self, detector: FaceDetector | None = None,
                 mode: str | DetectorMode = DEFAULT_MODE) -> None:
        if detector is not None:
            mode = getattr(detector, "mode", mode)
        resolve_mode(mode)  # an unknown name fails here, not at the first frame
        self._detector = detector
        self._mode = mode

    @property
    def mode(self) -> str:
        """The detector mode's name."""
        return self._mode if isinstance(self._mode, str) else self._mode.name

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(mode=self._mode)
        return self._detector

    def scanner(self) -> FrameScan:
        """The detector state of one video stream (see ``core.faces.FrameScan``)."""
        return FrameScan(self.detector)

    def faces(self, image: np.ndarray, scan: FrameScan | None = None) -> FrameFaces:
        """Detect every face in ``image`` (BGR, BGRA or gray) and preprocess each crop; a
        frame of a video goes through its stream's ``scan`` (see :meth:`scanner`)."""
        bgr = to_bgr(image)
        h, w = bgr.shape[:2]
        carried: list[bool] = []
        if scan is None:
            dets = self.detector.detect(bgr)
        else:
            dets, carried = scan.detect(bgr)
        boxes = [d.box for d in dets]
        return FrameFaces(w, h, boxes, to_batch([crop_face(bgr, b) for b in boxes]), carried)

    def faces_for_image(self, img: np.ndarray, detect: str = "auto") -> FrameFaces:
        """Like :meth:`faces`, but a small image (a face crop already) is taken whole unless
        ``detect == "always"``; ``detect == "never"`` always takes the whole image."""
        if detect not in ("auto", "always", "never"):
            raise ValueError(f"detect must be auto, always or never, not {detect!r}")
        h, w = img.shape[:2]
        if detect == "never" or (detect == "auto" and is_face_crop(img)):
            return FrameFaces(w, h, [(0, 0, w, h)], to_batch([preprocess_face(img)]))
        return self.faces(img)

    def faces_for_upload(self, img: np.ndarray, detect: str = "auto") -> FrameFaces:
        """:meth:`faces_for_image` for a user's photo: a small image that would be taken whole
        as a face crop has no face when it is blank (:data:`BLANK_RANGE`)."""
        if detect == "auto" and is_face_crop(img) and is_blank(img):
            h, w = img.shape[:2]
            return FrameFaces(w, h, [], to_batch([]))
        return self.faces_for_image(img, detect)

    def largest_crop(self, img: np.ndarray, detect: str = "auto") -> np.ndarray | None:
        """The preprocessed crop of the largest face (uint8, ``S x S``), or None (no face)."""
        ff = self.faces_for_image(img, detect)
        if not ff.boxes:
            return None
        k = max(range(len(ff.boxes)), key=lambda i: ff.boxes[i][2] * ff.boxes[i][3])
        return ff.batch[k, :, :, 0].astype(np.uint8)

    def classify_image(self, img: np.ndarray, classifier, detect: str = "auto") -> list[dict]:
        """Face objects (interface format, no track id) for one still image."""
        ff = self.faces_for_upload(img, detect)
        probs = classifier.predict_batch(ff.batch) if ff.boxes else ff.batch[:0]
        return face_results(ff, probs)
