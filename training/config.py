"""Training configuration: frozen dataclasses whose fields also define the ``run.py train`` flags.

A field with ``help`` in its metadata (see :func:`flag`) is a command-line flag: ``run.py``
generates the argument from the field (name, default, type, help), so a new training option is
added here, in one place. Booleans that default to true become ``--no-<name>`` flags. No heavy
imports here: ``run.py`` builds its parser from this module without loading Keras.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from typing import Any


def share(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], not {v}")
    return v


def unit_float(text: str) -> float:
    """argparse type: a number in [0, 1)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), not {v}")
    return v


def _number(text: str, kind: type) -> float:
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: "
                                         f"{text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    v = _number(text, float)
    if not v > 0.0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, not {text!r}")
    return v


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    v = _number(text, float)
    if not v >= 0.0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {text!r}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    v = int(_number(text, int))
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, not {text!r}")
    return v


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    v = int(_number(text, int))
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, not {text!r}")
    return v


def seed_int(text: str) -> int:
    """argparse type: a random seed, an integer in [0, 2**32) (what NumPy accepts)."""
    v = int(_number(text, int))
    if not 0 <= v < 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {2**32 - 1}, "
                                         f"not {text!r}")
    return v


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an exported model's folder name under ``--models-dir`` (it
    must be one plain folder name), or None when it can."""
    if not name.strip():
        return "must not be empty"
    if "/" in name or "\\" in name or name in (".", ".."):
        return "must be a plain folder name, without '/', '\\' or '..'"
    return None


def model_name(text: str) -> str:
    """argparse type: an exported model's folder name (see :func:`name_problem`)."""
    why = name_problem(text)
    if why:
        raise argparse.ArgumentTypeError(why if not text.strip() else f"{why}, not {text!r}")
    return text


def flag(default: Any, help: str, **argparse_kwargs: Any) -> Any:
    """A dataclass field that is also a ``run.py train`` flag (``choices``, ``type``,
    ``metavar`` and ``flag``, the option string, pass through to argparse)."""
    return field(default=default, metadata={"help": help, **argparse_kwargs})


@dataclass(frozen=True)
class AugmentConfig:
    """What augmentation applies to training batches."""

    hflip: bool = True
    #: Off by default: upside-down faces do not occur in a webcam feed (see the model card).
    vflip: bool = flag(False, "also flip vertically (off by default)")
    zoom: float = 0.1
    shift: float = 0.1
    rotation_deg: float = 10.0
    brightness: float = 0.2
    #: Random erasing (Zhong et al. 2017): the probability that one random rectangle (2-25% of
    #: the image, aspect 0.3-3.3) of a training image is replaced by noise; 0 = off.
    erase: float = flag(0.0, "random erasing: probability per training image (default 0: off)",
                        type=unit_float)
    #: Camera conditions (see ``training.augment.RandomCamera``): the probability that a
    #: training image is degraded as a webcam frame is -- downscaled and blurred, noisy,
    #: darker or lighter (gamma), with lower contrast; 0 = off.
    camera: float = flag(0.0, "camera-condition augmentation (blur/low resolution, noise, "
                         "gamma, contrast): probability per training image (default 0: off)",
                         type=unit_float)
    #: Mixup (Zhang et al. 2018): every training batch is blended with a shuffled copy of
    #: itself, images and targets alike, by one weight drawn from Beta(alpha, alpha); 0 = off.
    mixup: float = flag(0.0, "mixup: blend each training batch with a shuffled copy of itself "
                        "(images and targets) by a Beta(ALPHA, ALPHA) weight (default 0: off)",
                        type=non_negative_float, metavar="ALPHA")
    #: CutMix (Yun et al. 2019): a random box of every image of the batch is replaced by the
    #: same box of another image, and the targets are mixed by area; the box's share of the
    #: image is drawn from Beta(alpha, alpha). With ``mixup`` too, each batch takes one of the
    #: two at random. 0 = off.
    cutmix: float = flag(0.0, "cutmix: paste a random box of another image of the batch into "
                         "each image and mix the targets by area; box share Beta(ALPHA, ALPHA) "
                         "(default 0: off; with --mixup each batch takes one of them)",
                         type=non_negative_float, metavar="ALPHA")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (recorded in the run folder and the metadata)."""

    data: str = flag("", "dataset folder, .zip of one, or fer2013.csv file",
                     required=True)
    out: str = flag("runs/default", "run folder (checkpoints, logs, plots)")
    #: Exported model folder name under ``models_dir``.
    name: str = flag("default", "exported model name under --models-dir (an existing model "
                     "there is replaced only with --overwrite)", type=model_name)
    models_dir: str = flag("models", "folder of exported models")
    #: "none" (from scratch) or "imagenet".
    weights: str = flag("none", "initial weights", choices=["none", "imagenet"])
    width: float = flag(0.25, "VGG16 channel width multiplier", type=positive_float)
    epochs: int = flag(100, "most epochs", type=positive_int)
    batch_size: int = flag(64, "batch size", type=positive_int)
    lr: float = flag(1e-3, "learning rate", type=positive_float)
    patience: int = flag(5, "EarlyStopping patience", type=non_negative_int)
    #: ReduceLROnPlateau: halve the learning rate after this many epochs without val_loss gain.
    lr_patience: int = flag(2, "ReduceLROnPlateau patience",
                            type=non_negative_int)
    #: With ``resume``: restart from this learning rate (a warm restart); 0 keeps the checkpoint's.
    resume_lr: float = flag(0.0, "with --resume: restart at this learning rate (0: keep)",
                            type=non_negative_float)
    #: Stop (keeping the best weights) after this many minutes; 0 = no limit.
    max_minutes: float = flag(0.0, "time budget (0: none)", type=non_negative_float)
    balance: str = flag("class_weight", "class balance of the training split",
                        choices=["class_weight", "smote", "none"])
    class_weight_power: float = flag(0.5, "class weights are (n/(k*count))**power",
                                      type=non_negative_float)
    seed: int = flag(1234, "seed of everything random", type=seed_int)
    #: Seed of the stratified train/val(/test) split; None = the ``init`` model's recorded split
    #: seed when there is one (so its validation images stay out of training), else ``seed``.
    split_seed: int | None = flag(None, "seed of the train/val split (default: --init's "
                                  "recorded one, else --seed)", type=seed_int)
    #: Keep this share of the validation split for validation and train on the rest of it
    #: (1 = all of it validates). The kept part is a subset of the full validation split.
    val_keep: float = flag(1.0, "keep this share of the validation split (stratified) and train "
                           "on the rest of it (default 1: all of it validates)", type=share)
    detect: str = flag("auto", "face detection on dataset images",
                       choices=["auto", "always", "never"])
    jit_compile: bool = flag(True, "turn XLA compilation off", flag="--no-jit")
    #: "float32", or "bfloat16" (Keras mixed precision: bf16 compute, fp32 weights; on CPUs with
    #: AMX/AVX512-BF16 oneDNN runs it about 1.5x faster than fp32+XLA -- use it without XLA).
    precision: str = flag("float32", "bfloat16: mixed precision (fast on CPUs with AMX; use "
                          "with --no-jit)", choices=["float32", "bfloat16"])
    #: "plateau" (ReduceLROnPlateau on val_loss) or "cosine" (cosine decay from ``lr`` to 0 over
    #: ``epochs`` -- or over ``max_minutes`` when that comes first -- after ``warmup_epochs``).
    schedule: str = flag("plateau", "learning rate: ReduceLROnPlateau, or cosine decay over "
                         "--epochs / --max-minutes", choices=["plateau", "cosine"])
    warmup_epochs: int = flag(1, "cosine: linear warm-up epochs", type=non_negative_int)
    #: Label smoothing of the training loss (0 = plain cross-entropy).
    label_smoothing: float = flag(0.0, "label smoothing of the loss, e.g. 0.1 (default 0: off)",
                                  type=unit_float)
    #: Export (and evaluate) the model averaged over each face and its mirror image.
    tta: bool = flag(True, "export the plain model, without averaging each face with its mirror "
                     "image (default: with)")
    #: With ``tta``: also average over the mirror pair shifted this many pixels left, right, up
    #: and down (10 views, 5x the classifier cost of mirror averaging); 0 = mirror only.
    tta_shift: int = flag(0, "also average over the mirror pair shifted this many pixels in 4 "
                          "directions (10 views; default 0: mirror only)", type=int,
                          choices=range(0, 9), metavar="PIXELS")
    #: Knowledge distillation: a trained model folder (e.g. the shipped ensemble) whose
    #: probabilities on the training images, averaged over ``teacher_tta_shift``'s views, are
    #: mixed into the targets: ``teacher_weight * teacher + (1 - teacher_weight) * label``.
    teacher: str = flag("", "distil: mix this model's probabilities (models/NAME) into the "
                        "training targets")
    teacher_weight: float = flag(0.5, "with --teacher: weight of the teacher's probabilities "
                                 "in the targets", type=unit_float)
    #: Softens (> 1) or sharpens (< 1) the teacher's probabilities as ``p ** (1/T)``, renormalised.
    teacher_temperature: float = flag(1.0, "with --teacher: temperature of its probabilities",
                                      type=positive_float)
    teacher_tta_shift: int = flag(3, "with --teacher: its views (mirror pair shifted this many "
                                  "pixels 4 ways; 0: mirror only)", type=int,
                                  choices=range(0, 9), metavar="PIXELS")
    resume: bool = flag(False, "continue from the run's last checkpoint")
    #: Replace what the run would otherwise refuse to: an earlier run in ``out`` (without
    #: ``resume``) and an exported model in ``models_dir/name``.
    overwrite: bool = flag(False, "replace an earlier run in --out and an exported model in "
                           "--models-dir/--name (default: refuse)")
    #: Start from this trained model's weights (a ``models/<name>`` folder or a ``.keras`` file,
    #: same ``width``) instead of random ones: a second training cycle ("" = from scratch).
    init: str = flag("", "start from this trained model's weights (models/NAME or a .keras "
                     "file, same --width), e.g. for a second cosine cycle")
    #: ImageNet path only: epochs with the base frozen, then fine-tune the top blocks.
    frozen_epochs: int = 5
    finetune_blocks: int = 2
    finetune_lr: float = 1e-4
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache_dir: str = os.path.join(os.path.expanduser("~"), ".cache", "facedapps")
    #: Keep at most this many training images (tiny runs and tests); 0 = all.
    limit: int = flag(0, "use at most N training images (0: all)", type=non_negative_int)
    export: bool = flag(True, "keep the run only: do not export into --models-dir/--name "
                        "(default: export)")
    #: After exporting, also write the LiteRT fp32/int8 artifacts (``run.py convert``) and
    #: record every backend's test accuracy in the metadata.
    convert: bool = flag(True, "export model.keras only, without the LiteRT fp32/int8 copies "
                         "(default: with them)")
    verbose: int = 1
