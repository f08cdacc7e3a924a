"""Short-budget training comparisons: class balance (class weights / SMOTE / none) and vflip.

Every variant trains the same small model for the same epochs on the same random subset of the
training split (``run.py train`` settings otherwise), then reports validation and test accuracy
and macro-F1. The issue asks to choose the balance method by validation macro-F1 and to keep
vertical flips off if they measurably hurt; this is the measurement.

    python tools/ablate.py --data ../shared/data/fer2013-train-validation.zip \
        --width 0.125 --limit 10000 --epochs 6 --out runs/ablate

Results go to ``OUT/ablate.json`` and a Markdown table on stdout. A variant already in the JSON
is not run again (so an interrupted comparison can go on).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=6)
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
    base = TrainConfig(data=args.data, width=args.width, limit=args.limit, epochs=args.epochs,
                       schedule="cosine", patience=args.epochs, precision=args.precision,
                       jit_compile=args.precision == "float32", export=False, verbose=2)
    for name in names:
        if name in results:
            continue
        balance, vflip = VARIANTS[name]
        cfg = replace(base, out=str(out / name.replace("+", "_")), balance=balance,
                      augment=AugmentConfig(vflip=vflip))
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
    print(f"\nwidth {args.width}, {args.limit} training images, {args.epochs} epochs each\n")
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
