"""Re-export trained model folders with the current export code (float32, test-time averaging),
one model or an ensemble of several (``python run.py ensemble``).

`run.py train` exports its best checkpoint at the end of a run. When a run's folder is gone (or
the export code changed after the run started) this rebuilds the export from the model folder
alone: it loads the folder's Keras model, casts it to float32, wraps it in the test-time
averaging (unless ``tta`` is off), evaluates it on the same splits as training (the metadata
holds the data path and split seed) and writes ``models/NAME`` with the usual ``model.keras``,
``metadata.json`` and ``MODEL_CARD.md``. The training settings in the metadata are kept, and so
is the recorded training time (an ensemble's is the sum of its members').

Given several model folders (same input, e.g. runs with other seeds or cycles), it exports their
ensemble: one Keras model averaging the members' probabilities, with the test-time averaging
around it. The training settings are the first member's; every member's training command and
accuracy go into the metadata and model card.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from core.errors import ModelError
from core.model_dir import ModelMeta, read_meta, recorded_split_seed, recorded_val_keep
from core.preprocess import LABELS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnsembleConfig:
    """What :func:`export_ensemble` builds."""

    #: Model folders; several: their ensemble.
    sources: tuple[Path, ...]
    #: Exported folder name under ``models_dir``.
    name: str = "default"
    models_dir: Path = Path("models")
    #: Dataset (default: the one recorded in the first source's metadata).
    data: str | None = None
    tta: bool = True
    #: With ``tta``: also average the mirror pair shifted this many pixels four ways.
    tta_shift: int = 0
    #: Convert to LiteRT int8 only (no fp32 copy; keeps an ensemble small).
    int8_only: bool = False
    #: Write (and evaluate) the LiteRT copies.
    convert: bool = True
    #: Training time to record (default: the sources' recorded minutes, summed).
    train_minutes: float | None = None
    #: Replace an existing model in ``models_dir/name`` (default: refuse).
    overwrite: bool = False

    def command(self) -> str:
        """The ``run.py ensemble`` command line that makes this export."""
        return " ".join(["python run.py ensemble", *map(str, self.sources), "--name", self.name]
                        + (["--no-tta"] if not self.tta else [])
                        + ([f"--tta-shift {self.tta_shift}"] if self.tta_shift else [])
                        + (["--int8-only"] if self.int8_only else []))


def _train_config(meta: ModelMeta, cfg: EnsembleConfig) -> Any:
    from training.augment import AugmentConfig
    from training.train import TrainConfig

    recorded = meta.raw.get("training") or {}
    known = {f.name for f in fields(TrainConfig)}
    tr = {k: v for k, v in recorded.items() if k in known and k != "augment"}
    aug = {k: v for k, v in (recorded.get("augment") or {}).items()
           if k in {f.name for f in fields(AugmentConfig)}}
    out = replace(TrainConfig(**tr, augment=AugmentConfig(**aug)), name=cfg.name,
                  models_dir=str(cfg.models_dir), tta=cfg.tta,
                  tta_shift=cfg.tta_shift if cfg.tta else 0)
    return replace(out, data=cfg.data) if cfg.data else out


def export_ensemble(cfg: EnsembleConfig) -> dict:
    """Export ``cfg.sources`` (one model or their ensemble) into ``models_dir/name``.

    Returns a summary (test and val figures, and without test-time averaging). Raises
    ModelError for an unusable source, ValueError for members that do not fit together or an
    export folder that may not be written (``training.export.ExportTargetError``: an existing
    model without ``cfg.overwrite``), ``training.data.DatasetError`` for an unusable dataset.
    """
    from training.export import export_target

    metas = [read_meta(src) for src in cfg.sources]
    target = export_target(cfg.models_dir, cfg.name, cfg.overwrite)
    import keras

    from core.model_dir import load_keras
    from training.data import DatasetError, load_dataset
    from training.evaluate import evaluate_model
    from training.export import export_model
    from training.model import ensemble, to_float32, with_tta, without_tta
    from training.train import convert_export, export_candidate

    tcfg = _train_config(metas[0], cfg)
    if not cfg.data and not (tcfg.data and Path(tcfg.data).exists()):
        raise DatasetError(f"the dataset recorded in {cfg.sources[0]}, {tcfg.data!r}, is not "
                           f"there (a relative path is read from the current folder, "
                           f"{Path.cwd()}); pass --data PATH")
    # The split the sources were validated on (recorded with them), not a fresh one.
    seeds = [tcfg.seed if s is None else s for s in map(recorded_split_seed, cfg.sources)]
    if len(set(seeds)) > 1:
        log.warning("the members were trained on different data splits (seeds %s): each saw "
                    "some of the others' validation images, so the ensemble's val accuracy is "
                    "optimistic", sorted(set(seeds)))
    keeps = [recorded_val_keep(src) for src in cfg.sources]
    if len(set(keeps)) > 1:
        log.warning("the members trained on different shares of the validation split (%s): "
                    "the ensemble's val accuracy includes images some of them trained on",
                    ", ".join(map(str, sorted(set(keeps)))))
    ds = load_dataset(tcfg.data, seed=seeds[0], detect=tcfg.detect, cache_dir=tcfg.cache_dir,
                      val_keep=min(keeps))

    keras.mixed_precision.set_global_policy("float32")
    # An already test-time-averaged model: start from the network inside.
    plains = [to_float32(without_tta(load_keras(src))) for src in cfg.sources]
    for src, net in zip(cfg.sources, plains):
        if tuple(net.output_shape) != (None, len(LABELS)):
            raise ModelError(f"{src}: its model outputs shape {tuple(net.output_shape)}, not "
                             f"the probabilities of the {len(LABELS)} labels "
                             f"({', '.join(LABELS)})")
    plain = ensemble(plains) if len(plains) > 1 else plains[0]
    model, report = export_candidate(plain, ds, tta=tcfg.tta, shift=tcfg.tta_shift)
    export_cfg: Any = tcfg
    if len(plains) > 1:
        report["members"] = []
        for src, meta, net in zip(cfg.sources, metas, plains):
            wrapped = with_tta(net, tcfg.tta_shift) if tcfg.tta else net
            figures = {}
            for split in ("test", "val"):  # one evaluation per split
                r = evaluate_model(wrapped, getattr(ds, split))
                figures[split] = {k: r[k] for k in ("accuracy", "macro_f1")}
            report["members"].append({"source": str(src), "params": int(net.count_params()),
                                      **figures, "training": meta.raw.get("training") or {}})
        export_cfg = {**asdict(tcfg), "ensemble_command": cfg.command()}
    elif (metas[0].raw.get("architecture") or {}).get("ensemble"):
        report["members"] = metas[0].raw["architecture"]["ensemble"]  # re-exporting an ensemble
    minutes = cfg.train_minutes
    if minutes is None:
        known = [m.train_minutes for m in metas if m.train_minutes is not None]
        minutes = round(sum(known), 1) if len(known) == len(metas) else None  # type: ignore[arg-type]
    report["train_minutes"] = minutes
    report["weights"] = (metas[0].raw.get("architecture") or {}).get("weights", "scratch")
    model_dir = export_model(model, target, export_cfg, ds.info, report)
    if cfg.convert:
        convert_export(model_dir, ds, keras_report=report,
                       quantize_modes=("dynamic",) if cfg.int8_only else ("none", "dynamic"))
    return {"test": {k: report[k] for k in ("n", "accuracy", "macro_f1")},
            "val": report["val"], "without_tta": report.get("without_tta")}


__all__ = ["EnsembleConfig", "export_ensemble", "ModelError"]
