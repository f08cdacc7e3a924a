"""Convert an exported Keras model to LiteRT (TFLite) artifacts for fast CPU inference.

``convert_model_dir(models/default)`` writes, next to ``model.keras``:

- ``model_fp32.tflite`` (``quantize="none"``): the same float32 graph; matches Keras to ~1e-6.
- ``model_int8.tflite`` (``quantize="dynamic"``): dynamic-range quantization, int8 weights
  with float activations (no representative dataset needed); several times faster on CPU.

and lists them in ``metadata.json`` ``files`` (``tflite_fp32``, ``tflite_int8``), leaving every
other key as it was. Given an ``evaluate`` function it also records each backend's measured
accuracy under ``metrics.backends``, which ``core.runtimes.choose_backend`` reads to decide
whether int8 is accurate enough. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from core.model_dir import (
    LITERT_ARTIFACTS,
    keras_path,
    load_keras,
    read_meta,
    update_metadata,
    write_atomic,
)

log = logging.getLogger(__name__)

#: ``quantize`` mode -> (file name, metadata ``files`` key, runtime backend name).
ARTIFACTS = LITERT_ARTIFACTS
#: Report keys copied into ``metrics.backends.<backend>``.
REPORT_KEYS = ("accuracy", "macro_f1", "n", "split")


def _load_keras(model: Any) -> Any:
    return load_keras(model) if isinstance(model, (str, os.PathLike)) else model


def export_tflite(model: Any, out_path: str | os.PathLike, quantize: str = "none") -> Path:
    """Convert a Keras model (or the path of a ``.keras`` file) to a ``.tflite`` file.

    ``quantize``: ``"none"`` (float32) or ``"dynamic"`` (dynamic-range int8 weights).
    The batch dimension stays dynamic, so the runtime can resize it. Returns ``out_path``.
    """
    if quantize not in ARTIFACTS:
        raise ValueError(f"quantize must be one of {', '.join(ARTIFACTS)}, not {quantize!r}")
    import tensorflow as tf

    model = _load_keras(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    # Keras 3 prints the whole SavedModel signature while exporting; keep it out of our output.
    noise = io.StringIO()
    with contextlib.redirect_stdout(noise):
        data = converter.convert()
    log.debug("converter output: %s", noise.getvalue())
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, data)
    log.info("wrote %s (%s, %.1f KiB)", out, quantize, len(data) / 1024)
    return out


def convert_model_dir(model_dir: str | os.PathLike,
                      quantize_modes: Sequence[str] = ("none", "dynamic"),
                      evaluate: Callable[[str], Mapping[str, Any]] | None = None) -> dict:
    """Write the LiteRT artifacts of an exported model folder and list them in its metadata.

    ``evaluate(backend)``, when given, is called after the files are listed with ``"keras"``
    and each new backend name (``"litert-fp32"``, ``"litert-int8"``) and returns an evaluation
    report (``accuracy``, ``macro_f1``, ``n``, ``split``); those keys are recorded under
    ``metadata["metrics"]["backends"][backend]``. Returns the new metadata.
    """
    d = Path(model_dir)
    read_meta(d)
    for q in quantize_modes:
        if q not in ARTIFACTS:
            raise ValueError(f"quantize must be one of {', '.join(ARTIFACTS)}, not {q!r}")
    model = load_keras(keras_path(d))
    written = {}
    for q in quantize_modes:
        fname, key, _ = ARTIFACTS[q]
        export_tflite(model, d / fname, q)
        written[key] = fname
    meta = update_metadata(d, lambda m: m.setdefault("files", {}).update(written))
    if evaluate is None:
        return meta
    return record_metrics(d, evaluate, ["keras"] + [ARTIFACTS[q][2] for q in quantize_modes])


def record_metrics(model_dir: str | os.PathLike, evaluate: Callable[[str], Mapping[str, Any]],
                   backends: Sequence[str]) -> dict:
    """Call ``evaluate(backend)`` for each backend name and record the reports' ``accuracy``,
    ``macro_f1``, ``n`` and ``split`` under ``metadata["metrics"]["backends"][backend]``
    (other metrics untouched). Returns the new metadata."""
    d = Path(model_dir)
    results = {}
    for backend in backends:
        report = evaluate(backend)
        results[backend] = {k: report[k] for k in REPORT_KEYS if k in report}
        log.info("%s: %s accuracy %.4f", d, backend, float(report.get("accuracy", float("nan"))))
    def change(meta: dict) -> None:
        if not isinstance(meta.get("metrics"), dict):
            meta["metrics"] = {}
        meta["metrics"].setdefault("backends", {}).update(results)

    return update_metadata(d, change)
