"""Re-export trained model folders with the current export code (float32, test-time averaging),
one model or an ensemble of several.

`run.py train` exports its best checkpoint at the end of a run. When a run's folder is gone (or
the export code changed after the run started) this rebuilds the export from the model folder
alone: it loads ``SRC/model.keras``, casts it to float32, wraps it in the horizontal-flip
test-time augmentation (unless ``--no-tta``), evaluates it on the same splits as training
(``metadata.json`` holds the data path and seed) and writes ``models/NAME`` with the usual
``model.keras``, ``metadata.json`` and ``MODEL_CARD.md``. The training settings in the metadata
are kept; the training time of the original run is kept when known.

    python tools/reexport.py models/candidate --name default

Given several model folders (same input, e.g. runs with other seeds), it exports their
ensemble: one Keras model averaging the members' probabilities, with the test-time averaging
around it (``--tta-shift 3`` adds shifted views). The training settings are the first
member's; every member's training command and accuracy go into the metadata and model card.

    python tools/reexport.py models/a models/b --tta-shift 3 --int8-only --name default
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _card_minutes(model_dir: Path) -> float | None:
    """The training minutes a model folder's MODEL_CARD.md states (None if it does not)."""
    card = model_dir / "MODEL_CARD.md"
    for line in card.read_text(encoding="utf-8").splitlines() if card.exists() else []:
        if line.startswith("Training took "):
            try:
                return float(line.split()[2])
            except (IndexError, ValueError):
                return None
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path, nargs="+",
                    help="model folder with model.keras and metadata.json; several: their "
                         "ensemble")
    ap.add_argument("--name", default="default", help="name of the exported folder (models/NAME)")
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--data", default=None, help="dataset (default: the one in metadata.json)")
    ap.add_argument("--no-tta", action="store_true", help="export without test-time averaging")
    ap.add_argument("--tta-shift", type=int, choices=range(0, 9), default=0, metavar="PIXELS",
                    help="also average over the mirror pair shifted this many pixels in 4 "
                         "directions (10 views; default 0: mirror only)")
    ap.add_argument("--int8-only", action="store_true",
                    help="convert to LiteRT int8 only, no fp32 copy (keeps an ensemble small)")
    ap.add_argument("--no-convert", action="store_true",
                    help="skip the LiteRT fp32/int8 copies (default: written and evaluated)")
    ap.add_argument("--train-minutes", type=float, default=None,
                    help="training time to report (default: from the source model card)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    metas = []
    for src in args.src:
        meta_path = src / "metadata.json"
        try:
            metas.append(json.loads(meta_path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            print(f"error: cannot read {meta_path}: {e}", file=sys.stderr)
            return 2
        if not (src / "model.keras").is_file():
            print(f"error: {src / 'model.keras'} not found", file=sys.stderr)
            return 2
    meta = metas[0]

    import keras

    from training.augment import AugmentConfig
    from training.data import load_dataset
    from training.evaluate import evaluate_model, recorded_split_seed
    from training.export import export_model
    from training.model import ensemble, to_float32, with_tta, without_tta
    from training.train import TrainConfig, convert_export, export_candidate

    known = {f.name for f in fields(TrainConfig)}
    tr = {k: v for k, v in (meta.get("training") or {}).items() if k in known and k != "augment"}
    aug = (meta.get("training") or {}).get("augment") or {}
    aug = {k: v for k, v in aug.items() if k in {f.name for f in fields(AugmentConfig)}}
    cfg = replace(TrainConfig(**tr, augment=AugmentConfig(**aug)), name=args.name,
                  models_dir=str(args.models_dir), tta=not args.no_tta,
                  tta_shift=0 if args.no_tta else args.tta_shift)
    if args.data:
        cfg = replace(cfg, data=args.data)
    # The split the source was validated on (recorded with it), not a fresh one.
    seeds = [cfg.seed if s is None else s for s in map(recorded_split_seed, args.src)]
    if len(set(seeds)) > 1:
        print(f"warning: the members were trained on different data splits (seeds "
              f"{sorted(set(seeds))}): each saw some of the others' validation images, so the "
              "ensemble's val accuracy is optimistic", file=sys.stderr)
    split_seed = seeds[0]
    try:
        ds = load_dataset(cfg.data, seed=split_seed, detect=cfg.detect, cache_dir=cfg.cache_dir)
    except (OSError, ValueError) as e:
        print(f"error: cannot load the dataset {cfg.data}: {e}", file=sys.stderr)
        return 2

    keras.mixed_precision.set_global_policy("float32")
    # an already test-time-averaged model: start from the network inside
    plains = []
    for src in args.src:
        try:
            plains.append(to_float32(without_tta(keras.models.load_model(src / "model.keras"))))
        except Exception as e:  # noqa: BLE001 - Keras raises many types for a bad file
            print(f"error: cannot load {src / 'model.keras'}: {e}", file=sys.stderr)
            return 2
    try:
        plain = ensemble(plains) if len(plains) > 1 else plains[0]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model, report = export_candidate(plain, ds, tta=cfg.tta, shift=cfg.tta_shift)
    export_cfg: Any = cfg
    if len(plains) > 1:
        report["members"] = []
        for src, m, net in zip(args.src, metas, plains):
            wrapped = with_tta(net, cfg.tta_shift) if cfg.tta else net
            figures = {}
            for split in ("test", "val"):  # one evaluation per split
                r = evaluate_model(wrapped, getattr(ds, split))
                figures[split] = {k: r[k] for k in ("accuracy", "macro_f1")}
            report["members"].append({"source": str(src), "params": int(net.count_params()),
                                      **figures, "training": m.get("training") or {}})
        export_cfg = {**asdict(cfg), "ensemble_command": " ".join(
            ["python tools/reexport.py", *map(str, args.src), "--name", args.name]
            + (["--no-tta"] if not cfg.tta else [])
            + ([f"--tta-shift {cfg.tta_shift}"] if cfg.tta_shift else [])
            + (["--int8-only"] if args.int8_only else []))}
    elif (meta.get("architecture") or {}).get("ensemble"):
        report["members"] = meta["architecture"]["ensemble"]  # re-exporting an ensemble
    minutes = args.train_minutes
    if minutes is None:  # an ensemble's is the sum of its members'
        known_minutes = [m for m in map(_card_minutes, args.src) if m is not None]
        if len(known_minutes) == len(args.src):
            minutes = round(sum(known_minutes), 1)
    report["train_minutes"] = minutes
    report["weights"] = (meta.get("architecture") or {}).get("weights", "scratch")
    model_dir = export_model(model, args.models_dir / args.name, export_cfg, ds.info,
                             report)
    if not args.no_convert:
        convert_export(model_dir, ds, keras_report=report,
                       quantize_modes=("dynamic",) if args.int8_only else ("none", "dynamic"))
    summary = {"test": {k: report[k] for k in ("n", "accuracy", "macro_f1")},
               "val": report["val"],
               "without_tta": report.get("without_tta")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
