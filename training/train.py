"""Training: named steps (data -> balance -> model -> fit -> evaluate -> export)."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from core.errors import ModelError
from core.model_dir import load_keras
from core.preprocess import LABELS
from training.config import AugmentConfig, TrainConfig
from training.data import Dataset, Split, load_dataset

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and Keras (TensorFlow) RNGs."""
    import keras

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def balance_split(train: Split, cfg: TrainConfig) -> tuple[Split, dict[int, float] | None]:
    """Apply the chosen class-balance method to the training split only."""
    from training.balance import class_weights, smote

    if cfg.balance == "smote":
        x, y = smote(train.x, train.y, seed=cfg.seed)
        log.info("SMOTE: %d -> %d training images", len(train), len(y))
        return Split(x, y), None
    if cfg.balance == "class_weight":
        return train, class_weights(train.y, cfg.class_weight_power)
    if cfg.balance == "none":
        return train, None
    raise ValueError(f"balance must be class_weight, smote or none, not {cfg.balance!r}")


def make_tf_dataset(split: Split, batch_size: int, augment: AugmentConfig | None = None,
                    shuffle: bool = False, seed: int = 1234,
                    class_weight: dict[int, float] | None = None,
                    targets: np.ndarray | None = None):  # -> tf.data.Dataset
    """Batches of ``(pixels float32 (N,S,S,1) 0..255, label[, weight])``, augmented on the fly;
    with ``targets`` (float32 ``(N, 7)``, e.g. :func:`distill_targets`) those replace the
    integer labels. ``augment``'s mixup/cutmix mix images, targets and weights within each
    batch, so they need ``targets``."""
    import tensorflow as tf

    from training.augment import build_augmenter, mix_batch

    mixing = augment is not None and (augment.mixup > 0 or augment.cutmix > 0)
    if mixing and targets is None:
        raise ValueError("mixup/cutmix mix the targets: pass dense targets (mix_targets)")

    x = split.x[..., None].astype(np.float32)
    tensors: tuple = (x, split.y if targets is None else targets.astype(np.float32))
    if class_weight is not None:
        w = np.array([class_weight[int(c)] for c in split.y], np.float32)
        tensors = (*tensors, w)
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        aug = build_augmenter(augment, seed)

        def apply(xb, *rest):
            return (tf.clip_by_value(aug(xb, training=True), 0.0, 255.0), *rest)

        ds = ds.map(apply, num_parallel_calls=1)
    if mixing:
        assert augment is not None
        gen = tf.random.Generator.from_seed(seed)
        mixup, cutmix = augment.mixup, augment.cutmix

        def mix(xb, tb, *wb):
            return mix_batch(xb, tb, wb[0] if wb else None, mixup=mixup, cutmix=cutmix, gen=gen)

        ds = ds.map(mix, num_parallel_calls=1)
    return ds.prefetch(2)


def cosine_lr(lr: float, epoch: int, epochs: int, minutes_done: float = 0.0,
              max_minutes: float = 0.0, warmup_epochs: int = 0) -> float:
    """Learning rate for ``epoch`` (0-based): linear warm-up, then cosine decay to 0.

    Progress is the larger of the epoch fraction and the time-budget fraction, so a run limited
    by ``max_minutes`` still ends annealed whatever the machine's speed.
    """
    if epoch < warmup_epochs:
        return lr * (epoch + 1) / (warmup_epochs + 1)
    progress = (epoch - warmup_epochs) / max(1, epochs - warmup_epochs)
    if max_minutes:
        progress = max(progress, minutes_done / max_minutes)
    progress = min(1.0, max(0.0, progress))
    return float(lr * 0.5 * (1.0 + np.cos(np.pi * progress)))


class TimeBudget:
    """Keras callback factory: stop training once ``minutes`` have elapsed (``done`` before)."""

    @staticmethod
    def make(minutes: float, done: float = 0.0):
        import keras

        class _Budget(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.t0 = time.monotonic()

            def on_epoch_end(self, epoch, logs=None):  # noqa: D401 - keras hook
                if minutes and done + (time.monotonic() - self.t0) / 60.0 >= minutes:
                    log.warning("time budget of %.1f min reached after epoch %d; stopping",
                                minutes, epoch + 1)
                    self.model.stop_training = True

        return _Budget()


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite: nothing of that epoch is kept or exported."""


class NaNGuard:
    """Keras callback factory: raise :class:`DivergedError` as soon as the training loss (or,
    at an epoch's end, the validation loss) is not finite. It goes first in the callback list,
    so the checkpoints keep the last good epoch instead of a model of NaN weights."""

    @staticmethod
    def make():
        import keras

        class _Guard(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.epoch = 0

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def _check(self, logs, keys) -> None:
                for key in keys:
                    value = (logs or {}).get(key)
                    if value is not None and not np.isfinite(float(value)):
                        raise DivergedError(
                            f"the {key.replace('_', ' ')} became {float(value)} in epoch "
                            f"{self.epoch + 1}: training diverged (try a lower --lr); nothing "
                            "was exported")

            def on_train_batch_end(self, batch, logs=None):
                self._check(logs, ("loss",))

            def on_epoch_end(self, epoch, logs=None):
                self._check(logs, ("loss", "val_loss"))

        return _Guard()


def fit(model, ds: Dataset, cfg: TrainConfig, out: Path, class_weight=None,
        initial_epoch: int = 0, epochs: int | None = None, best: float | None = None,
        targets: np.ndarray | None = None):
    """Fit with EarlyStopping, ReduceLROnPlateau, best+last checkpoints, CSV/TensorBoard logs.
    ``targets``: dense training targets (distillation); validation is then scored against
    one-hot labels, so ``val_accuracy`` and ``val_loss`` mean what they do without them."""
    import keras

    epochs = cfg.epochs if epochs is None else epochs
    train_ds = make_tf_dataset(ds.train, cfg.batch_size, cfg.augment, shuffle=True,
                               seed=cfg.seed, class_weight=class_weight, targets=targets)
    val_ds = make_tf_dataset(ds.val, 256, targets=None if targets is None
                             else np.eye(len(LABELS), dtype=np.float32)[ds.val.y])
    state_path = out / "state.json"
    #: Training minutes of earlier fit() calls of this run (a resumed run keeps its clock).
    done = float(json.loads(state_path.read_text()).get("minutes", 0.0)
                 if state_path.exists() else 0.0)
    t0 = time.monotonic()

    def minutes() -> float:
        return done + (time.monotonic() - t0) / 60.0

    class _State(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            prev = json.loads(state_path.read_text()) if state_path.exists() else {}
            b = max(prev.get("best_val_accuracy", 0.0), float((logs or {}).get("val_accuracy", 0)))
            state_path.write_text(json.dumps({"epoch": epoch + 1, "best_val_accuracy": b,
                                              "minutes": round(minutes(), 3)}))

    if cfg.schedule == "cosine":
        def lr_at(epoch, _lr=None):
            return cosine_lr(cfg.lr, epoch, epochs, minutes(), cfg.max_minutes,
                             cfg.warmup_epochs)

        lr_cb = keras.callbacks.LearningRateScheduler(lr_at)
    elif cfg.schedule == "plateau":
        lr_cb = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                  patience=cfg.lr_patience, min_lr=1e-5)
    else:
        raise ValueError(f"schedule must be plateau or cosine, not {cfg.schedule!r}")

    callbacks = [
        NaNGuard.make(),  # first: a diverged epoch is never checkpointed
        keras.callbacks.ModelCheckpoint(str(out / "best.keras"), monitor="val_accuracy",
                                        save_best_only=True, initial_value_threshold=best),
        keras.callbacks.ModelCheckpoint(str(out / "last.keras")),
        _State(),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=cfg.patience,
                                      restore_best_weights=True),
        lr_cb,
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=initial_epoch > 0),
        keras.callbacks.TensorBoard(str(out / "tensorboard"), write_graph=False),
        TimeBudget.make(cfg.max_minutes, done),
    ]
    # shuffle=False: train_ds shuffles itself (Keras would only warn that it cannot).
    return model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch,
                     callbacks=callbacks, verbose=cfg.verbose, shuffle=False)


class InitModelError(ValueError):
    """``--init`` names no usable model (missing, unreadable, or another architecture)."""


def load_init_weights(model, path: str) -> None:
    """Copy the weights of the trained model at ``path`` into ``model`` (same architecture).

    ``path`` is a model folder (its ``model.keras``) or a ``.keras`` file; an exported model's
    mirror-averaging wrapper is looked through.
    """

    from training.model import without_tta

    src = Path(path)
    if src.is_dir():
        src = src / "model.keras"
    if not src.is_file():
        raise InitModelError(f"--init {path}: no such model file ({src})")
    if src.suffix != ".keras":
        raise InitModelError(f"--init {path}: not a model folder or a .keras file")
    try:
        loaded = load_keras(src)
    except ModelError as exc:
        raise InitModelError(f"--init {path}: {exc}") from exc
    weights = without_tta(loaded).get_weights()
    theirs = [w.shape for w in weights]
    ours = [tuple(w.shape) for w in model.weights]
    if theirs != ours:
        raise InitModelError(f"--init {path}: its weights do not fit this run's network "
                             f"({len(theirs)} arrays vs {len(ours)}, or other shapes); pass "
                             "the --width it was trained with")
    model.set_weights(weights)
    log.info("starting from the weights of %s", src)


def resolve_split_seed(cfg: TrainConfig) -> int:
    """The seed of this run's data split (see ``TrainConfig.split_seed``).

    A run that starts from a trained model must split the data as that model's run did:
    another split would move images the model was validated on into training, and the
    validation accuracy used to choose checkpoints and models would be inflated.
    """
    from core.model_dir import recorded_split_seed

    init_seed = recorded_split_seed(cfg.init) if cfg.init else None
    if cfg.split_seed is not None:
        if init_seed is not None and init_seed != cfg.split_seed:
            log.warning("--split-seed %d differs from the split seed %d of --init %s: images "
                        "it was validated on are now training images, so validation accuracy "
                        "is optimistic", cfg.split_seed, init_seed, cfg.init)
        return cfg.split_seed
    if init_seed is not None:
        if init_seed != cfg.seed:
            log.info("data split: seed %d, as recorded for --init %s (training seed %d)",
                     init_seed, cfg.init, cfg.seed)
        return init_seed
    return cfg.seed


def build_for(cfg: TrainConfig):
    """The model to train: ImageNet VGG16 when asked for and reachable, else from scratch
    (or from ``cfg.init``'s weights)."""
    from training.model import WeightsUnavailable, build_model, compile_model, freeze_base

    if cfg.weights == "imagenet":
        try:
            model = build_model(weights="imagenet")
            freeze_base(model)
            compile_model(model, cfg.lr, cfg.jit_compile, cfg.label_smoothing)
            return model, "imagenet"
        except WeightsUnavailable as exc:
            log.warning("%s -- FALLING BACK to training VGG16 from scratch (with BatchNorm)", exc)
    model = build_model(width=cfg.width)
    if cfg.init:
        load_init_weights(model, cfg.init)
    compile_model(model, cfg.lr, cfg.jit_compile, cfg.label_smoothing,
                  dense_targets=bool(cfg.teacher) or mixes(cfg))
    return model, "scratch"


class TeacherError(ValueError):
    """``--teacher`` names no usable model, or cannot be combined with the other options."""


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def teacher_probs(cfg: TrainConfig, split: Split, out: Path) -> np.ndarray:
    """The ``cfg.teacher`` model's probabilities on ``split`` (float32 ``(N, 7)``), averaged
    over its mirror (and ``teacher_tta_shift``) views; cached in ``out/teacher.npz`` so that a
    resumed run does not recompute them."""
    import keras

    from training.evaluate import predict_probs
    from training.model import to_float32, with_tta, without_tta

    cache = out / "teacher.npz"
    src = Path(cfg.teacher)
    src = src / "model.keras" if src.is_dir() else src
    if not src.is_file():
        raise TeacherError(f"--teacher {cfg.teacher}: no such model file ({src})")
    if src.suffix != ".keras":
        raise TeacherError(f"--teacher {cfg.teacher}: not a model folder or a .keras file")
    # The key names the teacher by its content, so a different model at the same path (a new
    # export in models/default) is not mistaken for the cached one.
    key = f"sha256={file_sha256(src)}|shift={cfg.teacher_tta_shift}|n={len(split)}"
    if cache.exists():
        with np.load(cache) as z:
            if str(z["key"]) == key and np.array_equal(z["labels"], split.y):
                log.info("teacher: probabilities from %s", cache)
                return z["probs"]
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        try:
            teacher = to_float32(without_tta(load_keras(src)))
        except ModelError as exc:
            raise TeacherError(f"--teacher {cfg.teacher}: {exc}") from exc
        t0 = time.monotonic()
        probs = predict_probs(with_tta(teacher, cfg.teacher_tta_shift), split.x)
    finally:
        keras.mixed_precision.set_global_policy(before)
    log.info("teacher: %s on %d training images in %.1f min (accuracy %.3f)", src, len(split),
             (time.monotonic() - t0) / 60.0, float(np.mean(probs.argmax(1) == split.y)))
    np.savez(cache, key=np.array(key), labels=split.y, probs=probs)
    return probs


class MixError(ValueError):
    """``--mixup``/``--cutmix`` cannot be combined with the other options."""


def mixes(cfg: TrainConfig) -> bool:
    """Whether ``cfg`` mixes training images (mixup/cutmix): it then trains on dense targets."""
    return cfg.augment.mixup > 0 or cfg.augment.cutmix > 0


def distill_targets(labels: np.ndarray, teacher: np.ndarray, weight: float,
                    temperature: float = 1.0, label_smoothing: float = 0.0) -> np.ndarray:
    """Training targets ``weight * teacher' + (1 - weight) * smoothed one-hot label``, where
    ``teacher'`` is ``teacher ** (1/temperature)`` renormalised (knowledge distillation from
    probabilities: the cross-entropy to this mixture is the weighted sum of the cross-entropies
    to the teacher and to the label)."""
    if not 0.0 <= weight <= 1.0:
        raise TeacherError(f"teacher weight must be in [0, 1], not {weight}")
    if temperature <= 0:
        raise TeacherError(f"teacher temperature must be > 0, not {temperature}")
    k = teacher.shape[1]
    soft = np.power(np.clip(teacher.astype(np.float64), 1e-8, 1.0), 1.0 / temperature)
    soft /= soft.sum(axis=1, keepdims=True)
    hard = np.eye(k)[labels] * (1.0 - label_smoothing) + label_smoothing / k
    return (weight * soft + (1.0 - weight) * hard).astype(np.float32)


class RunFolderError(ValueError):
    """``--out`` cannot be used: a file, an earlier run (without ``--resume`` or
    ``--overwrite``), or an unreadable checkpoint state."""


#: Files that make a folder a training run's (``--out``).
RUN_FILES = ("best.keras", "last.keras", "state.json", "history.csv")


def read_state(out: Path) -> dict:
    """The run folder's ``state.json`` (``epoch``, ``best_val_accuracy``, ``minutes``), checked;
    RunFolderError when it cannot be read."""
    path = Path(out) / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        int(state["epoch"]), float(state["best_val_accuracy"])
        float(state.get("minutes", 0.0))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RunFolderError(f"{path}: unreadable checkpoint state ({exc}); to start the run "
                             "over pass --overwrite instead of --resume, or use another --out"
                             ) from None
    return state


def check_run_folder(cfg: TrainConfig) -> None:
    """Refuse, before any work, an ``--out`` that is a file, that holds an earlier run when
    this one would start afresh (unless ``overwrite``), or whose state ``--resume`` cannot
    read; and an export target that :func:`training.export.export_target` refuses."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out}: is a file, not a folder")
    held = [f for f in RUN_FILES if (out / f).exists()]
    if held and not cfg.resume and not cfg.overwrite:
        raise RunFolderError(f"--out {out} holds a run ({', '.join(held)}): use --resume to "
                             "continue it or another --out (--overwrite starts it over)")
    if cfg.resume and (out / "last.keras").exists() and (out / "state.json").exists():
        read_state(out)
    if cfg.export:
        from training.export import export_target

        export_target(cfg.models_dir, cfg.name, cfg.overwrite)


#: ``--out`` when none is given.
DEFAULT_OUT = "runs/default"


def free_defaults(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the default run folder and export name moved to the first free
    ``runs/default-N`` / ``models/default-N`` when they hold an earlier run or a model (the
    shipped one) and neither ``--resume`` nor ``--overwrite`` is given (said in the log), so
    that ``run.py train --data PATH`` trains on a fresh checkout, and again, without replacing
    anything. Folders given on purpose are left to :func:`check_run_folder`."""
    from training.export import free_name

    name = free_name(cfg.models_dir, cfg.name, cfg.overwrite) if cfg.export else cfg.name
    out = cfg.out
    if (out == DEFAULT_OUT and not cfg.resume and not cfg.overwrite
            and any((Path(out) / f).exists() for f in RUN_FILES)):
        k = 2
        while Path(f"{out}-{k}").exists():
            k += 1
        out = f"{cfg.out}-{k}"
        log.warning("%s holds an earlier run: this one goes to %s (--resume continues the "
                    "earlier one, --overwrite starts it over)", cfg.out, out)
    return replace(cfg, name=name, out=out)


def warn_about_data(ds: Dataset, detect: str) -> None:
    """Warn about a dataset that trains badly: most images left out for want of a face, or
    training images of one class only."""
    no_face = int(ds.info.get("no_face") or 0)
    total = no_face + len(ds.train) + len(ds.val) + len(ds.test)
    if total and no_face > total // 2:
        log.warning("%d of %d images were left out: no face was found in them (--detect %s)%s",
                    no_face, total, detect,
                    "; are they face crops? then try --detect auto or never"
                    if detect == "always" else "")
    classes = np.unique(ds.train.y)
    if len(classes) < 2:
        log.warning("the training images are all of one class (%s): the model can only learn "
                    "to answer that", ", ".join(LABELS[int(c)] for c in classes) or "none")


def train(cfg: TrainConfig) -> dict:
    """Run the whole pipeline; returns the evaluation report of the best model on the test split."""
    check_run_folder(cfg)  # before anything slow
    import keras

    if cfg.precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision must be float32 or bfloat16, not {cfg.precision!r}")
    if cfg.init and cfg.weights == "imagenet":
        raise InitModelError("--init and --weights imagenet exclude each other")
    if mixes(cfg) and cfg.weights == "imagenet":
        raise MixError("--mixup and --cutmix train a network from scratch or --init, not the "
                       "ImageNet path")
    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if cfg.precision == "bfloat16" else "float32")
    try:
        return _train(cfg)
    finally:  # the Keras policy is process-wide: leave it as it was
        keras.mixed_precision.set_global_policy(before)


def _train(cfg: TrainConfig) -> dict:
    import keras

    seed_everything(cfg.seed)
    split_seed = resolve_split_seed(cfg)
    cfg = replace(cfg, split_seed=split_seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    ds = load_dataset(cfg.data, seed=split_seed, detect=cfg.detect, cache_dir=cfg.cache_dir,
                      val_keep=cfg.val_keep)
    if cfg.limit and len(ds.train) > cfg.limit:
        # A random subset: a given train/ folder is read class by class, so a prefix would
        # contain only the first classes.
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(ds.train), cfg.limit,
                                                              replace=False))
        ds.train = Split(ds.train.x[keep], ds.train.y[keep])
    log.info("data: train %d, val %d, test %d (%s)", len(ds.train), len(ds.val), len(ds.test),
             ds.info["split_rule"])
    if cfg.init:
        from core.model_dir import recorded_val_keep

        if recorded_val_keep(cfg.init) < cfg.val_keep:
            log.warning("--init %s trained on part of the validation split (it kept %g of it, "
                        "this run keeps %g): validation accuracy is optimistic", cfg.init,
                        recorded_val_keep(cfg.init), cfg.val_keep)
    warn_about_data(ds, cfg.detect)
    (out / "split.json").write_text(json.dumps(ds.info, indent=2))
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    if cfg.teacher and cfg.balance == "smote":
        raise TeacherError("--teacher has no probabilities for SMOTE's synthetic images: use "
                           "--balance class_weight or none")
    ds.train, cw = balance_split(ds.train, cfg)
    targets = None
    if cfg.teacher:
        if cfg.weights == "imagenet":
            raise TeacherError("--teacher trains a network from scratch or --init, not the "
                               "ImageNet path")
        targets = distill_targets(ds.train.y, teacher_probs(cfg, ds.train, out),
                                  cfg.teacher_weight, cfg.teacher_temperature,
                                  cfg.label_smoothing)
    elif mixes(cfg):
        # Mixed images need mixable targets: the (smoothed) one-hot labels as vectors.
        targets = distill_targets(ds.train.y, np.zeros((len(ds.train), len(LABELS))), 0.0,
                                  label_smoothing=cfg.label_smoothing)

    state_path = out / "state.json"
    origin_path = out / "origin.json"
    if cfg.resume and (out / "last.keras").exists() and state_path.exists():
        state = read_state(out)
        model = load_keras(out / "last.keras", compile=True)  # with the optimizer and loss
        start, best = int(state["epoch"]), float(state["best_val_accuracy"])
        origin = (json.loads(origin_path.read_text())["weights"] if origin_path.exists()
                  else "scratch")
        log.info("resuming after epoch %d (best val accuracy %.4f)", start, best)
        if cfg.resume_lr:
            model.optimizer.learning_rate.assign(cfg.resume_lr)
            log.info("warm restart at learning rate %g", cfg.resume_lr)
        if origin == "imagenet" and start < cfg.frozen_epochs:
            from training.model import unfreeze

            # Interrupted in the frozen stage: finish it, then fine-tune as a fresh run would.
            fit(model, ds, cfg, out, cw, initial_epoch=start, epochs=cfg.frozen_epochs,
                best=best)
            unfreeze(model, cfg.finetune_blocks, cfg.finetune_lr, cfg.label_smoothing)
            start = cfg.frozen_epochs
            best = json.loads(state_path.read_text())["best_val_accuracy"]
        if start < cfg.epochs:
            fit(model, ds, cfg, out, cw, initial_epoch=start, best=best, targets=targets)
        else:
            log.info("--resume: all %d epochs already done", cfg.epochs)
    else:
        if cfg.resume:
            log.warning("--resume: no checkpoint in %s, starting from scratch", out)
        # A fresh run must not inherit the best score of an older run in the same folder.
        state_path.unlink(missing_ok=True)
        model, origin = build_for(cfg)
        (out / "origin.json").write_text(json.dumps({"weights": origin}))
        if origin == "imagenet":
            from training.model import unfreeze

            fit(model, ds, cfg, out, cw, epochs=cfg.frozen_epochs)
            unfreeze(model, cfg.finetune_blocks, cfg.finetune_lr, cfg.label_smoothing)
            fit(model, ds, cfg, out, cw, initial_epoch=cfg.frozen_epochs,
                best=json.loads(state_path.read_text())["best_val_accuracy"])
        else:
            fit(model, ds, cfg, out, cw, targets=targets)

    from training.evaluate import save_report
    from training.model import to_float32

    # Evaluated and exported in float32 whatever the training precision: that is what serves.
    keras.mixed_precision.set_global_policy("float32")
    plain_model = to_float32(load_keras(out / "best.keras"))
    best_model, report = export_candidate(plain_model, ds, cfg.tta, cfg.tta_shift)
    report["train_minutes"] = round((time.time() - t0) / 60.0, 1)
    report["weights"] = origin
    save_report(report, out, history_csv=out / "history.csv")
    if cfg.export:
        from training.export import export_model

        model_dir = export_model(best_model, Path(cfg.models_dir) / cfg.name, cfg, ds.info,
                                 report)
        if cfg.convert:
            convert_export(model_dir, ds, keras_report=report)
    return report


def export_candidate(plain_model, ds: Dataset, tta: bool, shift: int = 0):
    """The model to export (``plain_model`` under test-time averaging when ``tta``, over
    :func:`training.model.tta_views` of ``shift``) and its report: the
    test split's full metrics, ``val`` accuracy/macro-F1 and, with ``tta``, both figures of the
    plain model under ``without_tta``."""
    from training.evaluate import evaluate_model
    from training.model import with_tta

    model = with_tta(plain_model, shift) if tta else plain_model
    keys = ("n", "accuracy", "macro_f1")
    report = evaluate_model(model, ds.test)
    val_report = evaluate_model(model, ds.val)
    report["val"] = {k: val_report[k] for k in keys}
    if tta:
        plain_test = evaluate_model(plain_model, ds.test)
        plain_val = evaluate_model(plain_model, ds.val)
        report["without_tta"] = {**{k: plain_test[k] for k in keys},
                                 "val": {k: plain_val[k] for k in keys}}
    return model, report


def convert_export(model_dir: Path, ds: Dataset, keras_report: dict | None = None,
                   quantize_modes: tuple[str, ...] = ("none", "dynamic")) -> None:
    """The fast CPU artifacts (LiteRT fp32 and int8) of an exported model, each backend's test
    accuracy recorded next to Keras' (the server uses int8 only within 0.5 points of fp32).
    ``keras_report``: the exported model's test report when already computed (not redone)."""
    from core.runtimes import load_classifier
    from training.convert import convert_model_dir
    from training.evaluate import evaluate_model

    def evaluate(backend: str) -> dict:
        if backend == "keras" and keras_report is not None:
            return {**keras_report, "split": "test"}
        clf = load_classifier(model_dir, backend)
        return {**evaluate_model(clf.predict_batch, ds.test), "split": "test"}

    convert_model_dir(model_dir, quantize_modes, evaluate=evaluate)
