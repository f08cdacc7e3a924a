"""A handful of real FER2013 images from ../shared/data (read in place, never the whole zip)."""

from __future__ import annotations

import zipfile
from collections import Counter, defaultdict
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pytest

from core.pipeline import FacePipeline
from core.preprocess import INPUT_SIZE, LABELS, stretch_contrast
from training.data import _classify_path, _decode

SHARED_ZIP = Path(__file__).resolve().parents[2].parent / "shared/data/fer2013-train-validation.zip"

pytestmark = pytest.mark.skipif(
    not SHARED_ZIP.is_file(), reason=f"shared FER2013 zip not found at {SHARED_ZIP}")

#: Image counts from shared/data/README.md.
README_COUNTS = {
    "train": {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "neutral": 4965,
              "sad": 4830, "surprise": 3171},
    "val": {"angry": 467, "disgust": 56, "fear": 496, "happy": 895, "neutral": 607,
            "sad": 653, "surprise": 415},
}


@pytest.fixture(scope="module")
def names() -> list[str]:
    with zipfile.ZipFile(SHARED_ZIP) as zf:  # the central directory only, no image data
        return zf.namelist()


def test_class_folders_map_to_the_labels(names: list[str]) -> None:
    folders = {PurePosixPath(n).parts[:2] for n in names if len(PurePosixPath(n).parts) == 3}
    assert {split for split, _ in folders} == {"train", "validation"}
    assert {cls for _, cls in folders} == set(LABELS)
    counts: dict[str, Counter] = defaultdict(Counter)
    for n in names:
        where = _classify_path(PurePosixPath(n))
        if where is not None:
            split, label = where
            counts[split][LABELS[label]] += 1
    assert {k: dict(v) for k, v in counts.items()} == README_COUNTS


def test_a_few_real_images_preprocess_to_48x48_uint8(names: list[str]) -> None:
    # 2 per class from train/ and 1 per class from validation/: 21 images
    picked: list[str] = []
    for split, per_class in (("train", 2), ("validation", 1)):
        for label in LABELS:
            pre = f"{split}/{label}/"
            picked += [n for n in names if n.startswith(pre) and n.endswith(".jpg")][:per_class]
    assert len(picked) == 21
    with zipfile.ZipFile(SHARED_ZIP) as zf:
        for name in picked:
            split, label = _classify_path(PurePosixPath(name))
            assert split == ("train" if name.startswith("train/") else "val")
            assert LABELS[label] == PurePosixPath(name).parent.name
            img = _decode(zf.read(name), name)
            assert img is not None and img.shape[:2] == (48, 48)
            face = FacePipeline().largest_crop(img)  # a 48x48 crop: no detection, as served
            assert face.shape == (INPUT_SIZE, INPUT_SIZE) and face.dtype == np.uint8
            gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            assert np.array_equal(face, stretch_contrast(cv2.medianBlur(gray, 3)))
