"""Synchronous frame work (runs in executor threads): decode -> detect -> crop -> batch."""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np

from server.errors import ImageError
from training.faces import FaceDetector
from training.preprocess import crop_face, is_face_crop, preprocess_face, to_batch

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def image_kind(data: bytes) -> str | None:
    """``"jpeg"``, ``"png"`` or None, from the magic bytes."""
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    return None


def decode_image(data: bytes, max_pixels: int = 4096 * 4096) -> np.ndarray:
    """Decode a JPEG or PNG into BGR, refusing other types and oversized images.

    The size is read from the header before any pixel is decoded (decompression bombs).
    """
    if not data:
        raise ImageError("empty image")
    kind = image_kind(data)
    if kind is None:
        raise ImageError("only JPEG and PNG images are accepted", status=415)
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large: {exc}; at most {max_pixels} pixels are accepted",
                         status=413) from exc
    except Exception as exc:  # PIL raises many types for garbage headers
        raise ImageError(f"unreadable {kind} image: {exc}") from exc
    if w * h > max_pixels:
        raise ImageError(f"image is {w}x{h}; at most {max_pixels} pixels are accepted", status=413)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ImageError(f"truncated or corrupt {kind} image")
    return img


@dataclass
class FrameFaces:
    """Faces found in one frame: boxes ``[x, y, w, h]`` and the classifier input batch."""

    width: int
    height: int
    boxes: list[tuple[int, int, int, int]]
    batch: np.ndarray


class FacePipeline:
    """Face detection + shared preprocessing. Thread-safe (the detector is per thread)."""

    def __init__(self, detector: FaceDetector | None = None) -> None:
        self.detector = detector or FaceDetector()

    def faces(self, bgr: np.ndarray) -> FrameFaces:
        """Detect every face in ``bgr`` and preprocess each crop."""
        h, w = bgr.shape[:2]
        dets = self.detector.detect(bgr)
        boxes = [d.box for d in dets]
        return FrameFaces(w, h, boxes, to_batch([crop_face(bgr, b) for b in boxes]))

    def faces_for_image(self, img: np.ndarray, detect: str = "auto") -> FrameFaces:
        """Like :meth:`faces`, but a small image (a face crop already) is taken whole unless
        ``detect == "always"``; ``detect == "never"`` always takes the whole image."""
        h, w = img.shape[:2]
        if detect == "never" or (detect == "auto" and is_face_crop(img)):
            return FrameFaces(w, h, [(0, 0, w, h)], to_batch([preprocess_face(img)]))
        return self.faces(img)

    def classify_image(self, img: np.ndarray, classifier, detect: str = "auto") -> list[dict]:
        """Face objects (interface format, no track id) for one still image."""
        from server.protocol import face_dict

        ff = self.faces_for_image(img, detect)
        probs = classifier.predict_batch(ff.batch) if len(ff.boxes) else []
        return [face_dict(None, b, p, p) for b, p in zip(ff.boxes, probs)]


def frame_to_bgr(frame) -> np.ndarray:
    """An aiortc/PyAV ``VideoFrame`` as a BGR array (only for frames that get processed)."""
    return frame.to_ndarray(format="bgr24")
