"""Dataset loading: layouts, zip, fer2013.csv, split rules, errors, cache, detection modes."""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pytest

import training.data as data
from core.faces import Detection
from core.preprocess import INPUT_SIZE, LABELS, preprocess_face
from training.data import (
    DatasetError,
    Split,
    load_dataset,
    load_groups,
    make_splits,
    read_samples,
)


def counts(split: Split) -> list[int]:
    return np.bincount(split.y, minlength=len(LABELS)).tolist()


def assert_split_ok(s: Split) -> None:
    assert s.x.dtype == np.uint8 and s.x.shape == (len(s), INPUT_SIZE, INPUT_SIZE)
    assert s.y.dtype == np.int64 and s.y.shape == (len(s),)


# --------------------------------------------------------------------------- layouts

def test_unsplit_folder_is_stratified_80_10_10(tiny_folder: Path) -> None:
    ds = load_dataset(tiny_folder, seed=7)
    for s in (ds.train, ds.val, ds.test):
        assert_split_ok(s)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (56, 7, 7)
    # every class in every split, in the 8:1:1 ratio
    assert counts(ds.train) == [8] * 7
    assert counts(ds.val) == [1] * 7
    assert counts(ds.test) == [1] * 7
    assert ds.info["split_rule"] == "stratified 80:10:10 of an unsplit dataset"
    assert ds.info["counts"]["test"] == {label: 1 for label in LABELS}
    assert ds.info["source"] == str(tiny_folder)
    # the three splits are disjoint and together are the whole folder
    rows = {s.x[i].tobytes() for s in (ds.train, ds.val, ds.test) for i in range(len(s))}
    assert len(rows) == 70


def test_split_is_seeded(tiny_folder: Path) -> None:
    a, b, c = (load_dataset(tiny_folder, seed=s) for s in (1, 1, 2))
    assert np.array_equal(a.test.x, b.test.x) and np.array_equal(a.train.y, b.train.y)
    assert not np.array_equal(a.test.x, c.test.x)


def test_split_folders_are_used_as_given(make_folder) -> None:
    root = make_folder("split3", {"train": 4, "val": 2, "test": 3}, exts=(".png", ".jpg"))
    ds = load_dataset(root)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (28, 14, 21)
    assert counts(ds.test) == [3] * 7
    assert ds.info["split_rule"] == "train/val/test as given"


def test_train_plus_validation_becomes_test_and_val_is_carved_from_train(make_folder) -> None:
    root = make_folder("kaggle", {"train": 10, "validation": 2})
    groups = read_samples(root)
    assert set(groups) == {"train", "val"}
    ds = make_splits(groups, seed=3)
    # validation/ is the test set, untouched and in order
    assert np.array_equal(ds.test.x, groups["val"].x)
    assert np.array_equal(ds.test.y, groups["val"].y)
    # val: a stratified 10% of train; train and val are disjoint and cover train/
    assert (len(ds.train), len(ds.val)) == (63, 7)
    assert counts(ds.val) == [1] * 7
    seen = {r.tobytes() for r in ds.train.x} | {r.tobytes() for r in ds.val.x}
    assert seen == {r.tobytes() for r in groups["train"].x}
    assert "validation/test split" in ds.info["split_rule"]


def test_val_keep_moves_the_rest_of_val_into_train(make_folder) -> None:
    groups = read_samples(make_folder("keep", {"train": 20, "validation": 2}))
    full = make_splits(groups, seed=3)
    part = make_splits(groups, seed=3, val_keep=0.5)
    assert (len(full.train), len(full.val)) == (126, 14)
    assert (len(part.train), len(part.val)) == (133, 7)
    assert counts(part.val) == [1] * 7  # stratified
    kept = {r.tobytes() for r in part.val.x}
    full_val = {r.tobytes() for r in full.val.x}
    # the kept val is a subset of the full one: a model trained on the full split's train
    # images has never seen it; the rest of val trains, nothing is lost or doubled
    assert kept < full_val
    assert {r.tobytes() for r in part.train.x} == {r.tobytes() for r in full.train.x} | (
        full_val - kept)
    assert np.array_equal(part.test.x, full.test.x)
    assert part.info["val_keep"] == 0.5 and "7 of its images moved into train" in (
        part.info["split_rule"])
    assert full.info["val_keep"] == 1.0 and "moved" not in full.info["split_rule"]
    for bad in (0.0, 1.5):
        with pytest.raises(DatasetError, match="kept share"):
            make_splits(groups, seed=3, val_keep=bad)


def test_train_plus_test_folder(make_folder) -> None:
    root = make_folder("tt", {"training": 10, "testing": 1})
    ds = load_dataset(root)
    assert len(ds.test) == 7 and len(ds.val) == 7 and len(ds.train) == 63


def test_train_only_carves_test_then_val(make_folder) -> None:
    ds = load_dataset(make_folder("tronly", {"train": 10}))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (56, 7, 7)
    assert counts(ds.test) == [1] * 7


def test_tiny_classes_fall_back_to_unstratified_split(make_folder) -> None:
    # 2 images per class: 10% cannot hold all seven classes, so the split is not stratified
    ds = load_dataset(make_folder("mini", {"": 2}))
    assert len(ds.train) + len(ds.val) + len(ds.test) == 14
    assert min(len(ds.train), len(ds.val), len(ds.test)) >= 1


def test_missing_classes_still_stratify(make_folder) -> None:
    ds = load_dataset(make_folder("some", {"": 10}, labels=("happy", "sad")))
    assert counts(ds.test)[LABELS.index("happy")] == 1
    assert counts(ds.test)[LABELS.index("sad")] == 1


def test_zip_reads_like_the_folder(make_folder, synth, tmp_path: Path) -> None:
    root = make_folder("zsrc", {"train": 3, "validation": 1}, exts=(".png", ".jpg"))
    z = synth.zip(root, tmp_path / "fer.zip", prefix="fer2013")
    gz, gf = read_samples(z), read_samples(root)
    assert set(gz) == set(gf) == {"train", "val"}
    for k in gf:
        assert np.array_equal(gz[k].x, gf[k].x) and np.array_equal(gz[k].y, gf[k].y)
    ds = load_dataset(z)
    assert len(ds.test) == 7


def test_non_images_and_unknown_folders_are_ignored(make_folder, synth, caplog) -> None:
    root = make_folder("noisy", {"": 2})
    (root / "README.txt").write_text("hello")
    (root / "happy" / "notes.txt").write_text("x")
    synth.write(root / "contempt" / "c.png", synth.face(0, 0))  # not one of the labels
    (root / "sad" / "broken.png").write_bytes(b"not a png")  # skipped with a warning
    (root / "sad" / "empty.jpg").write_bytes(b"")  # used to raise cv2.error
    (root / ".hidden" / "happy").mkdir(parents=True)
    synth.write(root / ".hidden" / "happy" / "h.png", synth.face(3, 0))
    with caplog.at_level("WARNING", logger="training.data"):
        groups = read_samples(root)
    assert list(groups) == [None] and len(groups[None]) == 14
    said = caplog.text
    assert "broken.png: not a readable image" in said and "empty.jpg: an empty file" in said
    assert "3 file(s) skipped" in said  # README.txt, notes.txt, contempt/c.png; not .hidden
    assert "contempt/c.png" in said


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(make_folder, synth, orientation) -> None:
    """A photo stored sideways with an EXIF orientation is read upright, as a viewer (and
    POST /api/predict) shows it."""
    from PIL import Image

    root = make_folder("exif", {"": 0})
    upright = synth.face(3, 0, size=64)
    stored = {3: cv2.ROTATE_180, 6: cv2.ROTATE_90_COUNTERCLOCKWISE,
              8: cv2.ROTATE_90_CLOCKWISE}[orientation]
    im = Image.fromarray(cv2.rotate(upright, stored))
    exif = im.getexif()
    exif[0x0112] = orientation
    (root / "happy").mkdir()
    im.save(root / "happy" / "a.png", exif=exif.tobytes())
    synth.write(root / "happy" / "b.png", upright)
    g = read_samples(root, detect="never")[None]
    assert len(g) == 2 and np.array_equal(g.x[0], g.x[1])


def test_gray_alpha_and_16bit_pngs_are_read(make_folder, synth) -> None:
    root = make_folder("odd", {"": 0})
    img = synth.face(3, 0)
    from PIL import Image

    (root / "happy").mkdir()
    Image.fromarray(np.dstack([img, np.full_like(img, 255)]), "LA").save(root / "happy" / "ga.png")
    synth.write(root / "happy" / "bgra.png", cv2.cvtColor(img, cv2.COLOR_GRAY2BGRA))
    synth.write(root / "sad" / "deep.png", img.astype(np.uint16) * 257)
    g = read_samples(root)[None]
    assert len(g) == 3
    for face in g.x:  # every variant decodes to the same crop
        assert np.array_equal(face, preprocess_face(img))


# --------------------------------------------------------------------------- fer2013.csv

def _fer_csv(rows: list[tuple[int, np.ndarray, str | None]]) -> str:
    with_usage = any(u is not None for _, _, u in rows)
    lines = ["emotion,pixels,Usage" if with_usage else "emotion,pixels"]
    for label, img, usage in rows:
        px = " ".join(str(int(v)) for v in img.ravel())
        lines.append(f"{label},{px},{usage}" if with_usage else f"{label},{px}")
    return "\n".join(lines) + "\n"


def test_fer2013_csv_with_usage(tmp_path: Path, synth) -> None:
    rows = []
    for label in range(7):
        for i in range(4):
            rows.append((label, synth.face(label, i), "Training"))
        rows.append((label, synth.face(label, 10), "PublicTest"))
        rows.append((label, synth.face(label, 11), "PrivateTest"))
    root = tmp_path / "csvset"
    root.mkdir()
    (root / "fer2013.csv").write_text(_fer_csv(rows))
    groups = read_samples(root)
    assert {k: len(v) for k, v in groups.items()} == {"train": 28, "val": 7, "test": 7}
    first_test = groups["test"]
    assert first_test.y.tolist() == list(range(7))
    assert np.array_equal(first_test.x[0], preprocess_face(synth.face(0, 11)))
    ds = load_dataset(root)
    assert ds.info["split_rule"] == "train/val/test as given"
    # the same CSV inside a zip
    z = tmp_path / "fer.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(root / "fer2013.csv", "fer2013/fer2013.csv")
    assert np.array_equal(read_samples(z)["test"].x, first_test.x)
    # the CSV file itself (whatever its name), as train's and evaluate's --data say
    from training.evaluate import evaluate_path

    own = tmp_path / "my-faces.csv"
    own.write_text(_fer_csv(rows))
    for path in (root / "fer2013.csv", own):
        direct = read_samples(path)
        assert {k: len(v) for k, v in direct.items()} == {"train": 28, "val": 7, "test": 7}
        assert np.array_equal(direct["test"].x, first_test.x)
        assert load_dataset(path).info["split_rule"] == "train/val/test as given"
        r = evaluate_path(path, lambda b: np.full((len(b), 7), 1 / 7, np.float32))
        assert r["n"] == 7  # the test split of the 42 rows


def test_fer2013_csv_without_usage_is_unsplit(tmp_path: Path, synth) -> None:
    rows = [(label, synth.face(label, i), None) for label in range(7) for i in range(10)]
    (tmp_path / "fer2013.csv").write_text(_fer_csv(rows))
    ds = load_dataset(tmp_path)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (56, 7, 7)


@pytest.mark.parametrize("text", [
    "label,pixels\n0,1 2 3 4\n",  # wrong columns
    "emotion,pixels\n0,1 2 3\n",  # not square
    "emotion,pixels\n9,1 2 3 4\n",  # label out of range
    "emotion,pixels\nx,1 2 3 4\n",  # not a number
])
def test_bad_fer2013_csv(tmp_path: Path, text: str) -> None:
    (tmp_path / "fer2013.csv").write_text(text)
    with pytest.raises(DatasetError):
        load_dataset(tmp_path)


# --------------------------------------------------------------------------- errors

def test_bad_paths_give_dataset_errors(tmp_path: Path, make_folder) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no labelled images"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(DatasetError, match="folder, a .zip of one, or a fer2013.csv file"):
        load_dataset(tmp_path / "x.txt")
    (tmp_path / "bad.zip").write_bytes(b"PK not really")
    with pytest.raises(DatasetError, match="zip"):
        load_dataset(tmp_path / "bad.zip")
    # class folders that are all empty / only unreadable files
    (tmp_path / "hollow" / "happy").mkdir(parents=True)
    (tmp_path / "hollow" / "happy" / "a.png").write_bytes(b"nope")
    (tmp_path / "hollow" / "sad").mkdir()
    (tmp_path / "hollow" / "sad" / "b.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"none of its 2 image file\(s\) could be read .*"
                                           r"happy/a.png, sad/b.jpg"):
        load_dataset(tmp_path / "hollow")
    # the same in a zip (not "too few images to split")
    with zipfile.ZipFile(tmp_path / "hollow.zip", "w") as zf:
        zf.writestr("train/happy/a.jpg", b"not an image")
        zf.writestr("train/sad/b.jpg", b"not an image")
    with pytest.raises(DatasetError, match="could be read"):
        load_dataset(tmp_path / "hollow.zip")
    with pytest.raises(DatasetError, match="detect"):
        load_dataset(make_folder("ok", {"": 1}), detect="sometimes")


def test_a_single_image_cannot_be_split(make_folder) -> None:
    with pytest.raises(DatasetError, match="too few"):
        load_dataset(make_folder("one", {"": 1}, labels=("happy",)))


# --------------------------------------------------------------------------- cache

def test_cache_round_trip_gives_identical_arrays(make_folder, synth, tmp_path: Path,
                                                 monkeypatch) -> None:
    root = make_folder("cached", {"train": 3, "validation": 1}, exts=(".png", ".jpg"))
    cache = tmp_path / "cache"
    first = load_dataset(root, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 1

    def boom(*a, **k):
        raise AssertionError("read_samples called although the cache is warm")

    monkeypatch.setattr(data, "read_samples", boom)
    second = load_dataset(root, cache_dir=cache)
    for name in ("train", "val", "test"):
        a, b = getattr(first, name), getattr(second, name)
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and a.x.dtype == b.x.dtype
    assert first.info == second.info
    monkeypatch.undo()
    # a file added in a class subfolder changes the key: the cache is not reused
    synth.write(root / "train" / "happy" / "new.png", synth.face(3, 99))
    third = load_dataset(root, cache_dir=cache)
    assert len(third.train) + len(third.val) == len(first.train) + len(first.val) + 1


def test_corrupt_cache_is_ignored(tiny_folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_groups(tiny_folder, cache_dir=cache)
    (npz,) = cache.glob("*.npz")
    npz.write_bytes(b"garbage")
    assert len(load_groups(tiny_folder, cache_dir=cache)[None]) == 70


# --------------------------------------------------------------------------- detection modes

class FakeDetector:
    def __init__(self, boxes):
        self.boxes = boxes
        self.calls = 0

    def detect(self, bgr):
        assert bgr.ndim == 3 and bgr.shape[2] == 3
        self.calls += 1
        return [Detection(b, 0.9) for b in self.boxes]


def test_detect_never_just_resizes_a_large_image(make_folder, synth) -> None:
    root = make_folder("big", {"": 0})
    big = synth.face(4, 0, size=200, channels=3)[:, :150]
    synth.write(root / "sad" / "big.png", big)
    g = read_samples(root, detect="never")[None]
    assert g.x.shape == (1, INPUT_SIZE, INPUT_SIZE) and g.no_face == 0
    assert np.array_equal(g.x[0], preprocess_face(big))


def test_detection_crops_the_largest_face_and_counts_misses(make_folder, synth) -> None:
    root = make_folder("det", {"": 0})
    big = synth.face(4, 0, size=200, channels=3)
    synth.write(root / "sad" / "big.png", big)
    synth.write(root / "happy" / "small.png", synth.face(3, 0))
    det = FakeDetector([(10, 10, 20, 20), (50, 40, 100, 100)])
    g = read_samples(root, detect="auto", detector=det)[None]
    assert det.calls == 1  # the 48x48 image is a crop already
    from core.preprocess import crop_face

    sad = g.x[g.y == LABELS.index("sad")][0]
    assert np.array_equal(sad, crop_face(big, (50, 40, 100, 100)))
    # no face found: the image is counted, not returned
    g2 = read_samples(root, detect="always", detector=FakeDetector([]))[None]
    assert len(g2) == 0 and g2.no_face == 2


def test_classify_path() -> None:
    c = data._classify_path
    assert c(PurePosixPath("train/happy/a.jpg")) == ("train", LABELS.index("happy"))
    assert c(PurePosixPath("x/Validation/Sad/a.PNG")) == ("val", LABELS.index("sad"))
    assert c(PurePosixPath("neutral/a.jpeg")) == (None, LABELS.index("neutral"))
    assert c(PurePosixPath("other/neutral/a.jpeg")) == (None, LABELS.index("neutral"))
    assert c(PurePosixPath("train/happy/a.txt")) is None
    assert c(PurePosixPath("train/contempt/a.jpg")) is None
    assert c(PurePosixPath("__MACOSX/train/happy/._a.jpg")) is None
    assert c(PurePosixPath("a.jpg")) is None
