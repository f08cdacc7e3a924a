"""Shared fixtures for the training tests: tiny synthetic datasets written into tmp_path."""

from __future__ import annotations

import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import cv2
import numpy as np
import pytest

from core.preprocess import LABELS


def synthetic_face(label: int, i: int, size: int = 48, channels: int = 1) -> np.ndarray:
    """A deterministic noisy image that codes ``label`` in the share of its rows that are
    bright (the top ones), so that after the served preprocessing (median filter, contrast
    stretch: dark rows near 0, bright ones near 255) its mean brightness is about
    ``30 + 30 * label``."""
    rng = np.random.default_rng(1000 * label + i)
    bright = round(size * (15 + 30 * label) / 225)
    level = np.where(np.arange(size)[:, None] < bright, 190, 40)
    img = (rng.integers(0, 21, (size, size)) + level).astype(np.uint8)
    if channels == 3:
        img = np.dstack([img, np.roll(img, 1, axis=1), np.roll(img, 2, axis=0)])
    return img


def write_image(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, img)
    assert ok, path
    path.write_bytes(buf.tobytes())


MakeFolder = Callable[..., Path]


@pytest.fixture
def make_folder(tmp_path: Path) -> MakeFolder:
    """``make_folder(name, {split_folder or "": per_class}, exts=(".png",), size=48)`` -> root.

    Writes ``<root>/[<split>/]<label>/<label>_<i><ext>``; extensions alternate over ``exts``.
    """

    def make(name: str = "data", splits: dict[str, int] | None = None,
             exts: Sequence[str] = (".png",), size: int = 48,
             labels: Sequence[str] = LABELS) -> Path:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        for split, per_class in (splits or {"": 10}).items():
            for label in labels:
                li = LABELS.index(label)
                for i in range(per_class):
                    ext = exts[i % len(exts)]
                    # different splits get different images (deterministic offset)
                    img = synthetic_face(li, i + 1000 * sum(map(ord, split)), size)
                    write_image(root / split / label / f"{label}_{i}{ext}", img)
        return root

    return make


def zip_folder(root: Path, dest: Path, prefix: str = "") -> Path:
    """Zip ``root`` (optionally under a top folder ``prefix``), plus a ``__MACOSX`` decoy."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, (Path(prefix) / p.relative_to(root)).as_posix())
        zf.writestr("__MACOSX/happy/._happy_0.png", b"\x00\x05\x16\x07junk")
    return dest


@pytest.fixture
def tiny_folder(make_folder: MakeFolder) -> Path:
    """An unsplit ``<class>/<image>`` folder: 7 classes x 10 PNG/JPG 48x48 images."""
    return make_folder("tiny", {"": 10}, exts=(".png", ".jpg"))


@pytest.fixture
def synth() -> SimpleNamespace:
    """The helpers above, for tests (fixtures work whatever pytest's import mode)."""
    return SimpleNamespace(face=synthetic_face, write=write_image, zip=zip_folder)
