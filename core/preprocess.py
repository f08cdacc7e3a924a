"""Preprocessing shared by training and serving.

One implementation: whatever the server feeds the classifier went through exactly these
functions during training. Pixel rescaling (1/255) lives inside the saved model, so the arrays
produced here are uint8 grayscale face crops of ``INPUT_SIZE`` x ``INPUT_SIZE``.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

#: Class labels, in the order of every vector and matrix (the public interface).
LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: Side of the square classifier input, in pixels.
INPUT_SIZE = 48
#: Fraction of the detected box added on each side before cropping, and the shift of the crop
#: centre (in box heights, negative = up), chosen so that crops are framed like FER2013's: on 284
#: FER2013 validation faces upscaled onto a canvas, the image side was 1.20x the BlazeFace box
#: (median) and the box centre sat 0.10 box heights below the image centre.
CROP_MARGIN = 0.1
CROP_SHIFT_Y = -0.1
#: Images whose sides are both at most this many pixels are taken as face crops already.
FACE_CROP_MAX_SIDE = 96
#: Kernel of the median filter applied to every face crop.
MEDIAN_KERNEL = 3
#: Contrast stretch of every crop, after the median filter: its 1st and 99th percentile pixel
#: values become 0 and 255 (a crop whose two percentiles are less than one level apart is left
#: as it is). Chosen on the real dev clips by a rule fixed before the run (README, "The
#: model"): with the shipped model it raised the clips right from 17 to 19 of 32 and frame
#: accuracy by 0.020, and FER2013 test accuracy by 0.003.
CONTRAST_PERCENTILES = (1.0, 99.0)


def to_gray(image: np.ndarray) -> np.ndarray:
    """Return a 2-D uint8 grayscale view of a gray, BGR or BGRA image."""
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 1:
        gray = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 3 and image.shape[2] == 4:
        gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    else:
        raise ValueError(f"unsupported image shape {image.shape}")
    if gray.dtype != np.uint8:
        gray = np.clip(gray, 0, 255).astype(np.uint8)
    return gray


def expand_box(
    box: Sequence[int], width: int, height: int, margin: float = CROP_MARGIN,
    shift_y: float = CROP_SHIFT_Y,
) -> tuple[int, int, int, int]:
    """Grow ``[x, y, w, h]`` by ``margin`` on every side into a square whose centre moves by
    ``shift_y`` box heights, clipped to the image."""
    x, y, w, h = (float(v) for v in box)
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0 + shift_y * h
    x0 = int(round(max(0.0, cx - side / 2.0)))
    y0 = int(round(max(0.0, cy - side / 2.0)))
    x1 = int(round(min(float(width), cx + side / 2.0)))
    y1 = int(round(min(float(height), cy + side / 2.0)))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def stretch_contrast(gray: np.ndarray) -> np.ndarray:
    """Map ``CONTRAST_PERCENTILES`` of a uint8 image's pixels to 0 and 255 (clipped)."""
    lo, hi = np.percentile(gray, CONTRAST_PERCENTILES)
    if hi - lo < 1.0:
        return gray
    out = (gray.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(out, 0.0, 255.0).astype(np.uint8)


def preprocess_face(face: np.ndarray) -> np.ndarray:
    """Grayscale, resize one face crop to ``INPUT_SIZE`` squared, 3x3 median filter, contrast
    stretch (uint8)."""
    gray = to_gray(face)
    if gray.shape != (INPUT_SIZE, INPUT_SIZE):
        interp = cv2.INTER_AREA if min(gray.shape) > INPUT_SIZE else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (INPUT_SIZE, INPUT_SIZE), interpolation=interp)
    return stretch_contrast(cv2.medianBlur(np.ascontiguousarray(gray), MEDIAN_KERNEL))


def crop_face(image: np.ndarray, box: Sequence[int], margin: float = CROP_MARGIN) -> np.ndarray:
    """Cut the face at ``box`` (with margin) out of ``image`` and preprocess it."""
    h, w = image.shape[:2]
    x, y, cw, ch = expand_box(box, w, h, margin)
    return preprocess_face(image[y : y + ch, x : x + cw])


def to_batch(faces: Sequence[np.ndarray]) -> np.ndarray:
    """Stack preprocessed crops into the classifier's ``(N, S, S, 1)`` float32 input (0..255)."""
    if len(faces) == 0:
        return np.zeros((0, INPUT_SIZE, INPUT_SIZE, 1), np.float32)
    return np.stack([np.asarray(f, np.float32) for f in faces])[..., None]


def is_face_crop(image: np.ndarray) -> bool:
    """True when ``image`` is small enough to be taken as a face crop (no detection needed)."""
    return max(image.shape[:2]) <= FACE_CROP_MAX_SIDE
