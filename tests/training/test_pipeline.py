"""Training steps with tiny shapes: balance, model, augmentation, and a tiny end-to-end run."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.preprocess import INPUT_SIZE, LABELS
from training.balance import class_weights, smote

RNG = np.random.default_rng(0)
KEYS = {"n", "accuracy", "macro_f1", "per_class", "confusion", "labels", "no_face"}


# --------------------------------------------------------------------------- balance

def test_class_weights() -> None:
    y = np.array([0] * 60 + [1] * 6 + [3] * 30 + [6] * 4)
    w = class_weights(y, power=1.0)
    assert set(w) == set(range(7))
    # sklearn's "balanced": n / (k * count)
    assert w[0] == pytest.approx(100 / (7 * 60)) and w[1] == pytest.approx(100 / (7 * 6))
    assert w[1] > w[3] > w[0]
    assert w[2] == pytest.approx(100 / 7)  # absent classes do not divide by zero
    w_half = class_weights(y, power=0.5)
    assert w_half[1] == pytest.approx(w[1] ** 0.5)
    assert all(v == 1.0 for v in class_weights(y, power=0.0).values())


def test_smote_balances_counts_and_keeps_dtype_and_shape() -> None:
    x = RNG.integers(0, 256, (40, INPUT_SIZE, INPUT_SIZE), dtype=np.uint8)
    y = np.array([0] * 20 + [1] * 3 + [3] * 12 + [5] * 5)
    xs, ys = smote(x, y, seed=1)
    assert xs.dtype == np.uint8 and xs.shape[1:] == (INPUT_SIZE, INPUT_SIZE)
    assert len(xs) == len(ys) == 80
    counts = np.bincount(ys, minlength=7)
    assert counts[[0, 1, 3, 5]].tolist() == [20] * 4 and counts[[2, 4, 6]].sum() == 0
    # the original images are kept; new ones lie between same-class neighbours
    assert np.array_equal(xs[:40], x) and np.array_equal(ys[:40], y)
    assert np.array_equal(smote(x, y, seed=1)[0], xs)  # seeded


def test_smote_handles_a_one_image_class_and_a_single_class() -> None:
    x = RNG.integers(0, 256, (7, 8, 8), dtype=np.uint8)
    y = np.array([0, 0, 0, 0, 0, 0, 2])
    xs, ys = smote(x, y)
    assert np.bincount(ys).tolist() == [6, 0, 6]
    assert np.all(xs[ys == 2] == x[6])  # a lone image can only be copied
    xs1, ys1 = smote(x[:6], y[:6])
    assert len(ys1) == 6


# --------------------------------------------------------------------------- model, augment

@pytest.fixture(scope="module")
def small_model():
    from training.model import build_model

    return build_model(width=0.125)


def test_build_model_outputs_probabilities(small_model) -> None:
    x = RNG.integers(0, 256, (3, INPUT_SIZE, INPUT_SIZE, 1)).astype(np.float32)
    p = np.asarray(small_model(x, training=False))
    assert p.shape == (3, len(LABELS))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert small_model.input_shape == (None, INPUT_SIZE, INPUT_SIZE, 1)
    assert small_model.get_layer("rescale") is not None  # 0..255 in, rescaled inside
    # 13 conv layers, as in VGG16
    assert sum(1 for la in small_model.layers if la.name.startswith("block")
               and "_conv" in la.name) == 13


def test_build_model_rejects_unknown_weights() -> None:
    from training.model import build_model

    with pytest.raises(ValueError):
        build_model(width=0.0625, weights="celebrity-faces")


def test_augmenter_keeps_the_shape_and_is_off_at_inference() -> None:
    from training.augment import AugmentConfig, build_augmenter

    aug = build_augmenter(AugmentConfig(), seed=3)
    x = RNG.integers(0, 256, (4, INPUT_SIZE, INPUT_SIZE, 1)).astype(np.float32)
    out = np.asarray(aug(x, training=True))
    assert out.shape == x.shape and out.dtype == np.float32
    assert not np.allclose(out, x)
    np.testing.assert_array_equal(np.asarray(aug(x, training=False)), x)
    none = build_augmenter(AugmentConfig(hflip=False, zoom=0, shift=0, rotation_deg=0,
                                         brightness=0))
    assert len(none.layers) == 0


def test_imagenet_weights_fall_back_to_scratch_without_network(monkeypatch, caplog) -> None:
    import keras

    from training.train import TrainConfig, build_for

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(keras.applications, "VGG16", offline)
    cfg = TrainConfig(data="unused", weights="imagenet", width=0.0625, jit_compile=False)
    with caplog.at_level(logging.WARNING, logger="training.train"):
        model, origin = build_for(cfg)
    assert origin == "scratch"
    assert model.output_shape == (None, len(LABELS))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("falling back" in r.getMessage().lower() and "no network" in r.getMessage()
               for r in warnings)


# --------------------------------------------------------------------------- end to end

def _history_epochs(path: Path) -> list[int]:
    with open(path, newline="") as fh:
        return [int(row["epoch"]) for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run (2 epochs) on a synthetic unsplit folder, exported."""
    from tests.training.conftest import synthetic_face, write_image
    from training.train import TrainConfig, train

    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    for li, label in enumerate(LABELS):
        for i in range(10):
            write_image(data / label / f"{i}.png", synthetic_face(li, i))
    cfg = TrainConfig(data=str(data), out=str(root / "run"), models_dir=str(root / "models"),
                      name="tiny", width=0.0625, epochs=2, batch_size=8, jit_compile=False,
                      verbose=0, cache_dir=str(root / "cache"))
    report = train(cfg)
    return cfg, report


def test_train_reports_and_exports(trained) -> None:
    from training.evaluate import evaluate_path, load_keras_model_dir

    cfg, report = trained
    assert KEYS <= set(report)
    assert report["n"] == 7 and np.sum(report["confusion"]) == 7  # the 10% test split
    assert set(report["val"]) == {"n", "accuracy", "macro_f1"} and report["val"]["n"] == 7
    assert report["weights"] == "scratch"
    run = Path(cfg.out)
    for name in ("best.keras", "last.keras", "history.csv", "report.json", "confusion.png",
                 "curves.png", "split.json", "config.json", "state.json"):
        assert (run / name).is_file(), name
    assert _history_epochs(run / "history.csv") == [0, 1]
    assert json.loads((run / "state.json").read_text())["epoch"] == 2
    split = json.loads((run / "split.json").read_text())
    assert {k: sum(v.values()) for k, v in split["counts"].items()} == {
        "train": 56, "val": 7, "test": 7}

    model_dir = Path(cfg.models_dir) / cfg.name
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "MODEL_CARD.md", "metadata.json", "model.keras", "model_fp32.tflite", "model_int8.tflite"]
    model, meta = load_keras_model_dir(model_dir)
    # the export step also made the fast CPU artifacts and recorded their test accuracy
    backends = meta["metrics"]["backends"]
    assert set(backends) == {"keras", "litert-fp32", "litert-int8"}
    assert backends["keras"]["accuracy"] == report["accuracy"]
    assert backends["litert-fp32"]["accuracy"] == report["accuracy"]
    assert meta["files"] == {"keras": "model.keras", "tflite_fp32": "model_fp32.tflite",
                             "tflite_int8": "model_int8.tflite"}
    assert meta["metrics"]["test"]["accuracy"] == report["accuracy"]
    assert meta["training"]["epochs"] == 2 and "cache_dir" not in meta["training"]
    assert meta["architecture"]["params"] == model.count_params()
    assert meta["dataset"]["counts"] == split["counts"]

    # The export is the mirror-averaged model; the report also keeps the plain model's figures.
    from training.model import TTA_SUFFIX

    assert model.name.endswith(TTA_SUFFIX)
    assert meta["preprocessing"]["test_time_augmentation"] == "hflip-average"
    assert set(report["without_tta"]) == {"n", "accuracy", "macro_f1", "val"}
    assert "mirror image" in (model_dir / "MODEL_CARD.md").read_text()
    x = np.random.default_rng(1).integers(0, 256, (3, INPUT_SIZE, INPUT_SIZE, 1)).astype(
        np.float32)
    inner = next(layer for layer in model.layers if hasattr(layer, "layers"))
    mean = (inner.predict(x, verbose=0) + inner.predict(x[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(model.predict(x, verbose=0), mean, atol=1e-5)

    r = evaluate_path(cfg.data, model, cache_dir=cfg.cache_dir)  # no split folders: all 70
    assert KEYS <= set(r)
    assert r["n"] == 70 and r["no_face"] == 0 and np.sum(r["confusion"]) == 70
    assert r["labels"] == list(LABELS)
    assert all(sum(row) == r["per_class"][lb]["support"]
               for lb, row in zip(LABELS, r["confusion"]))
    # the exported model predicts what the trained one reported on the same test split
    from training.data import load_dataset
    from training.evaluate import evaluate_model

    ds = load_dataset(cfg.data, seed=cfg.seed, cache_dir=cfg.cache_dir)
    assert evaluate_model(model, ds.test)["accuracy"] == report["accuracy"]


def test_resume_continues_from_the_last_checkpoint(trained, tmp_path: Path) -> None:
    from training.train import train

    cfg, _ = trained
    run = tmp_path / "run"
    shutil.copytree(cfg.out, run)
    cfg2 = replace(cfg, out=str(run), models_dir=str(tmp_path / "models"), epochs=3,
                   resume=True, convert=False)
    report = train(cfg2)
    assert _history_epochs(run / "history.csv") == [0, 1, 2]  # appended: epoch 3 only
    assert json.loads((run / "state.json").read_text())["epoch"] == 3
    assert report["n"] == 7
    assert (tmp_path / "models" / cfg.name / "metadata.json").is_file()


def ensemble_cli(args: list[str]) -> int:
    """``python run.py ensemble ARGS`` in this process."""
    from run import main

    return main(["ensemble", *args])


def test_ensemble_command_rebuilds_the_export_from_a_model_folder(trained, tmp_path, capsys
                                                                  ) -> None:
    from training.evaluate import evaluate_model, load_keras_model_dir
    from training.model import TTA_SUFFIX

    cfg, report = trained
    src = Path(cfg.models_dir) / cfg.name
    out = tmp_path / "models"
    assert ensemble_cli([str(src), "--name", "again", "--models-dir", str(out),
                          "--train-minutes", "1.5"]) == 0
    model, meta = load_keras_model_dir(out / "again")
    # the source was mirror-averaged already: the tool unwraps it instead of wrapping twice
    assert model.name.endswith(TTA_SUFFIX) and not model.name.endswith(TTA_SUFFIX * 2)
    assert meta["preprocessing"]["test_time_augmentation"] == "hflip-average"
    assert meta["metrics"]["test"]["accuracy"] == report["accuracy"]
    assert meta["metrics"]["without_tta"]["accuracy"] == report["without_tta"]["accuracy"]
    assert meta["training"]["width"] == cfg.width and meta["training"]["name"] == "again"
    assert "Training took 1.5 minutes." in (out / "again" / "MODEL_CARD.md").read_text()
    assert set(meta["metrics"]["backends"]) == {"keras", "litert-fp32", "litert-int8"}
    assert json.loads(capsys.readouterr().out)["test"]["accuracy"] == report["accuracy"]

    # an existing export is replaced only with --overwrite
    card = (out / "again" / "MODEL_CARD.md").read_text()
    capsys.readouterr()
    assert ensemble_cli([str(src), "--name", "again", "--models-dir", str(out), "--no-convert"]
                        ) == 2
    assert capsys.readouterr().err == (f"error: {out / 'again'} already holds a model: pass "
                                       "--name NEW to export under another name, or "
                                       "--overwrite to replace it\n")
    assert (out / "again" / "MODEL_CARD.md").read_text() == card
    assert ensemble_cli([str(src), "--name", "again", "--models-dir", str(out), "--no-convert",
                          "--overwrite"]) == 0
    assert "Training took 1.5 minutes." not in (out / "again" / "MODEL_CARD.md").read_text()
    capsys.readouterr()

    assert ensemble_cli([str(src), "--name", "plain", "--models-dir", str(out), "--no-tta",
                          "--no-convert"]) == 0
    plain, meta = load_keras_model_dir(out / "plain")
    assert not plain.name.endswith(TTA_SUFFIX)
    assert meta["preprocessing"]["test_time_augmentation"] is None
    from training.data import load_dataset

    ds = load_dataset(cfg.data, seed=cfg.seed, cache_dir=cfg.cache_dir)
    assert evaluate_model(plain, ds.test)["accuracy"] == report["without_tta"]["accuracy"]

    assert ensemble_cli([str(tmp_path / "missing"), "--models-dir", str(out)]) == 2
    assert "error: no model at" in capsys.readouterr().err


def test_init_starts_from_a_trained_models_weights(trained, tmp_path) -> None:
    from training.evaluate import load_keras_model_dir
    from training.train import InitModelError, train

    cfg, _ = trained
    src = Path(cfg.models_dir) / cfg.name  # mirror-averaged export: the wrapper is looked through
    source, _ = load_keras_model_dir(src)
    inner = next(layer for layer in source.layers if hasattr(layer, "layers"))
    # lr 0: an init run keeps the given weights (only BatchNorm's moving statistics move).
    # Another training seed: the data split still follows the source's recorded one, so the
    # images the source was validated on stay out of this run's training data.
    run = replace(cfg, out=str(tmp_path / "run"), models_dir=str(tmp_path / "models"), epochs=1,
                  lr=0.0, init=str(src), convert=False, seed=cfg.seed + 7)
    train(run)
    assert json.loads((tmp_path / "run" / "split.json").read_text())["seed"] == cfg.seed
    assert json.loads((tmp_path / "run" / "config.json").read_text())["split_seed"] == cfg.seed
    model, meta = load_keras_model_dir(Path(run.models_dir) / run.name)
    again = next(layer for layer in model.layers if hasattr(layer, "layers"))
    assert len(again.trainable_weights) == len(inner.trainable_weights) > 0
    for a, b in zip(again.trainable_weights, inner.trainable_weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert meta["training"]["init"] == str(src)
    card = (Path(run.models_dir) / run.name / "MODEL_CARD.md").read_text()
    assert f"--init {src}" in card and f"started from the weights of `{src}`" in card
    assert meta["dataset"]["seed"] == cfg.seed and f"--split-seed {cfg.seed}" in card

    again_run = replace(run, overwrite=True)  # the same --out and --name once more
    with pytest.raises(InitModelError, match="no such model file"):
        train(replace(again_run, init=str(tmp_path / "missing")))
    with pytest.raises(InitModelError, match="--width"):
        train(replace(again_run, init=str(src), width=0.125))
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(InitModelError, match="notes.txt: not a model folder or a .keras file"):
        train(replace(again_run, init=str(tmp_path / "notes.txt")))


def test_teacher_probabilities_become_the_targets_and_are_recorded(trained, tmp_path) -> None:
    from training.evaluate import load_keras_model_dir, predict_probs
    from training.model import with_tta, without_tta
    from training.train import TeacherError, train

    cfg, _ = trained
    teacher_dir = Path(cfg.models_dir) / cfg.name
    run = replace(cfg, out=str(tmp_path / "run"), models_dir=str(tmp_path / "models"), epochs=1,
                  convert=False, teacher=str(teacher_dir), teacher_weight=0.6,
                  teacher_temperature=2.0, teacher_tta_shift=1, label_smoothing=0.1)
    report = train(run)
    assert 0.0 <= report["accuracy"] <= 1.0
    # the cached teacher probabilities are the teacher's own, over its shifted views
    with np.load(tmp_path / "run" / "teacher.npz") as z:
        probs, labels = z["probs"], z["labels"]
    teacher, _ = load_keras_model_dir(teacher_dir)
    from training.data import load_dataset

    ds = load_dataset(cfg.data, seed=cfg.seed, cache_dir=cfg.cache_dir)
    np.testing.assert_array_equal(labels, ds.train.y)
    np.testing.assert_allclose(probs, predict_probs(with_tta(without_tta(teacher), 1), ds.train.x),
                               atol=1e-5)
    _, meta = load_keras_model_dir(Path(run.models_dir) / run.name)
    assert meta["training"]["teacher"] == str(teacher_dir)
    assert meta["training"]["teacher_weight"] == 0.6
    card = (Path(run.models_dir) / run.name / "MODEL_CARD.md").read_text()
    assert f"--teacher {teacher_dir} --teacher-weight 0.6 --teacher-temperature 2.0" in card

    # The cache names the teacher by content: another model at the same path is recomputed.
    import shutil

    from training.train import teacher_probs

    swapped = tmp_path / "swapped"
    shutil.copytree(teacher_dir, swapped)
    run2, out2 = replace(run, teacher=str(swapped)), tmp_path / "run2"
    out2.mkdir()
    first = teacher_probs(run2, ds.train, out2)
    np.testing.assert_allclose(first, probs, atol=1e-5)
    shutil.copy(Path(run.models_dir) / run.name / "model.keras", swapped / "model.keras")
    second = teacher_probs(run2, ds.train, out2)
    student, _ = load_keras_model_dir(swapped)
    np.testing.assert_allclose(second, predict_probs(with_tta(without_tta(student), 1),
                                                     ds.train.x), atol=1e-5)
    assert not np.allclose(first, second, atol=1e-4)

    with pytest.raises(TeacherError, match="no such model file"):
        train(replace(run, teacher=str(tmp_path / "missing"), overwrite=True))
    with pytest.raises(TeacherError, match="SMOTE"):
        train(replace(run, balance="smote", overwrite=True))


def test_a_diverged_run_stops_with_an_error_and_exports_nothing(trained, tmp_path,
                                                                monkeypatch) -> None:
    import training.train as tt

    cfg, _ = trained
    build = tt.build_for

    def nan_weights(c):  # a network whose loss is NaN from the first batch on
        model, origin = build(c)
        weights = model.get_weights()
        weights[0] = np.full_like(weights[0], np.nan)
        model.set_weights(weights)
        return model, origin

    monkeypatch.setattr(tt, "build_for", nan_weights)
    run = replace(cfg, out=str(tmp_path / "run"), models_dir=str(tmp_path / "models"), epochs=2,
                  convert=False)
    with pytest.raises(tt.DivergedError, match="the loss became nan in epoch 1: training "
                                               "diverged .*--lr.*nothing was exported"):
        tt.train(run)
    assert not (tmp_path / "models").exists()
    # the diverged epoch was not checkpointed (no NaN model to resume from or export)
    assert not (tmp_path / "run" / "best.keras").exists()
    assert not (tmp_path / "run" / "last.keras").exists()


def test_data_warnings_single_class_and_most_images_without_a_face(caplog) -> None:
    from training.data import Dataset, Split
    from training.train import warn_about_data

    def split(labels):
        return Split(np.zeros((len(labels), INPUT_SIZE, INPUT_SIZE), np.uint8),
                     np.asarray(labels, np.int64))

    ok = Dataset(split([0, 1, 2]), split([0]), split([1]), {"no_face": 1})
    with caplog.at_level(logging.WARNING, logger="training.train"):
        warn_about_data(ok, "auto")
    assert not caplog.records
    faceless = Dataset(split([3, 3]), split([3]), split([3]), {"no_face": 9})
    with caplog.at_level(logging.WARNING, logger="training.train"):
        warn_about_data(faceless, "always")
    messages = [r.getMessage() for r in caplog.records]
    assert any("9 of 13 images were left out" in m and "--detect auto or never" in m
               for m in messages)
    assert any("all of one class (happy)" in m for m in messages)


def test_split_seed_is_read_from_a_models_metadata(tmp_path) -> None:
    from core.model_dir import recorded_split_seed

    model = tmp_path / "m"
    model.mkdir()
    (model / "metadata.json").write_text(json.dumps({"dataset": {"seed": 2027}}))
    assert recorded_split_seed(model) == 2027
    assert recorded_split_seed(model / "model.keras") == 2027  # a file inside the folder
    assert recorded_split_seed(tmp_path / "missing") is None
    (model / "metadata.json").write_text("{not json")
    assert recorded_split_seed(model) is None
    run = tmp_path / "run"  # a training run's folder (e.g. --init runs/x/best.keras)
    run.mkdir()
    (run / "split.json").write_text(json.dumps({"split_rule": "x", "seed": 7}))
    assert recorded_split_seed(run / "best.keras") == 7


def test_train_cli_bad_init_is_an_error_not_a_traceback(tmp_path, tiny_folder) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(root / "run.py"), "train", "--data", str(tiny_folder),
                        "--out", str(tmp_path / "run"), "--models-dir", str(tmp_path / "m"),
                        "--width", "0.0625", "--epochs", "1", "--init", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "error: --init" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- schedule, precision

def test_cosine_lr_warms_up_then_decays_to_zero_by_epochs_or_by_time() -> None:
    from training.train import cosine_lr

    lrs = [cosine_lr(1e-3, e, 11, warmup_epochs=1) for e in range(11)]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)
    # Strictly down to a small last step (an epoch at exactly 0 would be wasted).
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:])) and 0 < lrs[-1] < 0.05 * lrs[1]
    # Half the time budget spent at epoch 1 of 100: already half way down the cosine.
    assert cosine_lr(1e-3, 1, 100, minutes_done=30, max_minutes=60) == pytest.approx(5e-4)
    assert cosine_lr(1e-3, 5, 100, minutes_done=90, max_minutes=60) == 0.0


def test_bfloat16_model_exports_as_float32_with_the_same_weights() -> None:
    import keras

    from training.model import build_model, to_float32

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = build_model(width=0.0625)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.get_layer("block1_conv1").dtype_policy.name == "mixed_bfloat16"
    plain = to_float32(mixed)
    assert {layer.dtype_policy.name for layer in plain.layers} == {"float32"}
    for a, b in zip(mixed.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = RNG.integers(0, 256, (2, INPUT_SIZE, INPUT_SIZE, 1)).astype(np.float32)
    np.testing.assert_allclose(plain(x), mixed(x), atol=0.05)  # bf16 rounding only
    assert to_float32(plain) is plain


def test_bfloat16_cosine_run_exports_float32_and_restores_the_policy(trained, tmp_path) -> None:
    import keras

    from training.evaluate import load_keras_model_dir
    from training.train import train

    cfg, _ = trained
    bf = replace(cfg, out=str(tmp_path / "run"), models_dir=str(tmp_path / "models"),
                 precision="bfloat16", schedule="cosine", epochs=2, convert=False)
    report = train(bf)
    assert keras.mixed_precision.global_policy().name == "float32"
    history = list(csv.DictReader(open(Path(bf.out) / "history.csv")))
    assert [float(r["learning_rate"]) for r in history] == pytest.approx([5e-4, 1e-3])
    model, meta = load_keras_model_dir(Path(bf.models_dir) / bf.name)
    assert meta["training"]["precision"] == "bfloat16"
    assert "--precision bfloat16 --schedule cosine" in (
        Path(bf.models_dir) / bf.name / "MODEL_CARD.md").read_text()
    names = {layer.dtype_policy.name for layer in model.layers}
    for layer in model.layers:
        names |= {sub.dtype_policy.name for sub in getattr(layer, "layers", [])}
    assert names == {"float32"}
    assert meta["metrics"]["test"]["accuracy"] == report["accuracy"]


def test_ensemble_command_builds_an_ensemble_of_model_folders(trained_pair, tmp_path, capsys
                                                               ) -> None:
    from training.evaluate import load_keras_model_dir
    from training.model import members, without_tta

    (cfg, _), src_a, src_b = trained_pair
    out = tmp_path / "models"
    assert ensemble_cli([str(src_a), str(src_b), "--name", "ens", "--models-dir", str(out),
                          "--tta-shift", "2", "--int8-only"]) == 0
    model, meta = load_keras_model_dir(out / "ens")
    assert len(members(without_tta(model))) == 2
    assert meta["files"] == {"keras": "model.keras", "tflite_int8": "model_int8.tflite"}
    assert not (out / "ens" / "model_fp32.tflite").exists()
    assert set(meta["metrics"]["backends"]) == {"keras", "litert-int8"}
    ens = meta["architecture"]["ensemble"]
    assert [m["source"] for m in ens] == [str(src_a), str(src_b)]
    assert all(0.0 <= m["test"]["accuracy"] <= 1.0 for m in ens)
    assert "--int8-only" in meta["training"]["ensemble_command"]
    member_minutes = [json.loads((s / "metadata.json").read_text())["train_minutes"]
                      for s in (src_a, src_b)]
    assert meta["train_minutes"] == round(sum(member_minutes), 1)  # from the metadata alone
    summary = json.loads(capsys.readouterr().out)
    assert summary["test"]["accuracy"] == meta["metrics"]["test"]["accuracy"]
    from core.runtimes import choose_backend, load_classifier

    assert choose_backend(out / "ens", gpu=False) == "litert-int8"
    faces = np.random.default_rng(3).integers(0, 256, (2, INPUT_SIZE, INPUT_SIZE, 1))
    probs = load_classifier(out / "ens", "litert-int8").predict_batch(faces.astype(np.float32))
    assert np.asarray(probs).shape == (2, len(LABELS))

    # a missing member: a clear error
    assert ensemble_cli([str(src_a), str(tmp_path / "nope"), "--models-dir", str(out)]) == 2
    assert "error: no model at" in capsys.readouterr().err

    # a member of another number of classes is named
    import keras

    five = tmp_path / "five"
    shutil.copytree(src_a, five)
    inp = keras.Input((INPUT_SIZE, INPUT_SIZE, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inp))
    keras.Model(inp, keras.layers.Dense(5, activation="softmax")(x)).save(five / "model.keras")
    assert ensemble_cli([str(src_a), str(five), "--name", "mixed", "--models-dir", str(out),
                          "--no-convert"]) == 2
    assert capsys.readouterr().err == (f"error: {five}: its model outputs shape (None, 5), not "
                                       f"the probabilities of the 7 labels "
                                       f"({', '.join(LABELS)})\n")
    assert not (out / "mixed").exists()


@pytest.fixture(scope="module")
def trained_pair(trained, tmp_path_factory):
    """The module's tiny run exported twice under other names: two ensemble members."""
    import shutil

    cfg, report = trained
    src = Path(cfg.models_dir) / cfg.name
    root = tmp_path_factory.mktemp("pair")
    a, b = root / "a", root / "b"
    shutil.copytree(src, a)
    shutil.copytree(src, b)
    return (cfg, report), a, b
