"""The model folder (``models/<name>/``): the one owner of ``metadata.json`` and its files.

A model folder holds ``metadata.json`` (format version 1, written by ``training.export``), the
Keras model it lists under ``files.keras`` and, optionally, LiteRT copies (``files.tflite_fp32``,
``files.tflite_int8``, written by ``training.convert``) and ``MODEL_CARD.md``. Everything that
reads or writes the metadata goes through :func:`read_meta` / :func:`write_metadata` /
:func:`update_metadata` here; every Keras load goes through :func:`load_keras`, which passes
the custom objects explicitly. Files are written to a temporary name and renamed, so a reader
sees the old file or the new one, never a partial one.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from core.errors import ModelError
from core.preprocess import INPUT_SIZE, LABELS

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
KERAS_FILE = "model.keras"
CARD_FILE = "MODEL_CARD.md"
#: ``quantize`` mode -> (file name, metadata ``files`` key, runtime backend name).
LITERT_ARTIFACTS: dict[str, tuple[str, str, str]] = {
    "none": ("model_fp32.tflite", "tflite_fp32", "litert-fp32"),
    "dynamic": ("model_int8.tflite", "tflite_int8", "litert-int8"),
}
#: LiteRT variant -> metadata ``files`` key.
LITERT_FILES = {"int8": "tflite_int8", "fp32": "tflite_fp32"}

_TRAIN_HINT = ("train one with `python run.py train --data PATH` or pass --model PATH to an "
               "exported model folder")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _json_default(o: Any) -> Any:
    """NumPy scalars and arrays (and anything else, as text) for ``json.dumps``."""
    return o.tolist() if hasattr(o, "tolist") else str(o)


def metadata_text(meta: dict) -> str:
    """``metadata.json`` as written: indented JSON, NumPy values as plain numbers."""
    return json.dumps(meta, indent=2, default=_json_default) + "\n"


@dataclass(frozen=True)
class ModelMeta:
    """A validated ``metadata.json``: typed access to what its readers need, ``raw`` for the rest.

    Validation: JSON object, the interface's seven labels in order, input size
    ``INPUT_SIZE``.
    """

    folder: Path
    raw: dict

    @property
    def name(self) -> str:
        return str(self.raw.get("name", self.folder.name))

    @property
    def files(self) -> dict:
        files = self.raw.get("files")
        return files if isinstance(files, dict) else {}

    def path(self, key: str, default: str | None = None) -> Path | None:
        """The file listed under ``files[key]`` (or ``default``), or None when not listed."""
        name = self.files.get(key, default)
        return self.folder / str(name) if name else None

    @property
    def keras_path(self) -> Path:
        return self.folder / str(self.files.get("keras", KERAS_FILE))

    def accuracy(self, backend: str) -> float | None:
        """The recorded test accuracy of ``backend`` (``metrics.backends``), if any."""
        m = ((self.raw.get("metrics") or {}).get("backends") or {}).get(backend) or {}
        acc = m.get("accuracy")
        return float(acc) if isinstance(acc, (int, float)) else None

    @property
    def split_seed(self) -> int | None:
        """The data-split seed the model was trained and validated with (``dataset.seed``)."""
        try:
            return int(self.raw["dataset"]["seed"])
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def val_keep(self) -> float:
        """The share of the validation split kept for validation (``dataset.val_keep``; the
        rest trained the model, see ``run.py train --val-keep``); 1 when not recorded."""
        try:
            v = float(self.raw["dataset"].get("val_keep", 1.0))
        except (KeyError, TypeError, ValueError, AttributeError):
            return 1.0
        return v if 0.0 < v <= 1.0 else 1.0

    @property
    def train_minutes(self) -> float | None:
        """Training time recorded at export (an ensemble's: the sum of its members')."""
        v = self.raw.get("train_minutes")
        return float(v) if isinstance(v, (int, float)) else None

    @property
    def test_time_augmentation(self) -> str | None:
        return (self.raw.get("preprocessing") or {}).get("test_time_augmentation")


def _validate(path: Path, meta: Any) -> dict:
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: metadata is not a JSON object")
    labels = tuple(meta.get("labels", ()))
    if labels != LABELS:
        raise ModelError(f"{path}: labels {labels} differ from the interface's {LABELS}")
    try:
        size = int((meta.get("input") or {}).get("size", INPUT_SIZE))
    except (TypeError, ValueError):
        raise ModelError(f"{path}: input size is not a number") from None
    if size != INPUT_SIZE:
        raise ModelError(f"{path}: input size {size} but preprocessing makes {INPUT_SIZE}")
    return meta


def read_meta(model_dir: str | os.PathLike, validate: bool = True) -> ModelMeta:
    """The metadata of a model folder (validated unless ``validate`` is false); ModelError
    with a clear message when it is missing, unreadable or invalid."""
    d = Path(model_dir)
    path = d / METADATA_FILE
    if not path.is_file():
        raise ModelError(f"no model at {d} (missing {METADATA_FILE}); {_TRAIN_HINT}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable metadata ({exc})") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: metadata is not a JSON object")
    return ModelMeta(d, _validate(path, raw) if validate else raw)


def read_metadata(model_dir: str | os.PathLike) -> dict:
    """:func:`read_meta` as the plain dict."""
    return read_meta(model_dir).raw


def write_metadata(model_dir: str | os.PathLike, meta: dict) -> None:
    """Validate ``meta`` and replace the folder's ``metadata.json`` atomically."""
    path = Path(model_dir) / METADATA_FILE
    write_atomic(path, metadata_text(_validate(path, meta)).encode("utf-8"))


def update_metadata(model_dir: str | os.PathLike, change: Callable[[dict], None]) -> dict:
    """Read, ``change(meta)`` in place, write back; returns the new metadata."""
    meta = read_metadata(model_dir)
    change(meta)
    write_metadata(model_dir, meta)
    return meta


def listed_files(model_dir: str | os.PathLike) -> set[str]:
    """Plain file names an existing ``metadata.json`` lists under ``files`` (none if unreadable)."""
    try:
        files = read_meta(model_dir).files
    except ModelError:
        return set()
    return {str(v) for v in files.values() if isinstance(v, str) and Path(v).name == v}


def keras_path(model: str | os.PathLike) -> Path:
    """The Keras file of a model folder (``files.keras``) or a ``.keras`` file itself."""
    p = Path(model)
    if p.suffix == ".keras":
        if not p.is_file():
            raise ModelError(f"{p}: model file missing")
        return p
    if p.is_file():
        raise ModelError(f"{p}: not a model folder (with {METADATA_FILE}) or a .keras file")
    path = read_meta(p).keras_path
    if not path.is_file():
        raise ModelError(f"{path}: model file missing; {_TRAIN_HINT}")
    return path


def load_keras(model: str | os.PathLike, compile: bool = False) -> Any:
    """Load a model folder's Keras model (or a ``.keras`` file, e.g. a training checkpoint)
    with the custom objects passed explicitly, so it loads in any fresh process."""
    path = keras_path(model)
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" about such a file
        raise ModelError(f"{path}: cannot read the model file: it is corrupt or not a Keras "
                         ".keras file")
    import keras

    from core.layers import CUSTOM_OBJECTS

    try:
        return keras.models.load_model(path, compile=compile, custom_objects=CUSTOM_OBJECTS)
    except Exception as exc:  # Keras raises many types for a bad file
        raise ModelError(f"{path}: cannot load model ({exc})") from exc


def litert_path(model_dir: str | os.PathLike, variant: str, meta: ModelMeta | None = None
                ) -> Path:
    """The LiteRT artifact of ``variant`` (``int8``/``fp32``) listed in the folder's metadata;
    ModelError, with the command that makes it, when it is not listed or missing."""
    if variant not in LITERT_FILES:
        raise ModelError(f"unknown LiteRT variant {variant!r}; choose from "
                         + ", ".join(sorted(LITERT_FILES)))
    meta = read_meta(model_dir) if meta is None else meta
    path = meta.path(LITERT_FILES[variant])
    if path is None or not path.is_file():
        what = f"{path} is missing" if path else f"metadata lists no {LITERT_FILES[variant]} file"
        raise ModelError(f"{model_dir}: no LiteRT {variant} model ({what}); create it with "
                         f"`python run.py convert --model {model_dir}`")
    return path


def has_litert(model_dir: str | os.PathLike, variant: str, meta: ModelMeta | None = None) -> bool:
    try:
        litert_path(model_dir, variant, meta)
    except ModelError:
        return False
    return True


def recorded_val_keep(model: str | os.PathLike) -> float:
    """The share of the validation split a trained model kept for validation (1 when not
    recorded): evaluating its ``val`` must leave out the images it trained on. ``model`` as
    for :func:`recorded_split_seed`."""
    path = Path(model)
    folder = path if path.is_dir() else path.parent
    try:
        return read_meta(folder, validate=False).val_keep
    except ModelError:
        pass
    try:
        v = float(json.loads((folder / "split.json").read_text(encoding="utf-8"))["val_keep"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1.0
    return v if 0.0 < v <= 1.0 else 1.0


def recorded_split_seed(model: str | os.PathLike) -> int | None:
    """The data-split seed recorded for a trained model, or None.

    ``model`` is an exported folder (its ``metadata.json`` ``dataset.seed``), a training run's
    folder (its ``split.json``), or a file in either. ``val`` and ``train`` depend on the seed:
    evaluating a model's ``val`` with another one mixes in images it was trained on.
    """
    path = Path(model)
    folder = path if path.is_dir() else path.parent
    try:
        seed = read_meta(folder, validate=False).split_seed
    except ModelError:
        seed = None
    if seed is not None:
        return seed
    try:
        return int(json.loads((folder / "split.json").read_text(encoding="utf-8"))["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
