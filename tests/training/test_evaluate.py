"""Evaluation and export with fake predictors and a minimal Keras model (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.preprocess import INPUT_SIZE, LABELS
from training.data import DatasetError, Split
from training.evaluate import (
    evaluate_model,
    evaluate_path,
    load_keras_model_dir,
    metrics_report,
    predict_probs,
    save_report,
)

KEYS = {"n", "accuracy", "macro_f1", "per_class", "confusion", "labels", "no_face"}
PNG = b"\x89PNG\r\n\x1a\n"


def brightness_fn(batch: np.ndarray) -> np.ndarray:
    """A fake model: mean brightness picks the class (the synthetic faces encode it so)."""
    assert batch.dtype == np.float32 and batch.ndim == 4 and batch.shape[1:] == (48, 48, 1)
    assert batch.min() >= 0.0 and batch.max() <= 255.0
    mean = batch.mean(axis=(1, 2, 3))
    cls = np.clip(((mean - 30.0) / 30.0).round().astype(int), 0, 6)
    return np.eye(7, dtype=np.float32)[cls]


def uniform_fn(batch: np.ndarray) -> np.ndarray:
    return np.full((len(batch), 7), 1.0 / 7.0, np.float32)


# --------------------------------------------------------------------------- metrics

def test_metrics_report_keys_and_values() -> None:
    y_true = np.array([0, 0, 1, 3, 3, 3, 6])
    y_pred = np.array([0, 3, 1, 3, 3, 0, 6])
    r = metrics_report(y_true, y_pred)
    assert set(r) == KEYS
    assert r["labels"] == list(LABELS)
    assert r["n"] == 7 and r["no_face"] == 0
    assert r["accuracy"] == pytest.approx(5 / 7)
    cm = np.array(r["confusion"])
    assert cm.shape == (7, 7) and cm.sum() == 7
    assert cm[0, 3] == 1 and cm[3, 0] == 1 and cm[3, 3] == 2  # rows are the true labels
    happy = r["per_class"]["happy"]
    assert happy == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
                     "f1": pytest.approx(2 / 3), "support": 3}
    assert r["per_class"]["disgust"]["f1"] == 1.0
    assert r["per_class"]["fear"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert set(r["per_class"]) == set(LABELS)
    assert 0.0 < r["macro_f1"] < 1.0
    json.dumps(r)  # plain Python types only
    assert all(isinstance(v, int) for row in r["confusion"] for v in row)


def test_no_face_images_count_as_wrong() -> None:
    r = metrics_report([1, 2, 3], [1, 2, 3], no_face=1)
    assert r["n"] == 4 and r["no_face"] == 1 and r["accuracy"] == 0.75
    assert np.sum(r["confusion"]) == 3
    r0 = metrics_report([], [], no_face=5)
    assert r0["n"] == 5 and r0["accuracy"] == 0.0 and r0["macro_f1"] == 0.0
    assert np.sum(r0["confusion"]) == 0
    with pytest.raises(ValueError):
        metrics_report([1, 2], [1])


# --------------------------------------------------------------------------- predict

def test_predict_probs_with_a_plain_function_batches_in_order() -> None:
    x = np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((1, 48, 48), np.uint8)
    sizes = []

    def fn(batch):
        sizes.append(len(batch))
        out = np.zeros((len(batch), 7), np.float32)
        out[:, 0] = batch[:, 0, 0, 0]  # echo the pixel value
        return out

    probs = predict_probs(fn, x, batch_size=4)
    assert sizes == [4, 4, 2]
    assert probs.shape == (10, 7) and probs.dtype == np.float32
    assert probs[:, 0].tolist() == list(range(10))
    assert predict_probs(fn, np.zeros((0, 48, 48), np.uint8)).shape == (0, 7)
    assert predict_probs(fn, x[..., None], batch_size=64).shape == (10, 7)  # (N,S,S,1) too


def test_predict_probs_pads_keras_batches_to_one_shape() -> None:
    class FakeKeras:
        def __init__(self):
            self.shapes = []

        def predict_on_batch(self, batch):
            self.shapes.append(batch.shape)
            return uniform_fn(batch)

    m = FakeKeras()
    assert predict_probs(m, np.zeros((10, 48, 48), np.uint8), batch_size=4).shape == (10, 7)
    assert m.shapes == [(4, 48, 48, 1)] * 3


def test_predict_probs_checks_the_output_shape() -> None:
    from core.errors import ModelError

    with pytest.raises(ValueError, match="expected"):
        predict_probs(lambda b: np.zeros((len(b), 3)), np.zeros((2, 48, 48), np.uint8))
    # a model of another number of classes is a ModelError: the commands report it in one line
    with pytest.raises(ModelError, match=r"\(2, 5\) .* expected \(2, 7\): one probability for "
                                         "each of the labels angry"):
        predict_probs(lambda b: np.zeros((len(b), 5)), np.zeros((2, 48, 48), np.uint8))
    with pytest.raises(ValueError):
        predict_probs(uniform_fn, np.zeros((2, 48), np.uint8))


def test_evaluate_model_passes_no_face() -> None:
    x = np.stack([np.full((48, 48), 30 + 30 * c, np.uint8) for c in range(7)])
    r = evaluate_model(brightness_fn, Split(x, np.arange(7), no_face=3))
    assert r["n"] == 10 and r["no_face"] == 3 and r["accuracy"] == pytest.approx(0.7)
    assert r["macro_f1"] == 1.0


# --------------------------------------------------------------------------- report files

def test_save_report_writes_json_and_plots(tmp_path: Path) -> None:
    r = metrics_report([0, 1, 3, 3], [0, 1, 3, 2], no_face=1)
    r["val"] = {"accuracy": 0.5, "macro_f1": 0.4}
    hist = tmp_path / "history.csv"
    hist.write_text("epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\n"
                    "0,0.2,0.001,1.9,0.25,1.8\n1,0.3,0.001,1.7,0.3,1.75\n2,0.35,0.0005,1.6,0.33,1.7\n")
    out = tmp_path / "run"
    save_report(r, out, history_csv=hist)
    assert json.loads((out / "report.json").read_text()) == r
    for name in ("confusion.png", "curves.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    # no history (or a missing file): no curves; an all-zero confusion matrix is fine
    out2 = tmp_path / "run2"
    save_report(metrics_report([], [], no_face=2), out2, history_csv=tmp_path / "missing.csv")
    assert (out2 / "confusion.png").exists() and not (out2 / "curves.png").exists()
    assert not list(out.glob(".*tmp*"))


# --------------------------------------------------------------------------- evaluate_path

def test_evaluate_path_on_an_unsplit_folder_uses_all_images(tiny_folder: Path) -> None:
    r = evaluate_path(tiny_folder, brightness_fn)
    assert KEYS <= set(r)
    assert r["n"] == 70 and r["no_face"] == 0 and np.sum(r["confusion"]) == 70
    assert r["accuracy"] > 0.9  # the fake model reads the synthetic brightness code
    assert r["split"].startswith("all")
    assert evaluate_path(tiny_folder, uniform_fn, split="all")["n"] == 70
    with pytest.raises(DatasetError, match="no train"):
        evaluate_path(tiny_folder, uniform_fn, split="train")


def test_evaluate_path_follows_the_training_split_rule(make_folder, tmp_path: Path) -> None:
    root = make_folder("kaggle", {"train": 10, "validation": 2})
    r = evaluate_path(root, uniform_fn, cache_dir=tmp_path / "cache")
    assert r["n"] == 14  # validation/ is the test split
    assert evaluate_path(root, uniform_fn, split="val")["n"] == 7  # 10% of train
    assert evaluate_path(root, uniform_fn, split="train")["n"] == 63
    assert evaluate_path(root, uniform_fn, split="all")["n"] == 84
    # a model that trained on part of val (--val-keep) is validated on the rest only
    assert evaluate_path(root, uniform_fn, split="val", val_keep=0.5)["n"] == 4
    assert evaluate_path(root, uniform_fn, split="train", val_keep=0.5)["n"] == 66
    only_test = make_folder("private", {"test": 3})
    assert evaluate_path(only_test, uniform_fn)["n"] == 21
    with pytest.raises(DatasetError):
        evaluate_path(only_test, uniform_fn, split="val")
    with pytest.raises(DatasetError, match="split must be"):
        evaluate_path(root, uniform_fn, split="everything")


def test_evaluate_path_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        evaluate_path(tmp_path / "nothing", uniform_fn)
    (tmp_path / "empty" / "happy").mkdir(parents=True)
    with pytest.raises(DatasetError):
        evaluate_path(tmp_path / "empty", uniform_fn)
    (tmp_path / "unreadable" / "happy").mkdir(parents=True)
    (tmp_path / "unreadable" / "happy" / "x.jpg").write_bytes(b"no")
    with pytest.raises(DatasetError, match="none of its 1 image file.* could be read"):
        evaluate_path(tmp_path / "unreadable", uniform_fn)


def test_evaluate_path_counts_images_without_a_face(make_folder, synth) -> None:
    root = make_folder("faces", {"": 1})
    synth.write(root / "sad" / "wall.png", np.full((240, 320, 3), 128, np.uint8))
    r = evaluate_path(root, brightness_fn)  # detect=auto runs BlazeFace on the big image
    assert r["n"] == 8 and r["no_face"] == 1
    assert r["accuracy"] == pytest.approx(7 / 8)
    assert np.sum(r["confusion"]) == 7
    r2 = evaluate_path(root, brightness_fn, detect="never")
    assert r2["n"] == 8 and r2["no_face"] == 0


# --------------------------------------------------------------------------- model folders

def test_load_keras_model_dir_errors(tmp_path: Path) -> None:
    from core.errors import ModelError

    missing = tmp_path / "models" / "nope"
    with pytest.raises(ModelError) as e:
        load_keras_model_dir(missing)
    assert str(e.value).startswith(f"no model at {missing} (missing metadata.json); train one "
                                   "with `python run.py train --data PATH`")
    missing.mkdir(parents=True)
    (missing / "metadata.json").write_text(json.dumps({"files": {"keras": "model.keras"},
                                                       "labels": list(LABELS)}))
    with pytest.raises(ModelError, match="model.keras: model file missing"):
        load_keras_model_dir(missing)
    (missing / "metadata.json").write_text(json.dumps({"labels": ["a", "b"]}))
    with pytest.raises(ModelError, match="labels"):
        load_keras_model_dir(missing)
    (missing / "metadata.json").write_text("[1, 2]")
    with pytest.raises(ModelError, match="not a JSON object"):
        load_keras_model_dir(missing)
    with pytest.raises(ModelError):
        evaluate_path(tmp_path, str(tmp_path / "models" / "absent"))


@pytest.fixture(scope="module")
def tiny_keras_model():
    import keras

    inp = keras.Input((INPUT_SIZE, INPUT_SIZE, 1))
    x = keras.layers.Rescaling(1.0 / 255.0)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(7, activation="softmax")(x)
    return keras.Model(inp, out)


def _report() -> dict:
    r = metrics_report([0, 1, 2, 3, 4, 5, 6, 3], [0, 1, 2, 3, 4, 5, 6, 4])
    r.update(val={"n": 5, "accuracy": 0.6, "macro_f1": 0.5}, weights="scratch",
             train_minutes=0.1)
    return r


def test_export_model_writes_the_metadata_schema(tiny_keras_model, tmp_path: Path,
                                                 tiny_folder: Path) -> None:
    from core.preprocess import CROP_MARGIN, CROP_SHIFT_Y
    from training.augment import AugmentConfig
    from training.export import export_model
    from training.train import TrainConfig

    cfg = TrainConfig(data=str(tiny_folder), width=0.0625, epochs=3, max_minutes=5.0,
                      augment=AugmentConfig(vflip=True), cache_dir=str(tmp_path / "c"))
    info = {"split_rule": "stratified 80:10:10 of an unsplit dataset", "seed": 1234,
            "counts": {s: {label: n for label in LABELS} for s, n in
                       (("train", 8), ("val", 1), ("test", 1))}, "no_face": 0,
            "source": str(tiny_folder)}
    report = _report()
    d = export_model(tiny_keras_model, tmp_path / "models" / "tiny", cfg, info, report)
    assert d == tmp_path / "models" / "tiny"
    assert sorted(p.name for p in d.iterdir()) == ["MODEL_CARD.md", "metadata.json",
                                                   "model.keras"]
    meta = json.loads((d / "metadata.json").read_text())
    assert set(meta) == {"name", "format_version", "files", "labels", "input", "preprocessing",
                         "train_minutes",
                         "architecture", "training", "dataset", "metrics", "created"}
    assert meta["train_minutes"] == 0.1  # recorded, so a re-export never parses the card
    assert meta["name"] == "tiny" and meta["format_version"] == 1
    assert meta["files"] == {"keras": "model.keras"}
    assert meta["labels"] == list(LABELS)
    assert meta["input"] == {"size": 48, "channels": 1, "dtype": "float32", "range": [0, 255]}
    assert meta["preprocessing"] == {"grayscale": True, "median_kernel": 3,
                                     "contrast_percentiles": [1.0, 99.0],
                                     "crop_margin": CROP_MARGIN, "crop_shift_y": CROP_SHIFT_Y,
                                     "rescale_in_model": True,
                                     "detector": "blazeface-full-range (live) / "
                                                 "blazeface+mtcnn (photos)",
                                     "test_time_augmentation": "hflip-average"}
    assert meta["architecture"] == {"name": "vgg16", "width": 0.0625, "weights": "scratch",
                                    "params": tiny_keras_model.count_params()}
    assert "cache_dir" not in meta["training"]
    assert meta["training"]["augment"]["vflip"] is True and meta["training"]["epochs"] == 3
    assert meta["dataset"] == info
    assert meta["metrics"]["test"] == {k: report[k] for k in
                                       ("accuracy", "macro_f1", "per_class", "confusion", "n")}
    assert meta["metrics"]["val"] == report["val"]
    assert meta["created"].endswith("+00:00")

    card = (d / "MODEL_CARD.md").read_text()
    assert f"{report['accuracy']:.3f}" in card and f"{report['macro_f1']:.3f}" in card
    assert "not** for decisions about people" in card
    assert f"python run.py train --data {tiny_folder}" in card
    assert "--vflip" in card and "--width 0.0625" in card and "--max-minutes 5.0" in card
    assert "| disgust |" in card

    # exporting again replaces the files instead of adding versions; artifacts converted
    # from the old model (listed in the old metadata) go, unknown files stay
    meta["files"]["tflite_fp32"] = "model_fp32.tflite"
    (d / "metadata.json").write_text(json.dumps(meta))
    (d / "model_fp32.tflite").write_bytes(b"old")
    (d / "notes.txt").write_text("mine")
    report2 = dict(report, accuracy=0.123456)
    export_model(tiny_keras_model, d, cfg, info, report2)
    (d / "notes.txt").unlink()
    assert sorted(p.name for p in d.iterdir()) == ["MODEL_CARD.md", "metadata.json",
                                                   "model.keras"]
    assert json.loads((d / "metadata.json").read_text())["metrics"]["test"]["accuracy"] == 0.123456

    model, meta2 = load_keras_model_dir(d)
    assert meta2["name"] == "tiny"
    x = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    np.testing.assert_allclose(predict_probs(model, x), predict_probs(tiny_keras_model, x),
                               rtol=1e-5, atol=1e-6)
    # a model folder path works as evaluate_path's predictor (run.py passes --model)
    r = evaluate_path(tiny_folder, str(d))
    assert r["n"] == 70 and np.sum(r["confusion"]) == 70


def test_convert_records_every_backend_on_the_models_own_split(make_folder, tmp_path: Path,
                                                               monkeypatch) -> None:
    """`run.py convert --data` scores each backend on the split the model recorded (its seed,
    its kept share of val) and files it under the split's plain name, as training does."""
    import run
    from tests.helpers import make_tiny_model_dir

    monkeypatch.setenv("HOME", str(tmp_path))  # the dataset cache lands here
    root = make_folder("kaggle", {"train": 10, "validation": 2})
    model = make_tiny_model_dir(tmp_path / "m")
    meta = json.loads((model / "metadata.json").read_text())
    meta["dataset"] = {"seed": 5, "val_keep": 0.5}
    (model / "metadata.json").write_text(json.dumps(meta))
    assert run.main(["convert", "--model", str(model), "--quantize", "dynamic",
                     "--data", str(root), "--split", "val"]) == 0
    backends = json.loads((model / "metadata.json").read_text())["metrics"]["backends"]
    assert set(backends) == {"keras", "litert-int8"}
    for report in backends.values():
        assert report["split"] == "val" and report["n"] == 4  # half of the 7 val images
