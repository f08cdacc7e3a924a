"""Datasets: image folders (optionally split), FER2013 ``fer2013.csv`` (the file itself, or in a
folder), or a .zip of either.

Everything is read in place (a zip is never extracted). Images become preprocessed uint8 face
crops (``core.preprocess``); larger images go through face detection first.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

import cv2
import numpy as np
from sklearn.model_selection import train_test_split

from core.pipeline import FacePipeline
from core.preprocess import INPUT_SIZE, LABELS, preprocess_face

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "val", "val": "val",
                 "valid": "val", "test": "test", "testing": "test"}
FER_USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


class DatasetError(ValueError):
    """The dataset path or its layout cannot be used."""


@dataclass
class Split:
    """One split: uint8 face crops ``(N, S, S)`` and integer labels ``(N,)``."""

    x: np.ndarray
    y: np.ndarray
    no_face: int = 0

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Dataset:
    """Train/val/test splits plus a record of how they were made."""

    train: Split
    val: Split
    test: Split
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- reading sources

def _iter_entries(path: Path) -> Iterator[tuple[PurePosixPath, Callable[[], bytes]]]:
    """Yield ``(relative path, reader)`` for every file under a folder or inside a zip."""
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                yield PurePosixPath(p.relative_to(path).as_posix()), p.read_bytes
    elif path.suffix.lower() == ".zip":
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DatasetError(f"{path}: not a readable zip file ({exc})") from exc
        with zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if not info.is_dir():
                    yield PurePosixPath(info.filename), functools.partial(zf.read, info)
    elif path.suffix.lower() == ".csv":  # a fer2013.csv file itself
        yield PurePosixPath(path.name), path.read_bytes
    else:
        raise DatasetError(f"{path}: expected a dataset folder, a .zip of one, or a "
                           "fer2013.csv file")


#: EXIF orientation (2-8) -> the flips/rotations that show the image upright.
_EXIF_UPRIGHT: dict[int, tuple[int | None, int | None]] = {
    2: (1, None), 3: (None, cv2.ROTATE_180), 4: (0, None),
    5: (1, cv2.ROTATE_90_COUNTERCLOCKWISE), 6: (None, cv2.ROTATE_90_CLOCKWISE),
    7: (1, cv2.ROTATE_90_CLOCKWISE), 8: (None, cv2.ROTATE_90_COUNTERCLOCKWISE)}


def _exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag of an image (1: upright, also when there is none)."""
    if b"exif" not in data[:65536].lower():  # cheap: most dataset images carry no EXIF
        return 1
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block: take the pixels as stored
        return 1


def _decode(data: bytes, name: str) -> np.ndarray | None:
    """The image's pixels, upright as its EXIF orientation says (as a photo viewer, and
    ``POST /api/predict``, show it); None, with a warning, for an empty or unreadable file."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is None:
        log.warning("skipping %s: %s", name, "an empty file" if not data else
                    "not a readable image")
        return None
    flip, rotate = _EXIF_UPRIGHT.get(_exif_orientation(data), (None, None))
    if flip is not None:
        img = cv2.flip(img, flip)
    if rotate is not None:
        img = cv2.rotate(img, rotate)
    if img.dtype == np.uint16:  # 16-bit PNG: keep the high byte rather than saturating
        img = (img // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 2:  # gray + alpha
        img = img[:, :, 0]
    return img


def _classify_path(rel: PurePosixPath) -> tuple[str | None, int] | None:
    """``(split or None, label index)`` from ``[...][split/]<class>/<file>``, or None."""
    parts = [p.lower() for p in rel.parts]
    if len(parts) < 2 or PurePosixPath(parts[-1]).suffix not in IMAGE_EXTS:
        return None
    if any(p.startswith(("__macosx", ".")) for p in parts):
        return None
    cls = parts[-2]
    if cls not in LABELS:
        return None
    split = SPLIT_ALIASES.get(parts[-3]) if len(parts) >= 3 else None
    return split, LABELS.index(cls)


def read_samples(
    path: Path, detect: str = "auto", detector: object | None = None
) -> dict[str | None, Split]:
    """Read every labelled image (or CSV row) under ``path``, grouped by split (None: unsplit)."""
    if detect not in ("auto", "always", "never"):
        raise DatasetError(f"--detect must be auto, always or never, not {detect!r}")
    groups: dict[str | None, tuple[list[np.ndarray], list[int], list[int]]] = {}
    csv_found = False
    # One pipeline for the whole dataset; its detector is made when an image first needs it.
    pipeline = FacePipeline(detector)  # type: ignore[arg-type]
    skipped: list[str] = []
    unreadable: list[str] = []
    # A .csv given itself is read as FER2013 whatever its name; inside a folder or zip, the
    # name says which CSV file is the dataset.
    direct_csv = path.is_file() and path.suffix.lower() == ".csv"
    for rel, read in _iter_entries(path):
        if rel.name.lower().endswith(".csv") and (direct_csv or "fer2013" in rel.name.lower()):
            csv_found = True
            for split, x, y in _read_fer_csv(read()):
                g = groups.setdefault(split, ([], [], [0]))
                g[0].append(x)
                g[1].append(y)
            continue
        where = _classify_path(rel)
        if where is None:
            if not any(p.lower().startswith(("__macosx", ".")) for p in rel.parts):
                skipped.append(str(rel))
            continue
        split, label = where
        img = _decode(read(), str(rel))
        g = groups.setdefault(split, ([], [], [0]))
        if img is None:
            unreadable.append(str(rel))
            continue
        face = pipeline.largest_crop(img, detect)
        if face is None:
            g[2][0] += 1
            continue
        g[0].append(face)
        g[1].append(label)
    if skipped:
        log.warning("%s: %d file(s) skipped: not an image (%s) directly in a folder named after "
                    "a class (%s), e.g. %s", path, len(skipped), ", ".join(sorted(IMAGE_EXTS)),
                    ", ".join(LABELS), ", ".join(skipped[:3]))
    if not groups:
        raise DatasetError(
            f"{path}: no labelled images found; expected [split/]<class>/<image> with classes "
            f"{', '.join(LABELS)}" + ("" if csv_found else ", or a fer2013.csv")
        )
    if unreadable and not any(g[1] or g[2][0] for g in groups.values()):
        raise DatasetError(f"{path}: none of its {len(unreadable)} image file(s) could be read "
                           f"(empty, corrupt or not an image), e.g. {', '.join(unreadable[:3])}")
    out = {}
    for split, (xs, ys, nf) in groups.items():
        x = np.stack(xs) if xs else np.zeros((0, INPUT_SIZE, INPUT_SIZE), np.uint8)
        out[split] = Split(x, np.asarray(ys, np.int64), nf[0])
    return out


def _read_fer_csv(data: bytes) -> Iterator[tuple[str | None, np.ndarray, int]]:
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    if reader.fieldnames is None:
        raise DatasetError("fer2013.csv is empty")
    reader.fieldnames = [f.strip() for f in reader.fieldnames]
    if not {"emotion", "pixels"} <= set(reader.fieldnames):
        raise DatasetError("fer2013.csv needs the columns emotion,pixels[,Usage]")
    for line, row in enumerate(reader, start=2):
        try:
            px = np.array(row["pixels"].split(), np.int64)
            label = int(row["emotion"])
        except (ValueError, AttributeError) as exc:
            raise DatasetError(f"fer2013.csv line {line}: {exc}") from exc
        side = int(round(len(px) ** 0.5))
        if len(px) == 0 or side * side != len(px):
            raise DatasetError(f"fer2013.csv line {line}: {len(px)} pixels, not a square image")
        if not 0 <= label < len(LABELS):
            raise DatasetError(f"fer2013.csv line {line}: emotion {label} is not in 0..6")
        img = np.clip(px, 0, 255).astype(np.uint8).reshape(side, side)
        yield FER_USAGE.get((row.get("Usage") or "").strip()), preprocess_face(img), label


# --------------------------------------------------------------------------- splitting

def _stratified(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split off ``fraction`` of ``split``; stratified by label when every class allows it."""
    n = len(split)
    if n < 2:
        raise DatasetError(f"{n} image(s) are too few to split into train/val/test")
    idx = np.arange(n)
    counts = np.bincount(split.y)
    present = counts[counts > 0]
    n_b = int(np.ceil(fraction * n))  # sklearn's rounding of test_size
    # Stratifying needs >= 2 images per class and room for every class on both sides.
    ok = present.min() >= 2 and min(n_b, n - n_b) >= len(present)
    a, b = train_test_split(idx, test_size=n_b, random_state=seed,
                            stratify=split.y if ok else None)
    return Split(split.x[a], split.y[a]), Split(split.x[b], split.y[b])


def make_splits(groups: dict[str | None, Split], seed: int = 1234, val_fraction: float = 0.1,
                val_keep: float = 1.0) -> Dataset:
    """Train/val/test from whatever splits the source has (see the module docstring of rules).

    - train+val+test: used as given.
    - train+one other (``validation/`` or ``test/``): the other is the test set; a stratified
      ``val_fraction`` of train becomes the validation set (early stopping never sees the test).
    - no splits: stratified 80:10:10.

    ``val_keep`` < 1 keeps that (stratified) fraction of the validation set as validation and
    moves the rest into training: more training images, a smaller (noisier) validation set
    that is still a subset of the full one, so a model trained on the full split's training
    images has never seen it.
    """
    def cat(*splits: Split) -> Split:
        ss = [s for s in splits if s is not None]
        if not ss:
            raise DatasetError("the dataset has no images")
        return Split(np.concatenate([s.x for s in ss]), np.concatenate([s.y for s in ss]),
                     sum(s.no_face for s in ss))

    train, val, test, unsplit = (groups.get(k) for k in ("train", "val", "test", None))
    if train is not None and unsplit is not None and len(unsplit):
        log.warning("ignoring %d images outside the train/val/test folders", len(unsplit))
    if train is None:
        pool = cat(*(s for s in (unsplit, val, test) if s is not None))
        rest, test_s = _stratified(pool, 0.1, seed)
        train_s, val_s = _stratified(rest, 1.0 / 9.0, seed)
        rule = "stratified 80:10:10 of an unsplit dataset"
    elif val is not None and test is not None:
        train_s, val_s, test_s = train, val, test
        rule = "train/val/test as given"
    else:
        given = test if test is not None else val
        if given is None:
            train, test_s = _stratified(train, 0.1, seed)
            rule = "test: stratified 10% of train; val: stratified 10% of the rest"
        else:
            test_s = given
            rule = "test: the dataset's validation/test split; val: stratified 10% of train"
        train_s, val_s = _stratified(train, val_fraction, seed)
    if not 0.0 < val_keep <= 1.0:
        raise DatasetError(f"the kept share of the validation set must be in (0, 1], "
                           f"not {val_keep}")
    if val_keep < 1.0:
        moved, val_s = _stratified(val_s, val_keep, seed)
        train_s = cat(train_s, moved)
        rule += f"; {len(moved)} of its images moved into train, {len(val_s)} kept"
    info = {"split_rule": rule, "seed": seed, "val_keep": val_keep,
            "counts": {name: {LABELS[i]: int(c) for i, c in
                              enumerate(np.bincount(s.y, minlength=len(LABELS)))}
                       for name, s in (("train", train_s), ("val", val_s), ("test", test_s))},
            "no_face": sum(s.no_face for s in groups.values())}
    return Dataset(train_s, val_s, test_s, info)


def cache_key(path: Path, detect: str) -> str:
    """Key of the preprocessed-array cache: path, size/mtime (of every file in a folder), detect."""
    st = path.stat()
    raw = f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}|{detect}|{INPUT_SIZE}|v2"
    if path.is_dir():  # a folder's own mtime misses changes inside its subfolders
        h = hashlib.sha1()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                fst = p.stat()
                h.update(f"{p.relative_to(path).as_posix()}|{fst.st_size}|{fst.st_mtime_ns}\n"
                         .encode())
        raw += "|" + h.hexdigest()
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def load_groups(path: str | os.PathLike, detect: str = "auto",
                cache_dir: str | os.PathLike | None = None) -> dict[str | None, Split]:
    """:func:`read_samples` with the preprocessed arrays cached in ``cache_dir`` (if given)."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p}: no such file or folder")
    if detect not in ("auto", "always", "never"):
        raise DatasetError(f"--detect must be auto, always or never, not {detect!r}")
    cache = Path(cache_dir) / f"{cache_key(p, detect)}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        try:
            with np.load(cache) as z:
                groups: dict[str | None, Split] = {}
                for k in ("train", "val", "test", "none"):
                    if f"{k}_x" in z:
                        groups[None if k == "none" else k] = Split(
                            z[f"{k}_x"], z[f"{k}_y"], int(z[f"{k}_nf"]))
            if groups:
                log.info("loaded preprocessed images from cache %s", cache)
                return groups
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("ignoring unreadable cache %s: %s", cache, exc)
    groups = read_samples(p, detect)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {}
        for split, s in groups.items():
            key = split or "none"
            arrays.update({f"{key}_x": s.x, f"{key}_y": s.y, f"{key}_nf": np.array(s.no_face)})
        tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(cache)
    return groups


def load_dataset(path: str | os.PathLike, seed: int = 1234, detect: str = "auto",
                 cache_dir: str | os.PathLike | None = None, val_keep: float = 1.0) -> Dataset:
    """Read, preprocess and split a dataset; preprocessed arrays are cached in ``cache_dir``."""
    ds = make_splits(load_groups(path, detect, cache_dir), seed, val_keep=val_keep)
    ds.info["source"] = str(path)
    return ds
