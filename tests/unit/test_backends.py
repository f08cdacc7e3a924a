"""Inference backends: LiteRT conversion, agreement with Keras, batch sizes, automatic choice.

Uses the tiny random VGG16 of ``tests.helpers`` with its last layer rescaled so its outputs are
confident (a random net's are uniform, which would hide quantization error), on the real face
crops of ``tests/fixtures/faces``. No timing assertions.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from core import runtimes as clf_mod
from core.preprocess import LABELS, preprocess_face, to_batch
from core.runtimes import (
    BACKENDS,
    LiteRTClassifier,
    ModelError,
    choose_backend,
    load_classifier,
)
from tests.helpers import FACES_DIR, face_images, make_tiny_model_dir
from training.convert import ARTIFACTS, convert_model_dir, export_tflite, record_metrics

pytestmark = pytest.mark.timeout(180)

LITERT = ("litert-fp32", "litert-int8")


def _sharpen(model_dir: Path, x: np.ndarray) -> None:
    """Rescale the output layer so the faces' logits spread (std ~3) around zero."""
    import keras

    model = keras.models.load_model(model_dir / "model.keras", compile=False)
    feats = keras.Model(model.inputs[0], model.get_layer("fc1").output)(x).numpy()
    kernel, _ = model.get_layer("probs").get_weights()
    centred = (feats - feats.mean(0)) @ kernel
    kernel = kernel * (3.0 / float(centred.std()))
    model.get_layer("probs").set_weights([kernel, -(feats.mean(0) @ kernel)])
    model.save(model_dir / "model.keras")


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """The fixture faces as the classifier's input batch ``(6, 48, 48, 1)``."""
    return to_batch([preprocess_face(f) for f in face_images()])


@pytest.fixture(scope="module")
def converted_dir(tmp_path_factory, faces) -> Path:
    import keras

    keras.utils.set_random_seed(7)
    d = make_tiny_model_dir(tmp_path_factory.mktemp("backends") / "tiny")
    _sharpen(d, faces)
    convert_model_dir(d)
    return d


@pytest.fixture(scope="module")
def outputs(converted_dir, faces) -> dict[str, np.ndarray]:
    return {name: load_classifier(converted_dir, name).predict_batch(faces) for name in BACKENDS}


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(clf_mod, "has_gpu", lambda: False)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _set_accuracy(model_dir: Path, **acc: float) -> None:
    meta = json.loads((model_dir / "metadata.json").read_text())
    meta.setdefault("metrics", {})["backends"] = {
        k.replace("_", "-"): {"accuracy": v} for k, v in acc.items()}
    (model_dir / "metadata.json").write_text(json.dumps(meta))


# --------------------------------------------------------------------------- conversion

def test_fixture_faces_are_real_and_labelled(faces):
    assert faces.shape == (6, 48, 48, 1) and faces.dtype == np.float32
    assert {p.name.split("_")[0] for p in FACES_DIR.glob("*.jpg")} <= set(LABELS)


def test_convert_lists_artifacts_and_keeps_other_metadata(converted_dir, tiny_model_dir):
    meta = json.loads((converted_dir / "metadata.json").read_text())
    before = json.loads((tiny_model_dir / "metadata.json").read_text())
    assert meta["files"] == {"keras": "model.keras", "tflite_fp32": "model_fp32.tflite",
                             "tflite_int8": "model_int8.tflite"}
    for key in ("name", "format_version", "labels", "input"):
        assert meta[key] == before[key]
    for name in ("model_fp32.tflite", "model_int8.tflite"):
        assert (converted_dir / name).stat().st_size > 10_000
    # int8 weights: the quantized file is much smaller.
    assert ((converted_dir / "model_int8.tflite").stat().st_size
            < 0.5 * (converted_dir / "model_fp32.tflite").stat().st_size)
    assert not list(converted_dir.glob(".*tmp*")), "temporary files left behind"


def test_export_tflite_rejects_unknown_quantization(tmp_path):
    with pytest.raises(ValueError, match="quantize"):
        export_tflite(object(), tmp_path / "x.tflite", "int4")


def test_record_metrics_adds_backends_and_keeps_test_metrics(converted_dir, tmp_path):
    d = _copy(converted_dir, tmp_path / "m")
    meta = json.loads((d / "metadata.json").read_text())
    meta["metrics"] = {"test": {"accuracy": 0.61, "n": 10}}
    (d / "metadata.json").write_text(json.dumps(meta))
    calls = []

    def evaluate(backend: str) -> dict:
        calls.append(backend)
        return {"accuracy": 0.6, "macro_f1": 0.5, "n": 10, "split": "test", "confusion": [[1]]}

    new = record_metrics(d, evaluate, ["keras", *LITERT])
    assert calls == ["keras", *LITERT]
    on_disk = json.loads((d / "metadata.json").read_text())
    assert on_disk == new
    assert on_disk["metrics"]["test"] == {"accuracy": 0.61, "n": 10}
    assert on_disk["metrics"]["backends"]["litert-int8"] == {
        "accuracy": 0.6, "macro_f1": 0.5, "n": 10, "split": "test"}
    assert on_disk["files"] == meta["files"]


def test_convert_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="metadata.json"):
        convert_model_dir(tmp_path)


# --------------------------------------------------------------------------- agreement

def test_every_backend_is_registered():
    assert set(BACKENDS) == {"keras", *LITERT}
    assert {v[2] for v in ARTIFACTS.values()} == set(LITERT)


def test_outputs_are_probabilities(outputs):
    for name, y in outputs.items():
        assert y.shape == (6, len(LABELS)) and y.dtype == np.float32, name
        np.testing.assert_allclose(y.sum(1), 1.0, atol=1e-4, err_msg=name)
    # The sharpened model is confident, so agreement below means something.
    assert outputs["keras"].max(1).mean() > 0.4


def test_litert_fp32_matches_keras(outputs):
    np.testing.assert_allclose(outputs["litert-fp32"], outputs["keras"], atol=1e-4)
    assert (outputs["litert-fp32"].argmax(1) == outputs["keras"].argmax(1)).all()


def test_litert_int8_close_to_keras(outputs):
    agree = int((outputs["litert-int8"].argmax(1) == outputs["keras"].argmax(1)).sum())
    assert agree >= 5, f"int8 agrees with Keras on {agree}/6 faces"
    assert np.abs(outputs["litert-int8"] - outputs["keras"]).max() < 0.1


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_batch_sizes_give_consistent_outputs(converted_dir, faces, outputs, backend):
    c = load_classifier(converted_dir, backend)
    ref = outputs[backend]
    atol = 1e-3 if backend == "litert-int8" else 1e-5
    one = np.concatenate([c.predict_batch(faces[i : i + 1]) for i in range(6)])
    np.testing.assert_allclose(one, ref, atol=atol)
    np.testing.assert_allclose(c.predict_batch(faces[:3]), ref[:3], atol=atol)
    big = np.concatenate([faces] * 3)[:16]
    np.testing.assert_allclose(c.predict_batch(big), np.concatenate([ref] * 3)[:16], atol=atol)
    # Alternating sizes (the interpreter is resized back and forth) and an empty batch.
    np.testing.assert_allclose(c.predict_batch(faces[:1]), ref[:1], atol=atol)
    assert c.predict_batch(faces[:0]).shape == (0, len(LABELS))


def test_batches_larger_than_a_chunk_are_split(converted_dir, faces, outputs):
    c = load_classifier(converted_dir, "litert-int8")
    x = np.concatenate([faces] * 12)  # 72 > MAX_CHUNK
    y = c.predict_batch(x)
    assert y.shape == (72, len(LABELS))
    np.testing.assert_allclose(y, np.concatenate([outputs["litert-int8"]] * 12), atol=1e-3)


def test_classifiers_describe_themselves(converted_dir):
    c = LiteRTClassifier(converted_dir, "int8", threads=1)
    assert (c.name, c.backend, c.device, c.labels, c.threads) == (
        "tiny-test", "litert-int8", "CPU", LABELS, 1)
    assert load_classifier(converted_dir, "litert-fp32", threads=2).backend == "litert-fp32"


def test_server_gives_a_cpu_classifier_one_thread_unless_told(converted_dir):
    from server.app import create_app
    from server.config import ServerConfig
    from server.state import CLASSIFIER

    app = create_app(ServerConfig(model_dir=str(converted_dir), backend="litert-int8"))
    assert app[CLASSIFIER].threads == 1  # the detection pool has the cores (see infer_threads_for)
    app = create_app(ServerConfig(model_dir=str(converted_dir), backend="litert-int8",
                                  infer_threads=2))
    assert app[CLASSIFIER].threads == 2


def test_several_gpus_get_one_pinned_copy_each(converted_dir, faces, outputs):
    from core.runtimes import load_replicas

    # gpus=2 on a machine without them: TensorFlow's soft placement runs both copies on the
    # CPU, which still checks that each copy is built, pinned and predicts like the reference.
    reps = load_replicas(converted_dir, "keras", gpus=2)
    assert [r.device for r in reps] == ["GPU:0", "GPU:1"]
    for r in reps:
        np.testing.assert_allclose(r.predict_batch(faces), outputs["keras"], atol=1e-4)
    assert len(load_replicas(converted_dir, "litert-int8", gpus=2)) == 1  # CPU: one copy
    assert len(load_replicas(converted_dir, "keras", gpus=1)) == 1


# --------------------------------------------------------------------------- selection

def test_auto_prefers_int8_without_gpu(converted_dir, no_gpu, caplog):
    assert choose_backend(converted_dir, "auto", gpu=False) == "litert-int8"
    with caplog.at_level(logging.INFO, logger="core.runtimes"):
        c = load_classifier(converted_dir)
    assert c.backend == "litert-int8" and c.device == "CPU"
    assert "unverified" in caplog.text


def test_gpu_probe_does_not_need_tensorflow_without_a_driver(monkeypatch):
    def no_tf():
        raise AssertionError("TensorFlow asked although no GPU device node exists")

    monkeypatch.setattr(clf_mod.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(clf_mod.os.path, "exists", lambda path: False)
    monkeypatch.setattr(clf_mod, "gpu_devices", no_tf)
    assert clf_mod.has_gpu() is False


def test_auto_uses_keras_on_a_gpu(converted_dir):
    assert choose_backend(converted_dir, "auto", gpu=True) == "keras"


def test_auto_uses_keras_without_tflite_files(tiny_model_dir, no_gpu):
    assert choose_backend(tiny_model_dir, "auto", gpu=False) == "keras"
    assert load_classifier(tiny_model_dir).backend == "keras"


@pytest.mark.parametrize("acc8, acc32, expected", [
    (0.600, 0.600, "litert-int8"),
    (0.596, 0.600, "litert-int8"),   # 0.4 points lower: within 0.5
    (0.590, 0.600, "litert-fp32"),   # 1 point lower: too much
    (0.650, 0.600, "litert-int8"),
])
def test_auto_checks_recorded_int8_accuracy(converted_dir, tmp_path, acc8, acc32, expected):
    d = _copy(converted_dir, tmp_path / "m")
    _set_accuracy(d, litert_int8=acc8, litert_fp32=acc32)
    assert choose_backend(d, "auto", gpu=False) == expected


def test_auto_compares_with_keras_when_fp32_not_measured(converted_dir, tmp_path):
    d = _copy(converted_dir, tmp_path / "m")
    _set_accuracy(d, litert_int8=0.50, keras=0.60)
    assert choose_backend(d, "auto", gpu=False) == "litert-fp32"


def test_auto_falls_back_to_fp32_when_int8_file_is_gone(converted_dir, tmp_path):
    d = _copy(converted_dir, tmp_path / "m")
    (d / "model_int8.tflite").unlink()
    assert choose_backend(d, "auto", gpu=False) == "litert-fp32"


def test_unknown_backend_is_a_model_error(converted_dir):
    with pytest.raises(ModelError, match="unknown backend 'onnx'.*litert-int8"):
        load_classifier(converted_dir, "onnx")


@pytest.mark.parametrize("backend", LITERT)
def test_missing_artifact_says_how_to_convert(tiny_model_dir, backend):
    with pytest.raises(ModelError, match=r"python run\.py convert --model"):
        load_classifier(tiny_model_dir, backend)


def test_listed_but_deleted_artifact_says_how_to_convert(converted_dir, tmp_path):
    d = _copy(converted_dir, tmp_path / "m")
    (d / "model_fp32.tflite").unlink()
    with pytest.raises(ModelError, match=r"model_fp32\.tflite is missing.*run\.py convert"):
        load_classifier(d, "litert-fp32")


def test_corrupt_artifact_is_a_model_error(converted_dir, tmp_path):
    d = _copy(converted_dir, tmp_path / "m")
    (d / "model_int8.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelError, match="cannot load LiteRT model"):
        load_classifier(d, "litert-int8")


def test_keras_warms_every_bucket_the_batcher_can_hit_when_asked(converted_dir):
    from core.runtimes import KerasClassifier

    assert KerasClassifier(converted_dir, max_batch=6, warm_all=True).warmed == [1, 2, 4, 8]
    assert KerasClassifier(converted_dir, max_batch=6, warm_all=False).warmed == [1]
