"""Evaluation: predict, metrics (the ``evaluate --json`` object), report files and plots.

Named steps: :func:`predict_probs` -> :func:`metrics_report` (= :func:`evaluate_model` for a
split) -> :func:`save_report`. :func:`evaluate_path` does it all for a dataset on disk.
Imports only NumPy and the shared modules at import time; Keras, scikit-learn and matplotlib are
imported where they are used.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ModelError
from core.model_dir import load_keras, read_metadata
from core.preprocess import INPUT_SIZE, LABELS
from training.data import DatasetError, Split

log = logging.getLogger(__name__)

#: A Keras model (anything with ``predict_on_batch``) or ``fn(float32 (N,S,S,1)) -> (N, 7)``.
Predictor = Any
SPLITS = ("test", "val", "train", "all")


# --------------------------------------------------------------------------- predict

class OutputShapeError(ModelError, ValueError):
    """The model does not return one probability per label (e.g. another number of classes)."""


def predict_probs(model_or_fn: Predictor, x_uint8: np.ndarray, batch_size: int = 256
                  ) -> np.ndarray:
    """Class probabilities ``(N, 7)`` float32 for uint8 crops ``(N, S, S)``.

    The model sees float32 ``(n, S, S, 1)`` pixels in 0..255 (like
    :func:`core.preprocess.to_batch`), ``batch_size`` at a time. A Keras model is run with
    ``predict_on_batch`` and its last batch is zero-padded to the same size, so it is traced
    (and XLA-compiled) for one shape only; a plain callable gets the batches as they are.
    """
    x = np.asarray(x_uint8)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(f"expected crops of shape (N, S, S), got {x.shape}")
    n = len(x)
    k = len(LABELS)
    if n == 0:
        return np.zeros((0, k), np.float32)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    keras_like = hasattr(model_or_fn, "predict_on_batch")
    predict = model_or_fn.predict_on_batch if keras_like else model_or_fn
    bs = min(batch_size, n)
    out = np.empty((n, k), np.float32)
    for i in range(0, n, bs):
        chunk = x[i : i + bs]
        m = len(chunk)
        if keras_like and m < bs:
            batch = np.zeros((bs,) + chunk.shape[1:] + (1,), np.float32)
            batch[:m, ..., 0] = chunk
        else:
            batch = chunk.astype(np.float32)[..., None]
        probs = np.asarray(predict(batch), np.float32)
        if probs.ndim != 2 or probs.shape[1] != k or len(probs) < m:
            raise OutputShapeError(f"the model returned {probs.shape} for a batch of "
                                   f"{len(batch)}; expected ({len(batch)}, {k}): one "
                                   f"probability for each of the labels {', '.join(LABELS)}")
        out[i : i + m] = probs[:m]
    return out


# --------------------------------------------------------------------------- metrics

def metrics_report(y_true: np.ndarray, y_pred: np.ndarray, no_face: int = 0) -> dict:
    """The ``evaluate --json`` object for predictions on the images where a face was found.

    ``no_face`` more images had no face: they count in ``n`` and as wrong in ``accuracy``.
    ``per_class``, ``confusion`` (rows: true label, columns: predicted, order ``labels``) and
    ``macro_f1`` (sklearn's, over the classes that occur) cover the images with a face only,
    so the confusion matrix sums to ``n - no_face``.
    """
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    y_true = np.asarray(y_true, np.int64).ravel()
    y_pred = np.asarray(y_pred, np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    if no_face < 0:
        raise ValueError(f"no_face must be >= 0, not {no_face}")
    k = len(LABELS)
    idx = list(range(k))
    n = int(len(y_true) + no_face)
    if len(y_true):
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=idx,
                                                     zero_division=0)
        cm = confusion_matrix(y_true, y_pred, labels=idx)
        macro_f1 = float(f1_score(y_true, y_pred, average="macro", zero_division=0))
    else:
        p = r = f = np.zeros(k)
        s = np.zeros(k, np.int64)
        cm = np.zeros((k, k), np.int64)
        macro_f1 = 0.0
    return {
        "n": n,
        "accuracy": float(np.sum(y_true == y_pred) / n) if n else 0.0,
        "macro_f1": macro_f1,
        "per_class": {label: {"precision": float(p[i]), "recall": float(r[i]),
                              "f1": float(f[i]), "support": int(s[i])}
                      for i, label in enumerate(LABELS)},
        "confusion": [[int(v) for v in row] for row in cm],
        "labels": list(LABELS),
        "no_face": int(no_face),
    }


def evaluate_model(model_or_fn: Predictor, split: Split) -> dict:
    """Predict ``split`` and return :func:`metrics_report` (its ``no_face`` count included)."""
    probs = predict_probs(model_or_fn, split.x)
    return metrics_report(split.y, probs.argmax(axis=1), no_face=split.no_face)


# --------------------------------------------------------------------------- report files

def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _plot_confusion(report: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    labels = report.get("labels", list(LABELS))
    cm = np.asarray(report["confusion"], np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(norm.shape[0]):
        for j in range(norm.shape[1]):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    acc, f1 = report.get("accuracy", 0.0), report.get("macro_f1", 0.0)
    ax.set_title(f"confusion (row-normalized), n={report.get('n')}, acc={acc:.3f}, "
                 f"macro-F1={f1:.3f}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.savefig(path, dpi=110)


def _read_history(path: Path) -> dict[str, list[float]]:
    cols: dict[str, list[float]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                try:
                    cols.setdefault(key, []).append(float(value))
                except (TypeError, ValueError):
                    cols.setdefault(key, []).append(float("nan"))
    return cols


def _plot_curves(history: dict[str, list[float]], path: Path) -> bool:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    n = max((len(v) for v in history.values()), default=0)
    if n == 0:
        return False
    epochs = [e + 1 for e in history.get("epoch", list(range(n)))]
    fig = Figure(figsize=(10, 4), layout="constrained")
    for i, metric in enumerate(("accuracy", "loss")):
        ax = fig.add_subplot(1, 2, i + 1)
        for key, name in ((metric, "train"), (f"val_{metric}", "val")):
            if key in history:
                ax.plot(epochs, history[key], marker=".", label=name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=110)
    return True


def save_report(report: dict, out_dir: Path, history_csv: Path | None = None) -> None:
    """Write ``report.json``, ``confusion.png`` and, from a Keras CSVLogger file, ``curves.png``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist")
                      else str(o))
    _write_text(out_dir / "report.json", text + "\n")
    _plot_confusion(report, out_dir / "confusion.png")
    if history_csv is not None and Path(history_csv).is_file():
        if not _plot_curves(_read_history(Path(history_csv)), out_dir / "curves.png"):
            log.warning("%s has no epochs; no curves.png", history_csv)


# --------------------------------------------------------------------------- models and datasets

def load_keras_model_dir(model_dir: str | os.PathLike) -> tuple[Any, dict]:
    """Load an exported model folder (``metadata.json`` + its Keras file), or a ``.keras`` file.

    Returns ``(keras.Model, metadata)`` (metadata is ``{}`` for a bare ``.keras`` file);
    ModelError when there is no usable model.
    """
    p = Path(model_dir)
    meta = {} if p.suffix == ".keras" else read_metadata(p)
    return load_keras(p), meta


def _concat(splits: list[Split]) -> Split:
    splits = [s for s in splits if s is not None]
    if not splits:
        return Split(np.zeros((0, INPUT_SIZE, INPUT_SIZE), np.uint8), np.zeros(0, np.int64))
    return Split(np.concatenate([s.x for s in splits]), np.concatenate([s.y for s in splits]),
                 sum(s.no_face for s in splits))


def select_split(groups: dict[str | None, Split], split: str, seed: int = 1234,
                 val_keep: float = 1.0) -> tuple[Split, str]:
    """The images that ``split`` names in a dataset read by :func:`training.data.read_samples`.

    - ``all``: every image (and every no-face image) of every split folder.
    - with a ``train`` folder: the splits training makes (:func:`training.data.make_splits`,
      same seed and ``val_keep``), so ``test`` is exactly what a training run on this data
      reported.
    - without a ``train`` folder the dataset is taken as evaluation data: ``test`` is its
      ``test`` folder if it has one, else *all* its images (e.g. a plain ``<class>/<image>``
      folder); ``val`` is its validation folder; ``train`` does not exist.

    Returns the split and a short description of what was chosen.
    """
    from training.data import make_splits

    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if split == "all":
        return _concat(list(groups.values())), "all"
    if "train" in groups:
        ds = make_splits(groups, seed, val_keep=val_keep)
        return getattr(ds, split), f"{split} ({ds.info['split_rule']})"
    if split == "test":
        if "test" in groups:
            return groups["test"], "test (the dataset's test folder)"
        return _concat(list(groups.values())), "all (the dataset has no train split)"
    if split == "val" and "val" in groups:
        return groups["val"], "val (the dataset's validation folder)"
    raise DatasetError(f"the dataset has no train folder, so no {split} split; "
                       f"use --split test or --split all")


def evaluate_path(data: str | os.PathLike, predict_fn: Predictor | str | os.PathLike,
                  split: str = "test", detect: str = "auto", seed: int = 1234,
                  cache_dir: str | os.PathLike | None = None, val_keep: float = 1.0) -> dict:
    """Evaluate on a dataset folder or zip; returns the ``evaluate --json`` object.

    ``predict_fn`` maps float32 ``(N, 48, 48, 1)`` pixels (0..255) to ``(N, 7)`` probabilities;
    it may also be a Keras model, or the path of an exported model folder (loaded with
    :func:`load_keras_model_dir`).
    ``split`` picks ``test``/``val``/``train``/``all`` as :func:`select_split` describes. A
    dataset without a ``train`` folder is taken as evaluation data: ``split="test"`` is its
    ``test`` folder if it has one, else *all* its images (so a plain ``<class>/<image>`` folder
    with no split folders at all is evaluated whole). Images where ``detect`` finds no face
    count as wrong.
    The report also says which images were used (``split``).

    Raises DatasetError for an unusable dataset or an empty split, FileNotFoundError for a
    missing model.
    """
    from training.data import load_groups

    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if isinstance(predict_fn, (str, os.PathLike)):
        predict_fn, _ = load_keras_model_dir(predict_fn)
    groups = load_groups(data, detect, cache_dir)
    chosen, what = select_split(groups, split, seed, val_keep)
    if len(chosen) + chosen.no_face == 0:
        raise DatasetError(f"{data}: no {split} images to evaluate")
    log.info("evaluating %d images (%d without a face) of %s: %s",
             len(chosen) + chosen.no_face, chosen.no_face, data, what)
    report = evaluate_model(predict_fn, chosen)
    report["split"] = what
    return report
