#!/usr/bin/env python3
"""FaceDApps command line: serve (default) | train | evaluate | predict | convert | bench.

Arguments and environment variables are read here only; everything below gets config objects.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL = ROOT / "models" / "default"


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=os.environ.get("FACEDAPPS_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("FACEDAPPS_PORT", "8080")))
    p.add_argument("--model", default=os.environ.get("FACEDAPPS_MODEL", str(DEFAULT_MODEL)))
    p.add_argument("--backend", default=os.environ.get("FACEDAPPS_BACKEND", "auto"),
                   help="classifier backend: auto (default), keras, litert-int8, litert-fp32")
    p.add_argument("--max-sessions", type=int, default=16, help="global session capacity")
    p.add_argument("--max-sessions-per-ip", type=int, default=4)
    p.add_argument("--max-batch", type=int, default=8, help="batcher: max faces per batch")
    p.add_argument("--max-wait-ms", type=float, default=0.0,
                   help="batcher: max wait for more faces (0: take what is queued)")
    p.add_argument("--detect-workers", type=int, default=0,
                   help="threads for frame conversion + face detection (0: one per core)")
    p.add_argument("--infer-threads", type=int, default=0,
                   help="CPU classifier runtime threads (0: automatic)")
    p.add_argument("--ice-server", action="append", default=None, metavar="URL",
                   help="STUN/TURN URL (repeatable; env FACEDAPPS_ICE_SERVERS, comma separated)")
    p.add_argument("--turn-username", default=os.environ.get("FACEDAPPS_TURN_USERNAME"))
    p.add_argument("--turn-credential", default=os.environ.get("FACEDAPPS_TURN_CREDENTIAL"))
    p.add_argument("--ngrok", action="store_true",
                   help="also publish on a public HTTPS URL through an ngrok tunnel (needs "
                        "--basic-auth or --access-token, or --insecure-public)")
    p.add_argument("--ngrok-authtoken", default=os.environ.get("NGROK_AUTHTOKEN"),
                   help="ngrok authtoken (env NGROK_AUTHTOKEN; https://dashboard.ngrok.com)")
    p.add_argument("--ngrok-path", default=os.environ.get("PYNGROK_NGROK_PATH"),
                   help="ngrok agent binary (env PYNGROK_NGROK_PATH; default: pyngrok's "
                        "copy, downloaded on first use)")
    p.add_argument("--basic-auth", default=os.environ.get("FACEDAPPS_BASIC_AUTH"),
                   metavar="USER:PASS", help="basic auth ngrok requires on the public URL "
                   "(password 8+ characters; env FACEDAPPS_BASIC_AUTH)")
    p.add_argument("--access-token", default=os.environ.get("FACEDAPPS_ACCESS_TOKEN"),
                   help="token required on /offer and WebSockets; the page asks for it "
                        "(env FACEDAPPS_ACCESS_TOKEN)")
    p.add_argument("--insecure-public", action="store_true",
                   help="allow a public tunnel without access protection")
    p.add_argument("--log-level", default="INFO")


def cmd_serve(args: argparse.Namespace) -> int:
    _quiet_tf()
    from server.app import ServeError, serve
    from server.config import ServerConfig

    ice = args.ice_server
    if ice is None:
        env = os.environ.get("FACEDAPPS_ICE_SERVERS", "")
        ice = [u.strip() for u in env.split(",") if u.strip()]
    try:
        cfg = ServerConfig(
            host=args.host, port=args.port, model_dir=args.model, backend=args.backend,
            max_sessions=args.max_sessions, max_sessions_per_ip=args.max_sessions_per_ip,
            max_batch_size=args.max_batch, max_wait_ms=args.max_wait_ms,
            detect_workers=args.detect_workers, infer_threads=args.infer_threads,
            ice_servers=tuple(ice), turn_username=args.turn_username,
            turn_credential=args.turn_credential,
            ngrok=args.ngrok, ngrok_authtoken=args.ngrok_authtoken or None,
            ngrok_path=args.ngrok_path or None, basic_auth=args.basic_auth or None,
            access_token=args.access_token or None, insecure_public=args.insecure_public,
        )
        serve(cfg)
    except (ServeError, ValueError) as exc:  # ValueError: ServerConfig refused a setting
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _unit_float(text: str) -> float:
    """argparse type: a number in [0, 1)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), not {v}")
    return v


def cmd_train(args: argparse.Namespace) -> int:
    _quiet_tf()
    from training.augment import AugmentConfig
    from training.data import DatasetError
    from training.train import InitModelError, TrainConfig, train

    cfg = TrainConfig(
        data=args.data, out=args.out, name=args.name, models_dir=args.models_dir,
        weights=None if args.weights == "none" else args.weights, width=args.width,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
        lr_patience=args.lr_patience, resume_lr=args.resume_lr,
        max_minutes=args.max_minutes, balance=args.balance,
        class_weight_power=args.class_weight_power, seed=args.seed, split_seed=args.split_seed,
        detect=args.detect,
        jit_compile=not args.no_jit, precision=args.precision, schedule=args.schedule,
        warmup_epochs=args.warmup_epochs, tta=not args.no_tta, resume=args.resume,
        init=args.init, limit=args.limit,
        label_smoothing=args.label_smoothing, tta_shift=args.tta_shift,
        augment=AugmentConfig(vflip=args.vflip, erase=args.erase), export=not args.no_export,
        convert=not args.no_convert,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    try:
        report = train(cfg)
    except (DatasetError, InitModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: report[k] for k in ("n", "accuracy", "macro_f1", "val", "weights")}))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    _quiet_tf()
    from server.classifier import ModelError, load_classifier
    from training.data import DatasetError
    from training.evaluate import evaluate_path, recorded_split_seed

    recorded = recorded_split_seed(args.model)
    seed = args.seed if args.seed is not None else 1234 if recorded is None else recorded
    try:
        clf = load_classifier(args.model, args.backend)
        report = evaluate_path(args.data, clf.predict_batch, split=args.split, detect=args.detect,
                               seed=seed)
        report.update(model=clf.name, backend=clf.backend)
    except (DatasetError, ModelError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        print(f"n={report['n']} accuracy={report['accuracy']:.4f} "
              f"macro_f1={report['macro_f1']:.4f} no_face={report['no_face']}")
        for label, m in report["per_class"].items():
            print(f"  {label:9s} P={m['precision']:.3f} R={m['recall']:.3f} F1={m['f1']:.3f} "
                  f"n={m['support']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    _quiet_tf()
    from server.classifier import ModelError, load_classifier
    from server.pipeline import FacePipeline, ImageError, decode_image

    try:
        clf = load_classifier(args.model, args.backend)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pipe = FacePipeline()
    rc = 0
    for path in args.images:
        try:
            img = decode_image(Path(path).read_bytes())
            faces = pipe.classify_image(img, clf, detect=args.detect)
            print(json.dumps({"image": path, "width": int(img.shape[1]),
                              "height": int(img.shape[0]), "faces": faces}))
        except (OSError, ImageError) as exc:
            print(json.dumps({"image": path, "error": str(exc)}))
            rc = 1
    return rc


def cmd_convert(args: argparse.Namespace) -> int:
    _quiet_tf()
    from server.classifier import ModelError, load_classifier
    from training.convert import convert_model_dir
    from training.data import DatasetError
    from training.evaluate import evaluate_path

    cache = os.path.join(os.path.expanduser("~"), ".cache", "facedapps")

    def evaluate(backend: str) -> dict:
        clf = load_classifier(args.model, backend)
        return evaluate_path(args.data, clf.predict_batch, split=args.split, cache_dir=cache)

    try:
        meta = convert_model_dir(args.model, args.quantize, evaluate if args.data else None)
    except (ModelError, DatasetError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = {k: v for k, v in meta["files"].items() if k.startswith("tflite")}
    print(json.dumps({"files": files, "backends": meta.get("metrics", {}).get("backends", {})}))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    _quiet_tf()
    from server.bench import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="run.py", description=__doc__)
    sub = ap.add_subparsers(dest="cmd")

    s = sub.add_parser("serve", help="run the streaming server (default)")
    add_serve_args(s)
    s.set_defaults(fn=cmd_serve)

    t = sub.add_parser("train", help="train a model and export it into models/")
    t.add_argument("--data", required=True, help="dataset folder, .zip, or fer2013.csv source")
    t.add_argument("--out", default="runs/default", help="run folder (checkpoints, logs, plots)")
    t.add_argument("--name", default="default", help="exported model name under --models-dir")
    t.add_argument("--models-dir", default=str(ROOT / "models"))
    t.add_argument("--weights", choices=["none", "imagenet"], default="none")
    t.add_argument("--width", type=float, default=0.25, help="VGG16 channel width multiplier")
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--patience", type=int, default=5, help="EarlyStopping patience")
    t.add_argument("--lr-patience", type=int, default=2, help="ReduceLROnPlateau patience")
    t.add_argument("--resume-lr", type=float, default=0.0,
                   help="with --resume: restart at this learning rate (0: keep)")
    t.add_argument("--max-minutes", type=float, default=0.0, help="time budget (0: none)")
    t.add_argument("--balance", choices=["class_weight", "smote", "none"], default="class_weight")
    t.add_argument("--class-weight-power", type=float, default=0.5)
    t.add_argument("--vflip", action="store_true", help="also flip vertically (off by default)")
    t.add_argument("--erase", type=_unit_float, default=0.0,
                   help="random erasing: probability per training image (default 0: off)")
    t.add_argument("--label-smoothing", type=_unit_float, default=0.0,
                   help="label smoothing of the loss, e.g. 0.1 (default 0: off)")
    t.add_argument("--seed", type=int, default=1234)
    t.add_argument("--split-seed", type=int, default=None,
                   help="seed of the train/val split (default: --init's recorded one, else "
                        "--seed)")
    t.add_argument("--detect", choices=["auto", "always", "never"], default="auto")
    t.add_argument("--limit", type=int, default=0, help="use at most N training images")
    t.add_argument("--no-jit", action="store_true", help="disable XLA compilation")
    t.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                   help="bfloat16: mixed precision (fast on CPUs with AMX; use with --no-jit)")
    t.add_argument("--schedule", choices=["plateau", "cosine"], default="plateau",
                   help="learning rate: ReduceLROnPlateau, or cosine decay over --epochs / "
                        "--max-minutes")
    t.add_argument("--warmup-epochs", type=int, default=1, help="cosine: linear warm-up epochs")
    t.add_argument("--no-tta", action="store_true",
                   help="export the plain model (default: averaged with the mirror image)")
    t.add_argument("--tta-shift", type=int, choices=range(0, 9), default=0, metavar="PIXELS",
                   help="also average over the mirror pair shifted this many pixels in 4 "
                        "directions (10 views; default 0: mirror only)")
    t.add_argument("--no-export", action="store_true")
    t.add_argument("--no-convert", action="store_true",
                   help="export model.keras only (default: also the LiteRT fp32/int8 copies)")
    t.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    t.add_argument("--init", default="",
                   help="start from this trained model's weights (models/NAME or a .keras "
                        "file, same --width), e.g. for a second cosine cycle")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a model on a dataset")
    e.add_argument("--data", required=True)
    e.add_argument("--model", default=str(DEFAULT_MODEL))
    e.add_argument("--split", default="test", choices=["test", "val", "train", "all"],
                   help="which split of the dataset (default: its test split)")
    e.add_argument("--seed", type=int, default=None,
                   help="seed of the train/val split (default: the one in the model's "
                        "metadata, else 1234)")
    e.add_argument("--detect", choices=["auto", "always", "never"], default="auto")
    e.add_argument("--backend", default="auto")
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_evaluate)

    pr = sub.add_parser("predict", help="classify the faces in image files")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--model", default=str(DEFAULT_MODEL))
    pr.add_argument("--backend", default="auto")
    pr.add_argument("--detect", choices=["auto", "always", "never"], default="auto")
    pr.set_defaults(fn=cmd_predict)

    c = sub.add_parser("convert", help="write LiteRT fp32/int8 artifacts next to model.keras")
    c.add_argument("--model", default=str(DEFAULT_MODEL))
    c.add_argument("--quantize", nargs="+", choices=["none", "dynamic"],
                   default=["none", "dynamic"], help="none: float32, dynamic: int8 weights")
    c.add_argument("--data", help="dataset: also measure and record each backend's accuracy")
    c.add_argument("--split", default="test", choices=["test", "val", "train", "all"])
    c.set_defaults(fn=cmd_convert)

    b = sub.add_parser("bench", help="benchmark backends, pipeline and live server")
    b.add_argument("--model", default=str(DEFAULT_MODEL))
    b.add_argument("--quick", action="store_true",
                   help="short run: 1 and 2 clients for 5 s, no batching sweep")
    b.add_argument("--out", default=str(ROOT / "bench-out"),
                   help="folder for bench.txt, server logs and the cached test video")
    b.add_argument("--clients", help="live client counts, comma separated (default 1,2,4,8)")
    b.add_argument("--seconds", type=float, help="measured seconds per live run (default 20)")
    b.add_argument("--backend", default="auto", help="server backend for the live runs")
    b.add_argument("--no-live", action="store_true", help="skip the live server runs")
    b.add_argument("--no-sweep", action="store_true", help="skip the batching sweep")
    b.add_argument("--infer-threads", type=int, default=0,
                   help="server classifier threads for the live runs (0: its default)")
    b.add_argument("--detect-workers", type=int, default=0,
                   help="server detection workers for the live runs (0: its default)")
    b.add_argument("--threads-sweep", action="store_true",
                   help="also run the largest client count with 1 and all-core inference "
                        "threads x detection workers")
    b.set_defaults(fn=cmd_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["serve", *argv]
    args = ap.parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
