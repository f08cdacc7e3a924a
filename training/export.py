"""Export: ``models/<name>/`` = ``model.keras`` + ``metadata.json`` + ``MODEL_CARD.md``.

``metadata.json`` is what the server loads (schema below, ``format_version`` 1). Every file is
written to a temporary name in the same folder and renamed over the old one, so a reader sees
either the old or the new file, never a partial one, and no older versions pile up.
``metadata.json`` is replaced last.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core import preprocess
from core.model_dir import (
    CARD_FILE,
    FORMAT_VERSION,
    KERAS_FILE,
    METADATA_FILE,
    listed_files,
    metadata_text,
)
from core.preprocess import CONTRAST_PERCENTILES, CROP_MARGIN, INPUT_SIZE, LABELS, MEDIAN_KERNEL

log = logging.getLogger(__name__)

DETECTOR = "blazeface-full-range (live) / blazeface+mtcnn (photos)"


def config_dict(cfg: Any) -> dict:
    """A training config (dataclass, nested dataclasses included, or dict) as a plain dict."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    if isinstance(cfg, dict):
        return json.loads(json.dumps(cfg, default=str))
    return dict(vars(cfg))


def train_command(cfg: Any) -> str:
    """The ``python run.py train ...`` command line that reproduces ``cfg``."""
    c = config_dict(cfg)
    args = ["python", "run.py", "train", "--data", str(c.get("data"))]
    weights = c.get("weights") or "none"
    args += ["--weights", str(weights)]
    for key, flag in (("width", "--width"), ("epochs", "--epochs"),
                      ("batch_size", "--batch-size"), ("lr", "--lr"),
                      ("patience", "--patience"), ("balance", "--balance"),
                      ("class_weight_power", "--class-weight-power"), ("seed", "--seed"),
                      ("detect", "--detect")):
        if c.get(key) is not None:
            args += [flag, str(c[key])]
    if c.get("split_seed") is not None and c.get("split_seed") != c.get("seed"):
        args += ["--split-seed", str(c["split_seed"])]
    if c.get("val_keep", 1.0) != 1.0:
        args += ["--val-keep", str(c["val_keep"])]
    for key, flag in (("max_minutes", "--max-minutes"), ("limit", "--limit")):
        if c.get(key):
            args += [flag, str(c[key])]
    if (c.get("augment") or {}).get("vflip"):
        args.append("--vflip")
    if c.get("jit_compile") is False:
        args.append("--no-jit")
    if c.get("precision") not in (None, "float32"):
        args += ["--precision", str(c["precision"])]
    if c.get("schedule") == "cosine":
        args += ["--schedule", "cosine", "--warmup-epochs", str(c.get("warmup_epochs", 1))]
    elif c.get("lr_patience") is not None:
        args += ["--lr-patience", str(c["lr_patience"])]
    for key, flag in (("label_smoothing", "--label-smoothing"), ("tta_shift", "--tta-shift")):
        if c.get(key):
            args += [flag, str(c[key])]
    for key, flag in (("erase", "--erase"), ("camera", "--camera"), ("mixup", "--mixup"),
                      ("cutmix", "--cutmix")):
        if (c.get("augment") or {}).get(key):
            args += [flag, str(c["augment"][key])]
    if c.get("teacher"):
        args += ["--teacher", str(c["teacher"]), "--teacher-weight", str(c.get("teacher_weight")),
                 "--teacher-temperature", str(c.get("teacher_temperature")),
                 "--teacher-tta-shift", str(c.get("teacher_tta_shift"))]
    if c.get("tta") is False:
        args.append("--no-tta")
    if c.get("init"):
        args += ["--init", str(c["init"])]
    if c.get("name") not in (None, "default"):
        args += ["--name", str(c["name"])]
    return " ".join(shlex.quote(a) for a in args)


def build_metadata(model: Any, name: str, cfg: Any, split_info: dict, report: dict) -> dict:
    """The ``metadata.json`` object (format version 1) for ``model`` trained with ``cfg``."""
    from training.model import tta_name

    training = config_dict(cfg)
    training.pop("cache_dir", None)  # a local path that says nothing about the model
    return {
        "name": name,
        "format_version": FORMAT_VERSION,
        "files": {"keras": KERAS_FILE},
        "labels": list(LABELS),
        "input": {"size": INPUT_SIZE, "channels": 1, "dtype": "float32", "range": [0, 255]},
        "preprocessing": {"grayscale": True, "median_kernel": MEDIAN_KERNEL,
                          "contrast_percentiles": list(CONTRAST_PERCENTILES),
                          "crop_margin": CROP_MARGIN,
                          "crop_shift_y": getattr(preprocess, "CROP_SHIFT_Y", 0.0),
                          "rescale_in_model": True, "detector": DETECTOR,
                          "test_time_augmentation": tta_name(training.get("tta_shift") or 0)
                          if training.get("tta") else None},
        "architecture": {"name": "vgg16", "width": training.get("width"),
                         "weights": report.get("weights", "scratch"),
                         "params": int(model.count_params()),
                         **({"ensemble": report["members"]} if report.get("members") else {})},
        "training": training,
        "dataset": split_info,
        "metrics": {"test": {k: report.get(k) for k in
                             ("accuracy", "macro_f1", "per_class", "confusion", "n")},
                    "val": report.get("val"),
                    "without_tta": report.get("without_tta")},
        "train_minutes": report.get("train_minutes"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _fmt(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else "n/a"


def model_card(meta: dict, report: dict) -> str:
    """A short, factual MODEL_CARD.md: numbers come from ``report`` and ``meta`` only."""
    arch, tr, ds = meta["architecture"], meta["training"], meta.get("dataset") or {}
    source = str(ds.get("source", tr.get("data", "?")))
    is_fer = "fer2013" in source.lower()
    if arch["weights"] == "imagenet":
        how = (f"Keras VGG16 on ImageNet weights (gray input repeated to 3 channels), head trained "
               f"with the base frozen for {tr.get('frozen_epochs')} epochs, then the top "
               f"{tr.get('finetune_blocks')} conv blocks fine-tuned")
    else:
        how = f"VGG16 (13 conv layers) with BatchNorm, trained from scratch, width x{arch['width']}"
        if arch.get("ensemble"):
            how = (f"An ensemble of {len(arch['ensemble'])} VGG16 networks "
                   f"(13 conv layers, BatchNorm, from scratch, width x{arch['width']}) whose "
                   "probabilities are averaged")
        elif tr.get("init"):
            how += f" (this run started from the weights of `{tr['init']}`)"
    lines = [
        f"# Model card: `{meta['name']}`",
        "",
        "## Model",
        "",
        f"- {how}; {arch['params']:,} parameters.",
        f"- Input: one {INPUT_SIZE}x{INPUT_SIZE} grayscale face crop, float32 pixels 0..255 "
        "(rescaling is inside the model); crops come from the shared `core/preprocess.py` "
        f"(BlazeFace boxes in short-range framing, {int(CROP_MARGIN * 100)}% margin, "
        f"{MEDIAN_KERNEL}x{MEDIAN_KERNEL} median filter, contrast stretched between its "
        f"{CONTRAST_PERCENTILES[0]:g}% and {CONTRAST_PERCENTILES[1]:g}% percentiles).",
        f"- Output: probabilities of {', '.join(LABELS)}"
        + ((", averaged over the face and its mirror image"
            + (f", each also shifted {tr['tta_shift']} pixels left, right, up and down (10 views"
               if tr.get("tta_shift") else " (2 views")
            + "; test-time augmentation, inside the saved model).") if tr.get("tta") else "."),
        f"- Files: `{KERAS_FILE}` (Keras 3), `{METADATA_FILE}`. Created {meta['created']}.",
        "",
        "## Intended use",
        "",
        "A real-time webcam demo of facial-expression recognition (the FaceDApps server) and "
        "research or teaching. It is **not** for decisions about people (hiring, education, "
        "health, security, policing): it labels the visible expression of a face, which is not "
        "a person's emotion, and its errors differ between classes and groups of people.",
        "",
        "## Data",
        "",
        f"- Source: `{source}`"
        + (" (FER2013, Goodfellow et al., ICML 2013 representation-learning challenge)."
           if is_fer else "."),
        f"- Splits: {ds.get('split_rule', 'n/a')} (seed {ds.get('seed', 'n/a')}).",
    ]
    if ds.get("no_face"):
        lines.append(f"- Images where no face was found (left out): {ds['no_face']}.")
    counts = ds.get("counts") or {}
    if counts:
        lines += ["", "| split | " + " | ".join(LABELS) + " | total |",
                  "|---|" + "---:|" * (len(LABELS) + 1)]
        for split, c in counts.items():
            lines.append(f"| {split} | " + " | ".join(str(c.get(lb, 0)) for lb in LABELS)
                         + f" | {sum(c.values())} |")
    val = report.get("val") or {}
    lines += [
        "",
        "## Metrics",
        "",
        "| split | n | accuracy | macro-F1 |",
        "|---|---:|---:|---:|",
        f"| test | {report.get('n', 'n/a')} | {_fmt(report.get('accuracy'))} | "
        f"{_fmt(report.get('macro_f1'))} |",
    ]
    if val:
        lines.append(f"| val | {val.get('n', 'n/a')} | {_fmt(val.get('accuracy'))} | "
                     f"{_fmt(val.get('macro_f1'))} |")
    plain = report.get("without_tta") or {}
    if plain:
        pv = plain.get("val") or {}
        lines.append(f"\nWithout the test-time averaging: test accuracy "
                     f"{_fmt(plain.get('accuracy'))}, macro-F1 {_fmt(plain.get('macro_f1'))}; "
                     f"val accuracy {_fmt(pv.get('accuracy'))}, macro-F1 "
                     f"{_fmt(pv.get('macro_f1'))}.")
    lines += ["", "Per class on the test split:", "",
              "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for label in LABELS:
        m = (report.get("per_class") or {}).get(label, {})
        lines.append(f"| {label} | {_fmt(m.get('precision'))} | {_fmt(m.get('recall'))} | "
                     f"{_fmt(m.get('f1'))} | {m.get('support', 'n/a')} |")
    if report.get("no_face"):
        lines.append(f"\n{report['no_face']} test images had no detectable face and count as "
                     "wrong in the accuracy.")
    if report.get("train_minutes") is not None:
        lines.append(f"\nTraining took {report['train_minutes']} minutes.")
    train_counts = counts.get("train") or {}
    total = sum(train_counts.values())
    rare = (f" ({train_counts.get('disgust', 0)} of {total} training images)"
            if total else "")
    lines += [
        "",
        "## Limitations",
        "",
        ("- FER2013 faces were gathered by web image search: the labels are noisy, many "
         "expressions are posed, and age, gender and skin tone are not balanced; accuracy "
         "on other people and cameras may be lower than above."
         if is_fer else
         "- The numbers above hold for this dataset only; accuracy on other people and cameras "
         "may be lower."),
        f"- The model sees {INPUT_SIZE}x{INPUT_SIZE} grayscale crops only: no colour, little "
        "detail, and it expects a roughly frontal face that the detector has found.",
        f"- `disgust` is rare{rare}, so its scores are the least reliable.",
        "- Seven basic-expression labels cannot describe mixed or subtle expressions.",
        "",
        "## Reproduce",
        "",
        "```",
        *([train_command(m.get("training") or {}) for m in arch["ensemble"]]
          + [str(tr.get("ensemble_command", ""))] if arch.get("ensemble")
          else [train_command(tr)]),
        "```",
    ]
    for i, m in enumerate(arch.get("ensemble") or []):
        mt, mv = m.get("test") or {}, m.get("val") or {}
        lines.append(f"{'' if i else chr(10)}- member {i} (`{m.get('source')}`): test accuracy "
                     f"{_fmt(mt.get('accuracy'))}, val {_fmt(mv.get('accuracy'))} (with the "
                     "same test-time averaging).")
    aug = tr.get("augment") or {}
    default_aug = {}
    try:
        from training.augment import AugmentConfig

        default_aug = dataclasses.asdict(AugmentConfig())
    except ImportError:  # pragma: no cover - keras missing
        pass
    changed = {k: v for k, v in aug.items() if k != "vflip" and default_aug.get(k) != v}
    if changed:
        lines.append(f"\nAugmentation differed from the command-line defaults: {changed}.")
    if tr.get("max_minutes"):
        lines.append(f"\nThe run had a time budget of {tr['max_minutes']} minutes, so the "
                     "number of epochs depends on the machine.")
    return "\n".join(lines) + "\n"


def _remove_stale_temps(model_dir: Path) -> None:
    for pattern in (".model.*.tmp.keras", f".{METADATA_FILE}.*.tmp", f".{CARD_FILE}.*.tmp"):
        for p in model_dir.glob(pattern):
            p.unlink(missing_ok=True)


class ExportTargetError(ValueError):
    """The export folder cannot be used: a bad name, a file in the way, or an existing model
    that may not be replaced."""


def export_target(models_dir: str | os.PathLike, name: str, overwrite: bool = False) -> Path:
    """The folder ``models_dir/name`` that an export will write, checked before any work:
    ``name`` must be one plain folder name, ``models_dir`` and the folder must not be files,
    and an existing model there (``model.keras`` or ``metadata.json``) is replaced only with
    ``overwrite``. ExportTargetError otherwise."""
    from training.config import name_problem

    why = name_problem(name)
    if why:
        raise ExportTargetError(f"--name {name!r}: {why}")
    root = Path(models_dir)
    if root.exists() and not root.is_dir():
        raise ExportTargetError(f"--models-dir {root}: is a file, not a folder")
    target = root / name
    if target.exists() and not target.is_dir():
        raise ExportTargetError(f"{target}: is a file, not a model folder")
    if not overwrite and holds_model(target):
        raise ExportTargetError(f"{target} already holds a model: pass --name NEW to export "
                                "under another name, or --overwrite to replace it")
    return target


#: The export name and run folder a command uses when none is given.
DEFAULT_NAME = "default"


def holds_model(folder: Path) -> bool:
    """Whether ``folder`` holds an exported model (``model.keras`` or ``metadata.json``)."""
    return any((folder / f).exists() for f in (KERAS_FILE, METADATA_FILE))


def free_name(models_dir: str | os.PathLike, name: str, overwrite: bool) -> str:
    """``name``, or, when it is the default name, its folder holds a model (the shipped one, on
    a fresh checkout) and ``overwrite`` is off, the first free ``default-2``, ``default-3``, ...
    (said in the log): ``run.py train --data PATH`` keeps working without replacing the shipped
    model. A name given on purpose is left to :func:`export_target`."""
    root = Path(models_dir)
    if name != DEFAULT_NAME or overwrite or not holds_model(root / name):
        return name
    k = 2
    while (root / f"{name}-{k}").exists():
        k += 1
    new = f"{name}-{k}"
    log.warning("%s holds a model: exporting to %s instead (serve it with --model %s; "
                "--overwrite replaces %s)", root / name, root / new, root / new, root / name)
    return new


def export_model(model: Any, model_dir: Path, cfg: Any, split_info: dict, report: dict) -> Path:
    """Write ``model.keras``, ``MODEL_CARD.md`` and ``metadata.json`` into ``model_dir``.

    Older files of the same names are replaced (temp file + rename each); ``metadata.json``
    goes last, so a complete new model is in place when it appears. Artifacts that the old
    metadata listed for the old model (e.g. converted ``.tflite`` files) are deleted after
    that: they no longer match. Returns ``model_dir``.
    """
    import keras

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(model_dir)
    meta = build_metadata(model, model_dir.name, cfg, split_info, report)
    card = model_card(meta, report)
    stale = listed_files(model_dir) - {KERAS_FILE}
    tag = os.getpid()
    tmps = [model_dir / f".model.{tag}.tmp.keras", model_dir / f".{CARD_FILE}.{tag}.tmp",
            model_dir / f".{METADATA_FILE}.{tag}.tmp"]
    try:
        # Inference-only copy: without the optimizer state the file is a third of the size.
        serving = keras.models.clone_model(model)
        serving.set_weights(model.get_weights())
        keras.saving.save_model(serving, tmps[0])
        tmps[1].write_text(card, encoding="utf-8")
        tmps[2].write_text(metadata_text(meta), encoding="utf-8")
        os.replace(tmps[0], model_dir / KERAS_FILE)
        os.replace(tmps[1], model_dir / CARD_FILE)
        os.replace(tmps[2], model_dir / METADATA_FILE)
    finally:
        for t in tmps:
            t.unlink(missing_ok=True)
    for name in sorted(stale):
        (model_dir / name).unlink(missing_ok=True)
        log.info("removed %s/%s: it was made from the previous model", model_dir, name)
    log.info("exported %s (test accuracy %s, macro-F1 %s)", model_dir,
             _fmt(report.get("accuracy")), _fmt(report.get("macro_f1")))
    return model_dir
