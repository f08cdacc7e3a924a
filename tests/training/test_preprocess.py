"""The preprocessing shared by training and serving."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.preprocess import (
    CROP_MARGIN,
    CROP_SHIFT_Y,
    FACE_CROP_MAX_SIDE,
    INPUT_SIZE,
    LABELS,
    crop_face,
    expand_box,
    is_face_crop,
    preprocess_face,
    stretch_contrast,
    to_batch,
    to_gray,
)

RNG = np.random.default_rng(0)


def test_labels_are_the_interface_order() -> None:
    assert LABELS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert INPUT_SIZE == 48


def test_to_gray_gray_and_single_channel() -> None:
    g = RNG.integers(0, 256, (30, 20), dtype=np.uint8)
    assert to_gray(g) is g
    one = to_gray(g[..., None])
    assert one.shape == (30, 20) and np.array_equal(one, g)


def test_to_gray_bgr_and_bgra() -> None:
    bgr = RNG.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    expected = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(to_gray(bgr), expected)
    bgra = np.dstack([bgr, np.full((30, 20), 7, np.uint8)])
    assert np.array_equal(to_gray(bgra), expected)  # alpha is ignored
    # BGR order: pure blue is darker than pure red
    blue = np.zeros((2, 2, 3), np.uint8)
    blue[..., 0] = 255
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 2] = 255
    assert to_gray(blue)[0, 0] < to_gray(red)[0, 0]


def test_to_gray_other_dtypes_and_shapes() -> None:
    f = np.array([[-5.0, 300.0], [10.4, 200.0]])
    out = to_gray(f)
    assert out.dtype == np.uint8 and out.tolist() == [[0, 255], [10, 200]]
    with pytest.raises(ValueError):
        to_gray(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError):
        to_gray(np.zeros(4, np.uint8))


@pytest.mark.parametrize("shape", [(48, 48), (20, 30), (200, 120, 3), (64, 64, 4), (48, 48, 1)])
def test_preprocess_face_shape_and_dtype(shape) -> None:
    face = RNG.integers(0, 256, shape, dtype=np.uint8)
    out = preprocess_face(face)
    assert out.shape == (INPUT_SIZE, INPUT_SIZE) and out.dtype == np.uint8


def test_preprocess_face_is_a_median_filter_then_a_contrast_stretch() -> None:
    face = RNG.integers(0, 256, (48, 48), dtype=np.uint8)
    assert np.array_equal(preprocess_face(face), stretch_contrast(cv2.medianBlur(face, 3)))
    flat = np.full((100, 100), 77, np.uint8)
    assert np.all(preprocess_face(flat) == 77)  # nothing to stretch


def test_stretch_contrast_spreads_a_dim_low_contrast_face_over_the_range() -> None:
    dim = (RNG.integers(0, 256, (48, 48)) * 0.2 + 40).astype(np.uint8)  # levels 40..91
    out = stretch_contrast(dim)
    assert out.dtype == np.uint8 and out.shape == dim.shape
    lo, hi = np.percentile(out, (1, 99))
    assert lo <= 2 and hi >= 253  # the 1st/99th percentiles now sit at the ends
    order = np.argsort(dim.ravel(), kind="stable")
    assert (np.diff(out.ravel()[order].astype(int)) >= 0).all()  # monotone: no level swaps
    full = np.tile(np.arange(256, dtype=np.uint8), (48, 1))[:, ::5]
    assert np.abs(stretch_contrast(full).astype(int) - full).max() <= 3  # already full range


def test_expand_box_grows_to_a_square_in_the_middle() -> None:
    x, y, w, h = expand_box((100, 100, 50, 40), 640, 480)
    side = 50 * (1 + 2 * CROP_MARGIN)
    assert w == h == round(side)
    assert (x + w / 2, y + h / 2) == pytest.approx((125, 120 + CROP_SHIFT_Y * 40), abs=1)
    # no margin, no shift: the square is centred on the box
    assert expand_box((100, 100, 50, 50), 640, 480, margin=0.0, shift_y=0.0) == (100, 100, 50, 50)


@pytest.mark.parametrize("box", [(-10, -10, 50, 50), (0, 0, 30, 30), (600, 440, 40, 40),
                                 (620, 5, 100, 100), (-50, 400, 700, 200)])
def test_expand_box_is_clipped_to_the_image(box) -> None:
    x, y, w, h = expand_box(box, 640, 480)
    assert 0 <= x and 0 <= y and w >= 1 and h >= 1
    assert x + w <= 640 and y + h <= 480


def test_crop_face() -> None:
    img = RNG.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for box in [(100, 100, 80, 80), (0, 0, 50, 60), (600, 440, 40, 40)]:
        out = crop_face(img, box)
        assert out.shape == (INPUT_SIZE, INPUT_SIZE) and out.dtype == np.uint8


def test_to_batch() -> None:
    faces = [RNG.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(5)]
    b = to_batch(faces)
    assert b.shape == (5, 48, 48, 1) and b.dtype == np.float32
    assert b[2, ..., 0].tolist() == faces[2].astype(np.float32).tolist()
    assert 0.0 <= b.min() and b.max() <= 255.0
    assert to_batch(np.stack(faces)).shape == (5, 48, 48, 1)
    empty = to_batch([])
    assert empty.shape == (0, 48, 48, 1) and empty.dtype == np.float32


def test_is_face_crop() -> None:
    assert is_face_crop(np.zeros((48, 48)))
    assert is_face_crop(np.zeros((FACE_CROP_MAX_SIDE, FACE_CROP_MAX_SIDE, 3)))
    assert not is_face_crop(np.zeros((FACE_CROP_MAX_SIDE + 1, 10)))
