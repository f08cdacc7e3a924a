"""core.model_dir: the one owner of metadata.json, and Keras loads with explicit custom objects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import ModelError
from core.model_dir import (
    METADATA_FILE,
    keras_path,
    read_meta,
    recorded_split_seed,
    update_metadata,
    write_metadata,
)
from core.preprocess import LABELS

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "default"


def good_meta(**extra) -> dict:
    return {"name": "m", "labels": list(LABELS), "input": {"size": 48},
            "files": {"keras": "model.keras"}, **extra}


def test_read_meta_validates_and_gives_typed_access(tmp_path) -> None:
    write_metadata(tmp_path, good_meta(
        dataset={"seed": 2027}, train_minutes=12.5,
        metrics={"backends": {"litert-int8": {"accuracy": 0.6}}}))
    meta = read_meta(tmp_path)
    assert (meta.name, meta.split_seed, meta.train_minutes) == ("m", 2027, 12.5)
    assert meta.val_keep == 1.0  # not recorded: all of val validated
    assert meta.accuracy("litert-int8") == 0.6 and meta.accuracy("keras") is None
    assert meta.keras_path == tmp_path / "model.keras"
    assert meta.path("tflite_int8") is None


@pytest.mark.parametrize("raw, message", [
    ("{not json", "unreadable metadata"),
    ("[1]", "not a JSON object"),
    (json.dumps({"labels": ["a"]}), "labels"),
    (json.dumps({"labels": list(LABELS), "input": {"size": 64}}), "input size 64"),
])
def test_unusable_metadata_is_one_clear_model_error(tmp_path, raw, message) -> None:
    (tmp_path / METADATA_FILE).write_text(raw)
    with pytest.raises(ModelError, match=message):
        read_meta(tmp_path)


def test_missing_folder_says_how_to_make_a_model(tmp_path) -> None:
    with pytest.raises(ModelError, match="python run.py train --data PATH"):
        read_meta(tmp_path / "nope")
    with pytest.raises(ModelError, match="model file missing"):
        keras_path(tmp_path / "x.keras")


def test_a_corrupt_or_wrong_file_is_not_called_missing(tmp_path) -> None:
    from core.model_dir import load_keras

    for name, data in (("bad.keras", b"garbage"), ("cut.keras", (SHIPPED / "model.keras")
                                                   .read_bytes()[:1000])):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ModelError) as exc:
            load_keras(tmp_path / name)
        assert str(exc.value) == (f"{tmp_path / name}: cannot read the model file: it is "
                                  "corrupt or not a Keras .keras file")
    (tmp_path / "m").mkdir()
    write_metadata(tmp_path / "m", good_meta())
    (tmp_path / "m" / "model.keras").write_bytes(b"garbage")  # in a model folder too
    with pytest.raises(ModelError, match="corrupt or not a Keras .keras file"):
        load_keras(tmp_path / "m")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelError, match="notes.txt: not a model folder .* or a .keras file"):
        keras_path(tmp_path / "notes.txt")


def test_writes_are_validated_atomic_and_keep_other_keys(tmp_path) -> None:
    write_metadata(tmp_path, good_meta(extra={"kept": True}))
    update_metadata(tmp_path, lambda m: m["files"].update(tflite_int8="model_int8.tflite"))
    on_disk = json.loads((tmp_path / METADATA_FILE).read_text())
    assert on_disk["extra"] == {"kept": True}
    assert on_disk["files"] == {"keras": "model.keras", "tflite_int8": "model_int8.tflite"}
    with pytest.raises(ModelError, match="labels"):
        write_metadata(tmp_path, {"labels": ["x"]})
    assert json.loads((tmp_path / METADATA_FILE).read_text()) == on_disk  # left as it was
    assert [p.name for p in tmp_path.iterdir()] == [METADATA_FILE]  # no temp file left


def test_val_keep_is_read_from_the_metadata(tmp_path) -> None:
    from core.model_dir import recorded_val_keep

    write_metadata(tmp_path, good_meta(dataset={"seed": 1, "val_keep": 0.2}))
    assert recorded_val_keep(tmp_path) == 0.2
    assert recorded_val_keep(tmp_path / "model.keras") == 0.2
    assert recorded_val_keep(tmp_path / "no" / "such" / "model") == 1.0
    write_metadata(tmp_path, good_meta(dataset={"seed": 1, "val_keep": "x"}))
    assert recorded_val_keep(tmp_path) == 1.0
    run = tmp_path / "run"  # a training run's folder: its split.json
    run.mkdir()
    (run / "split.json").write_text(json.dumps({"seed": 7, "val_keep": 0.3}))
    assert recorded_val_keep(run / "last.keras") == 0.3


def test_split_seed_of_a_run_folder(tmp_path) -> None:
    (tmp_path / "split.json").write_text(json.dumps({"seed": 7}))
    assert recorded_split_seed(tmp_path / "best.keras") == 7


def run_fresh(code: str) -> str:
    """Run ``code`` in a fresh Python process (nothing imported before) at the repo root."""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=240, env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.timeout(300)
def test_a_label_smoothing_checkpoint_resumes_in_a_fresh_process(tmp_path) -> None:
    """``train --resume`` loads ``last.keras`` with its optimizer and loss; a run trained with
    ``--label-smoothing`` saved the custom loss, which must load without anything imported."""
    ckpt = tmp_path / "last.keras"
    run_fresh(
        "from training.model import build_model, compile_model\n"
        "m = build_model(width=0.0625)\n"
        "compile_model(m, 1e-3, jit_compile=False, label_smoothing=0.1)\n"
        f"m.save({str(ckpt)!r}); print('saved')")
    loss = run_fresh(
        "from core.model_dir import load_keras\n"
        f"m = load_keras({str(ckpt)!r}, compile=True)\n"
        "print(type(m.loss).__name__, m.loss.smoothing)")
    assert loss == "SmoothedSparseCrossentropy 0.1"


@pytest.mark.timeout(300)
@pytest.mark.skipif(not (SHIPPED / "model.keras").exists(), reason="no shipped model")
def test_the_shipped_model_loads_in_a_fresh_process() -> None:
    name = run_fresh("from core.model_dir import load_keras\n"
                     "print(load_keras('models/default').name)")
    assert name.endswith("_tta")
