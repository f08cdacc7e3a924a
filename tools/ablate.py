"""Short-budget training comparisons: class balance (class weights / SMOTE / none) and vflip.

Every variant trains the same model for the same epochs on the same random subset of the
training split (``run.py train`` settings otherwise), then reports validation and test accuracy
and macro-F1. Training small models from scratch for a few epochs on 2 CPU cores says little
(they barely leave chance level), so with ``--init`` every variant instead fine-tunes one
trained checkpoint at a low learning rate: the comparison then shows how each balance method
moves a decent model's decision boundaries. The issue asks to choose the balance method by
validation macro-F1 and to keep vertical flips off if they measurably hurt; this measures it.

    python tools/ablate.py --data ../shared/data/fer2013-train-validation.zip \
        --init runs/default/best.keras --limit 10000 --epochs 3 --out runs/ablate

Results go to ``OUT/ablate.json`` and a Markdown table on stdout. A variant already in the JSON
is not run again (so an interrupted comparison can go on).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: name -> (balance, vflip)
VARIANTS: dict[str, tuple[str, bool]] = {
    "class_weight": ("class_weight", False),
    "smote": ("smote", False),
    "none": ("none", False),
    "class_weight+vflip": ("class_weight", True),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="runs/ablate")
    ap.add_argument("--init", help="fine-tune this trained .keras checkpoint (else from scratch)")
    ap.add_argument("--lr", type=float, default=None,
                    help="peak learning rate (default 1e-4 with --init, else 1e-3)")
    ap.add_argument("--width", type=float, default=0.125, help="from scratch: model width")
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from training.augment import AugmentConfig
    from training.data import DatasetError
    from training.train import TrainConfig, train

    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"error: unknown variant(s) {unknown}; choose from {list(VARIANTS)}",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res_path = out / "ablate.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}
    if args.init and not Path(args.init).is_file():
        print(f"error: --init {args.init}: no such checkpoint", file=sys.stderr)
        return 2
    lr = args.lr or (1e-4 if args.init else 1e-3)
    base = TrainConfig(data=args.data, width=args.width, limit=args.limit, epochs=args.epochs,
                       lr=lr, schedule="cosine", warmup_epochs=0 if args.init else 1,
                       patience=args.epochs, precision=args.precision,
                       jit_compile=args.precision == "float32", export=False, verbose=2,
                       resume=bool(args.init),
                       overwrite=True)  # a variant without a result (interrupted) starts over
    for name in names:
        if name in results:
            continue
        balance, vflip = VARIANTS[name]
        cfg = replace(base, out=str(out / name.replace("+", "_")), balance=balance,
                      augment=AugmentConfig(vflip=vflip))
        if args.init:  # start as a resumed run at epoch 0 of the given checkpoint
            run = Path(cfg.out)
            run.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.init, run / "last.keras")
            (run / "state.json").write_text(json.dumps({"epoch": 0, "best_val_accuracy": 0.0}))
            (run / "origin.json").write_text(json.dumps({"weights": "scratch"}))
        t0 = time.time()
        try:
            rep = train(cfg)
        except DatasetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        results[name] = {"val_accuracy": rep["val"]["accuracy"], "val_macro_f1":
                         rep["val"]["macro_f1"], "test_accuracy": rep["accuracy"],
                         "test_macro_f1": rep["macro_f1"], "minutes": round(
                             (time.time() - t0) / 60, 1)}
        res_path.write_text(json.dumps({**results, "_settings": vars(args)}, indent=2))
    rows = [(n, r) for n, r in results.items() if not n.startswith("_")]
    start = f"fine-tuning {args.init} at lr {lr:g}" if args.init else f"width {args.width}"
    print(f"\n{start}, {args.limit} training images, {args.epochs} epochs each (cosine)\n")
    print("| variant | val accuracy | val macro-F1 | test accuracy | test macro-F1 | minutes |")
    print("|---|---:|---:|---:|---:|---:|")
    for n, r in rows:
        print(f"| {n} | {r['val_accuracy']:.4f} | {r['val_macro_f1']:.4f} | "
              f"{r['test_accuracy']:.4f} | {r['test_macro_f1']:.4f} | {r['minutes']} |")
    bal = [(r["val_macro_f1"], n) for n, r in rows if n in ("class_weight", "smote", "none")]
    if bal:
        print(f"\nbest balance by validation macro-F1: {max(bal)[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
