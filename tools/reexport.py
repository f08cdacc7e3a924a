"""Re-export a trained model folder with the current export code (float32, mirror-averaging TTA).

`run.py train` exports its best checkpoint at the end of a run. When a run's folder is gone (or
the export code changed after the run started) this rebuilds the export from the model folder
alone: it loads ``SRC/model.keras``, casts it to float32, wraps it in the horizontal-flip
test-time augmentation (unless ``--no-tta``), evaluates it on the same splits as training
(``metadata.json`` holds the data path and seed) and writes ``models/NAME`` with the usual
``model.keras``, ``metadata.json`` and ``MODEL_CARD.md``. The training settings in the metadata
are kept; the training time of the original run is kept when known.

    python tools/reexport.py models/candidate --name default
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path, help="model folder with model.keras and metadata.json")
    ap.add_argument("--name", default="default", help="name of the exported folder (models/NAME)")
    ap.add_argument("--models-dir", type=Path, default=ROOT / "models")
    ap.add_argument("--data", default=None, help="dataset (default: the one in metadata.json)")
    ap.add_argument("--no-tta", action="store_true", help="export without mirror averaging")
    ap.add_argument("--no-convert", action="store_true",
                    help="skip the LiteRT fp32/int8 copies (default: written and evaluated)")
    ap.add_argument("--train-minutes", type=float, default=None,
                    help="training time to report (default: from the source model card)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    meta_path = args.src / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        print(f"error: cannot read {meta_path}: {e}", file=sys.stderr)
        return 2
    if not (args.src / "model.keras").is_file():
        print(f"error: {args.src / 'model.keras'} not found", file=sys.stderr)
        return 2

    import keras

    from training.augment import AugmentConfig
    from training.data import load_dataset
    from training.export import export_model
    from training.model import to_float32, without_hflip_tta
    from training.train import TrainConfig, convert_export, export_candidate

    known = {f.name for f in fields(TrainConfig)}
    tr = {k: v for k, v in (meta.get("training") or {}).items() if k in known and k != "augment"}
    aug = (meta.get("training") or {}).get("augment") or {}
    aug = {k: v for k, v in aug.items() if k in {f.name for f in fields(AugmentConfig)}}
    cfg = replace(TrainConfig(**tr, augment=AugmentConfig(**aug)), name=args.name,
                  models_dir=str(args.models_dir), tta=not args.no_tta)
    if args.data:
        cfg = replace(cfg, data=args.data)
    try:
        ds = load_dataset(cfg.data, seed=cfg.seed, detect=cfg.detect, cache_dir=cfg.cache_dir)
    except (OSError, ValueError) as e:
        print(f"error: cannot load the dataset {cfg.data}: {e}", file=sys.stderr)
        return 2

    keras.mixed_precision.set_global_policy("float32")
    # an already mirror-averaged model: start from the network inside
    plain = to_float32(without_hflip_tta(keras.models.load_model(args.src / "model.keras")))
    model, report = export_candidate(plain, ds, tta=not args.no_tta)
    minutes = args.train_minutes
    if minutes is None:
        card = args.src / "MODEL_CARD.md"
        for line in card.read_text(encoding="utf-8").splitlines() if card.exists() else []:
            if line.startswith("Training took "):
                minutes = float(line.split()[2])
    report["train_minutes"] = minutes
    report["weights"] = (meta.get("architecture") or {}).get("weights", "scratch")
    model_dir = export_model(model, args.models_dir / args.name, cfg, ds.info, report)
    if not args.no_convert:
        convert_export(model_dir, ds, keras_report=report)
    summary = {"test": {k: report[k] for k in ("n", "accuracy", "macro_f1")},
               "val": report["val"],
               "without_tta": report.get("without_tta")}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
