"""Expression classifiers behind one small interface (with ``core.layers``, the only core module
importing TensorFlow or Keras, and only when a backend is loaded).

A classifier maps preprocessed face crops ``(N, S, S, 1)`` float32 (0..255) to ``(N, 7)``
probabilities in ``LABELS`` order. Backends load the same exported model folder
(``metadata.json`` + model files, see ``training/export.py`` and ``training/convert.py``):

- ``keras``: the Keras model, XLA-compiled (the reference; the choice on a GPU).
- ``litert-fp32`` / ``litert-int8``: the LiteRT (TFLite) artifacts that ``python run.py convert``
  writes next to ``model.keras``; int8 is dynamic-range quantized (int8 weights, float
  activations) and is the fastest CPU runtime.

``choose_backend("auto")`` picks among them (see its docstring); ``/healthz`` reports the
result as ``backend`` and ``device``.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import threading
from functools import partial
from typing import Callable, Protocol

import numpy as np

from core.errors import ModelError
from core.litert import make_interpreter
from core.model_dir import has_litert, litert_path, load_keras, read_meta
from core.preprocess import INPUT_SIZE, LABELS

log = logging.getLogger(__name__)

#: Batch sizes compiled ahead; other sizes are padded up to the next one (XLA compiles per shape).
BUCKETS = (1, 2, 4, 8, 16, 32, 64)
#: Largest batch handed to a runtime in one call; bigger inputs are split (bounded memory).
MAX_CHUNK = BUCKETS[-1]
#: ``auto`` takes int8 only if its recorded accuracy is at most this far below fp32's.
INT8_MAX_ACCURACY_DROP = 0.005


class Classifier(Protocol):
    """What the server needs of a model."""

    name: str
    backend: str
    device: str
    labels: tuple[str, ...]

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        """``(N, S, S, 1)`` float32 0..255 -> ``(N, len(labels))`` probabilities."""
        ...


def _bucket(n: int) -> int:
    for b in BUCKETS:
        if n <= b:
            return b
    return n


def _chunked(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """``fn`` over ``x`` in chunks of at most ``MAX_CHUNK`` rows (``x`` is not empty)."""
    if len(x) <= MAX_CHUNK:
        return fn(x)
    return np.concatenate([fn(x[i : i + MAX_CHUNK]) for i in range(0, len(x), MAX_CHUNK)])


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


def has_gpu() -> bool:
    """True when TensorFlow sees a GPU. Without a GPU driver device node TF is not imported
    (importing it only to find no GPU costs seconds and hundreds of MB)."""
    if not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd")):
        return False
    return bool(gpu_devices())


class KerasClassifier:
    """The reference backend: the Keras model, XLA-compiled, padded to fixed batch buckets."""

    backend = "keras"

    def __init__(self, model_dir: str | os.PathLike, jit_compile: bool = True,
                 max_batch: int = 1, warm_all: bool | None = None,
                 device: str | None = None) -> None:
        import tensorflow as tf

        meta = read_meta(model_dir)
        self.meta = meta.raw
        self.name = meta.name
        self.labels = LABELS
        gpus = gpu_devices()
        # ``device`` pins this copy of the model (one copy per GPU, see load_replicas).
        self.device = device or ("GPU:0" if gpus else "CPU")

        def on_device():
            return tf.device(f"/{device}") if device else contextlib.nullcontext()

        with on_device():
            self.model = load_keras(model_dir)

        def run(x):
            with on_device():
                return self.model(x, training=False)

        self._fn = tf.function(run, jit_compile=jit_compile, reduce_retracing=False)
        self._lock = threading.Lock()
        # Warm up. XLA compiles once per batch bucket (seconds each); on a GPU every bucket the
        # batcher can hit is compiled now, so no live frame waits for a compilation.
        if warm_all is None:
            warm_all = bool(gpus)
        self.warmed = [b for b in BUCKETS if b <= _bucket(max(1, max_batch))] if warm_all else [1]
        for b in self.warmed:
            self.predict_batch(np.zeros((b, INPUT_SIZE, INPUT_SIZE, 1), np.float32))

    def _predict(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        b = _bucket(n)
        if b != n:
            x = np.concatenate([x, np.zeros((b - n,) + x.shape[1:], x.dtype)])
        with self._lock:
            y = self._fn(np.asarray(x, np.float32))
        return np.asarray(y)[:n]

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, len(LABELS)), np.float32)
        return _chunked(self._predict, x)


class LiteRTClassifier:
    """LiteRT (TFLite) runtime on the CPU, XNNPACK with ``threads`` threads.

    One interpreter, resized to each call's batch size (no padding: a resize to a size seen
    before costs ~0.1 ms; growing the arena happens once per new largest size). The interpreter
    is not thread-safe, so calls are serialised by a lock; the server calls it from its one
    inference thread anyway.
    """

    def __init__(self, model_dir: str | os.PathLike, variant: str = "int8",
                 threads: int | None = None) -> None:
        meta = read_meta(model_dir)
        path = litert_path(model_dir, variant, meta)
        self.meta = meta.raw
        self.name = meta.name
        self.labels = LABELS
        self.variant = variant
        self.backend = f"litert-{variant}"
        self.device = "CPU"
        self.threads = max(1, int(threads or os.cpu_count() or 1))
        self.path = path
        try:
            self._it = make_interpreter(path, self.threads)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: cannot load LiteRT model ({exc})") from exc
        inp = self._it.get_input_details()[0]
        out = self._it.get_output_details()[0]
        shape = tuple(int(v) for v in inp["shape"][1:])
        if shape != (INPUT_SIZE, INPUT_SIZE, 1) or int(out["shape"][-1]) != len(LABELS):
            raise ModelError(f"{path}: input {shape} / output {tuple(out['shape'])} do not match "
                             f"({INPUT_SIZE}, {INPUT_SIZE}, 1) -> {len(LABELS)} classes")
        self._in, self._out = inp["index"], out["index"]
        self._n = 0  # batch size the interpreter is allocated for
        self._lock = threading.Lock()
        # Warm up: allocate at the largest chunk once, then at batch 1.
        for n in (MAX_CHUNK, 1):
            self.predict_batch(np.zeros((n, INPUT_SIZE, INPUT_SIZE, 1), np.float32))

    def _predict(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        x = np.ascontiguousarray(x, np.float32)
        with self._lock:
            if n != self._n:
                self._it.resize_tensor_input(self._in, [n, INPUT_SIZE, INPUT_SIZE, 1])
                self._it.allocate_tensors()
                self._n = n
            self._it.set_tensor(self._in, x)
            self._it.invoke()
            return self._it.get_tensor(self._out)  # a copy

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, len(LABELS)), np.float32)
        return _chunked(self._predict, x)


BACKENDS: dict[str, Callable[..., Classifier]] = {
    "keras": KerasClassifier,
    "litert-int8": partial(LiteRTClassifier, variant="int8"),
    "litert-fp32": partial(LiteRTClassifier, variant="fp32"),
}


def choose_backend(model_dir: str | os.PathLike, requested: str = "auto",
                   gpu: bool | None = None) -> str:
    """Resolve ``auto``: a GPU means TensorFlow on the GPU; otherwise the fastest CPU runtime
    whose artifact the model folder holds; Keras as the fallback.

    On the CPU: ``litert-int8`` when its artifact is listed and its recorded test accuracy
    (``metrics.backends``, written by ``run.py convert --data``) is within
    ``INT8_MAX_ACCURACY_DROP`` of fp32's (with no accuracy recorded it is still preferred, with a
    log line saying so); else ``litert-fp32``; else ``keras``. ``gpu`` overrides the GPU probe.
    """
    if requested != "auto":
        if requested not in BACKENDS:
            raise ModelError(f"unknown backend {requested!r}; choose from auto, "
                             + ", ".join(sorted(BACKENDS)))
        return requested
    if gpu is None:
        gpu = has_gpu()
    if gpu:
        return "keras"
    meta = read_meta(model_dir)
    fp32 = has_litert(model_dir, "fp32", meta)
    if has_litert(model_dir, "int8", meta):
        acc8, acc32 = meta.accuracy("litert-int8"), meta.accuracy("litert-fp32")
        if acc32 is None:
            acc32 = meta.accuracy("keras")
        if acc8 is None or acc32 is None:
            log.info("%s: int8 accuracy not recorded (unverified); using it anyway "
                     "(`python run.py convert --model %s --data PATH` measures it)",
                     model_dir, model_dir)
            return "litert-int8"
        if acc8 >= acc32 - INT8_MAX_ACCURACY_DROP:
            return "litert-int8"
        log.warning("%s: int8 test accuracy %.4f is more than %.1f points below fp32's %.4f; "
                    "not using it", model_dir, acc8, INT8_MAX_ACCURACY_DROP * 100, acc32)
    if fp32:
        return "litert-fp32"
    return "keras"


def load_classifier(model_dir: str | os.PathLike, backend: str = "auto",
                    threads: int | None = None, max_batch: int = 1) -> Classifier:
    """Load the model folder with the chosen backend (``threads``: LiteRT runtime threads,
    default one per core; ``max_batch``: the largest batch the caller will send, which the
    Keras backend pre-compiles on a GPU)."""
    read_meta(model_dir)
    name = choose_backend(model_dir, backend)
    log.info("loading %s with backend %s", model_dir, name)
    if name.startswith("litert-"):
        return BACKENDS[name](model_dir, threads=threads)
    return BACKENDS[name](model_dir, max_batch=max_batch)


def load_replicas(model_dir: str | os.PathLike, backend: str = "auto",
                  threads: int | None = None, max_batch: int = 1,
                  gpus: int | None = None) -> list[Classifier]:
    """The classifiers the server's inference workers use: one per GPU when the Keras backend
    runs on a machine with several GPUs (each copy pinned to its GPU), else just one
    (:func:`load_classifier`). ``gpus`` overrides the GPU count probe."""
    name = choose_backend(model_dir, backend)
    n = len(gpu_devices()) if gpus is None and name == "keras" else (gpus or 0)
    if name != "keras" or n < 2:
        return [load_classifier(model_dir, name, threads=threads, max_batch=max_batch)]
    log.info("loading %s with backend keras on %d GPUs", model_dir, n)
    return [KerasClassifier(model_dir, max_batch=max_batch, device=f"GPU:{i}")
            for i in range(n)]
