"""Expression classifiers behind one small interface; the only server module importing TF.

A classifier maps preprocessed face crops ``(N, S, S, 1)`` float32 (0..255) to ``(N, 7)``
probabilities in ``LABELS`` order. Backends load the same exported model folder
(``metadata.json`` + model files, see ``training/export.py``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from server.errors import ModelError
from training.preprocess import INPUT_SIZE, LABELS

log = logging.getLogger(__name__)

#: Batch sizes compiled ahead; other sizes are padded up to the next one (XLA compiles per shape).
BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Classifier(Protocol):
    """What the server needs of a model."""

    name: str
    backend: str
    device: str
    labels: tuple[str, ...]

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        """``(N, S, S, 1)`` float32 0..255 -> ``(N, len(labels))`` probabilities."""
        ...


def read_metadata(model_dir: str | os.PathLike) -> dict:
    """Metadata of an exported model folder; ModelError with a clear message when unusable."""
    d = Path(model_dir)
    meta_path = d / "metadata.json"
    if not meta_path.exists():
        raise ModelError(
            f"no model at {d} (missing metadata.json). Train one with "
            f"`python run.py train --data PATH` or pass --model PATH to an exported model folder")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{meta_path}: unreadable metadata ({exc})") from exc
    labels = tuple(meta.get("labels", ()))
    if labels != LABELS:
        raise ModelError(f"{meta_path}: labels {labels} differ from the interface's {LABELS}")
    size = int(meta.get("input", {}).get("size", INPUT_SIZE))
    if size != INPUT_SIZE:
        raise ModelError(f"{meta_path}: input size {size} but preprocessing makes {INPUT_SIZE}")
    return meta


def _bucket(n: int) -> int:
    for b in BUCKETS:
        if n <= b:
            return b
    return n


def gpu_devices() -> list:
    """Visible GPUs (TensorFlow), with memory growth enabled so TF does not grab all memory."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for g in gpus:
        try:
            tf.config.experimental.set_memory_growth(g, True)
        except RuntimeError:  # already initialised
            pass
    return gpus


class KerasClassifier:
    """The reference backend: the Keras model, XLA-compiled, padded to fixed batch buckets."""

    backend = "keras"

    def __init__(self, model_dir: str | os.PathLike, jit_compile: bool = True) -> None:
        import keras
        import tensorflow as tf

        meta = read_metadata(model_dir)
        path = Path(model_dir) / meta.get("files", {}).get("keras", "model.keras")
        if not path.exists():
            raise ModelError(f"{path}: model file missing")
        self.meta = meta
        self.name = str(meta.get("name", Path(model_dir).name))
        self.labels = LABELS
        gpus = gpu_devices()
        self.device = "GPU:0" if gpus else "CPU"
        try:
            self.model = keras.models.load_model(path, compile=False)
        except Exception as exc:
            raise ModelError(f"{path}: cannot load model ({exc})") from exc
        self._fn = tf.function(lambda x: self.model(x, training=False), jit_compile=jit_compile,
                               reduce_retracing=False)
        self._lock = threading.Lock()
        self.predict_batch(np.zeros((1, INPUT_SIZE, INPUT_SIZE, 1), np.float32))  # warm up

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if n == 0:
            return np.zeros((0, len(LABELS)), np.float32)
        b = _bucket(n)
        if b != n:
            x = np.concatenate([x, np.zeros((b - n,) + x.shape[1:], x.dtype)])
        with self._lock:
            y = self._fn(np.asarray(x, np.float32))
        return np.asarray(y)[:n]


BACKENDS = {"keras": KerasClassifier}


def choose_backend(model_dir: str | os.PathLike, requested: str = "auto") -> str:
    """Resolve ``auto``: a GPU means TensorFlow on the GPU; otherwise the fastest CPU runtime
    whose artifact the model folder holds; Keras as the fallback."""
    if requested != "auto":
        if requested not in BACKENDS:
            raise ModelError(f"unknown backend {requested!r}; choose from auto, "
                             + ", ".join(sorted(BACKENDS)))
        return requested
    return "keras"


def load_classifier(model_dir: str | os.PathLike, backend: str = "auto") -> Classifier:
    """Load the model folder with the chosen backend."""
    read_metadata(model_dir)
    name = choose_backend(model_dir, backend)
    log.info("loading %s with backend %s", model_dir, name)
    return BACKENDS[name](model_dir)
