"""``python run.py bench-detect``: face detection quality and cost of the detector modes.

Prints, for each mode (``core.faces.MODES``, or a candidate of :data:`CANDIDATES`):

1. Recall of ground-truth faces by height (24-48, 48-96, 96+ px, and all >= 24 px) and
   precision, on a folder in the ``face_boxes_dev`` format (``boxes.json``: file ->
   ``[[x, y, w, h], ...]``, optional ``"ignore"``/``"attrs"``), with the median ms per image.
2. The median detection cost per frame at 640x480, 1280x720 and 1920x1080, measured in one run
   (modes interleaved), and its ratio to ``fast`` (the detector before the issue: BlazeFace
   short-range on the whole frame letterboxed to 128x128).
3. What each mode finds in a video (frames with at least one face, mean faces per frame).
4. Live recall of small real faces in a video-call gallery built from the labelled dev clips
   (``bench.gallery``).

The matching rule (:func:`match_image`): detections are taken strongest first; each one matches
the not yet matched ground-truth box with the highest IoU among those it overlaps at IoU >= 0.3
*or* whose box holds the detection's centre (WIDER boxes are tight, brows to chin; BlazeFace's
are larger). A match with a box under 24 px tall (or one in ``"ignore"``) is ignored: neither a
hit nor a false face. Any other detection is false, including a second detection of a face
already matched. Recall counts boxes >= 24 px tall.

``--grid`` runs every candidate on the "tune" half of the folder (files at even positions of
the sorted names) and applies :data:`SELECTION_RULE`, then reports the chosen candidate on the
"check" half (odd positions) and on all files.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import cv2
import numpy as np

from bench.cpu import cpu_model
from core.faces import Detection, DetectorMode, FaceDetector, FrameScan, Level, resolve_mode

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BOXES = ROOT.parent / "shared" / "data" / "face_boxes_dev"
DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "videos" / "street_group_1080p.mp4"
DEFAULT_CLIPS = ROOT.parent / "shared" / "data" / "labeled_videos_dev"
#: Faces shorter than this (ground-truth box height, px) are not counted.
MIN_FACE_PX = 24
#: (label, low, high) of the recall columns; high None: no upper bound.
SIZE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("24-48", 24, 48), ("48-96", 48, 96), ("96+", 96, None))
MATCH_IOU = 0.3
FRAME_SIZES: tuple[tuple[int, int], ...] = ((640, 480), (1280, 720), (1920, 1080))
#: The rule ``--grid`` applies (stated before the grid was run; see README "Face detection").
SELECTION_RULE = ("among candidates with precision >= 0.93 on the tune half (0.03 above the "
                  "0.90 goal, as a margin for unseen images), the highest recall of faces >= "
                  "24 px; candidates within 0.01 of that recall count as equal and the cheapest "
                  "(median ms per image) wins")
MIN_PRECISION = 0.93
RECALL_TIE = 0.01

Box = tuple[int, int, int, int]


# --------------------------------------------------------------------------- candidates

def _candidates() -> dict[str, DetectorMode]:
    """The grid of detector configurations measured by ``--grid`` (named ``model-passes@t``)."""
    pyramids: dict[str, tuple[tuple[str, float | None, int | None], ...]] = {
        # name: passes of (model, scale, tile); tiles overlap by a quarter of their side
        "full-whole": (("full", None, None),),
        "full-x0.5": (("full", 0.5, 256),),
        "full-x0.75": (("full", 0.75, 256),),
        "full-x0.75+x0.375": (("full", 0.75, 256), ("full", 0.375, 256)),
        "full-x0.5+fit": (("full", 0.5, 256), ("full", None, None)),
        "sparse-x0.5": (("sparse", 0.5, 256),),
        "back-x0.5": (("back", 0.5, 256),),
        "short-x0.5": (("short", 0.5, 256),),
    }
    out = {}
    for name, passes in pyramids.items():
        for t in (0.5, 0.4, 0.3, 0.25):
            levels = tuple(Level(m, s, tile=tile, overlap=(tile // 4 if tile else 0),
                                 min_score=t) for m, s, tile in passes)
            out[f"{name}@{t:g}"] = DetectorMode(f"{name}@{t:g}", levels)
    # Tiles at 0.5x, then 0.25x, ... until the image fits one tile.
    for coarse in (None, 0.5):
        for t in (0.5, 0.4, 0.3, 0.25):
            name = f"full-x0.5-pyramid@{t:g}" + (f"/{coarse:g}" if coarse else "")
            out[name] = DetectorMode(name, (Level("full", 0.5, tile=256, overlap=64,
                                                  min_score=t, pyramid=True,
                                                  coarse_min_score=coarse),))
    # The live mode's shape (one pass over the whole frame, at most 640 px) at each threshold.
    for scale in (0.25, 0.3):
        for t in (0.5, 0.4, 0.3, 0.25):
            name = f"full-x{scale:g}-whole@{t:g}"
            out[name] = DetectorMode(name, (Level("full", scale, min_score=t, max_side=640),))
    # The accurate mode's shape (tiles + a whole-image pass at 0.5 for faces too big for a
    # tile: full-range fitted, or short-range letterboxed) at each threshold.
    for big, lv in (("full-fit", Level("full", None, min_score=0.5)),
                    ("short-fit", Level("short", None, tile=128, min_score=0.5))):
        for t in (0.5, 0.4, 0.3, 0.25):
            name = f"full-x0.5+{big}@{t:g}"
            out[name] = DetectorMode(name, (Level("full", 0.5, tile=256, overlap=64,
                                                  min_score=t), lv))
    return out


CANDIDATES: dict[str, DetectorMode] = _candidates()


#: Suffix of a mode name for what a video stream's scan finds on a still scene after one cycle.
CYCLE = "-cycle"


def mode_by_name(name: str) -> DetectorMode:
    """A mode of ``core.faces.MODES`` or a candidate of :data:`CANDIDATES`; ``live-cycle``: the
    live mode with its video scan pass as a level (a still scene after one scan cycle)."""
    if name in CANDIDATES:
        return CANDIDATES[name]
    try:
        if name.endswith(CYCLE):
            mode = resolve_mode(name[: -len(CYCLE)])
            if mode.scan is None:
                raise ValueError(f"mode {mode.name!r} has no video scan pass")
            return mode.with_scan_as_level()
        return resolve_mode(name)
    except ValueError as exc:
        raise ValueError(f"{exc} (also: live-cycle, or a candidate of --list-candidates)"
                         ) from None


# --------------------------------------------------------------------------- ground truth

@dataclass
class BoxFolder:
    """A folder of images with ground-truth face boxes (``boxes.json``)."""

    folder: Path
    boxes: dict[str, list[Box]]
    ignore: dict[str, list[Box]] = field(default_factory=dict)

    @property
    def files(self) -> list[str]:
        return sorted(self.boxes)


def load_boxes(folder: Path | str) -> BoxFolder:
    """Read ``folder/boxes.json`` (file -> boxes; ``"ignore"`` and ``"attrs"`` are optional)."""
    folder = Path(folder)
    raw = json.loads((folder / "boxes.json").read_text())
    boxes = {k: [tuple(int(v) for v in b) for b in bs] for k, bs in raw.items()
             if k not in ("ignore", "attrs")}
    ignore = {k: [tuple(int(v) for v in b) for b in bs]
              for k, bs in (raw.get("ignore") or {}).items()}
    return BoxFolder(folder, boxes, ignore)  # type: ignore[arg-type]


def split_files(files: Sequence[str], split: str) -> list[str]:
    """``all``, ``tune`` (even positions of the sorted names) or ``check`` (odd positions)."""
    files = sorted(files)
    if split == "all":
        return files
    if split == "tune":
        return files[0::2]
    if split == "check":
        return files[1::2]
    raise ValueError(f"split must be all, tune or check, not {split!r}")


# --------------------------------------------------------------------------- matching

@dataclass
class ImageMatch:
    """One image: detections that hit a counted face, false ones, ignored ones, and for each
    ground-truth box whether a detection found it."""

    hits: int
    false: int
    ignored: int
    found: list[bool]


def _xyxy(boxes: Iterable[Sequence[float]]) -> np.ndarray:
    a = np.array([[x, y, x + w, y + h] for x, y, w, h in boxes], np.float64)
    return a.reshape(-1, 4)


def match_image(dets: Sequence[Detection], gts: Sequence[Box], ignore: Sequence[Box] = (),
                min_px: int = MIN_FACE_PX, iou: float = MATCH_IOU) -> ImageMatch:
    """Match one image's detections to its ground truth (the rule in the module docstring)."""
    g = _xyxy(list(gts) + list(ignore))
    counted = np.array([h >= min_px for *_, h in gts] + [False] * len(ignore), bool)
    used = np.zeros(len(g), bool)
    hits = false = ignored = 0
    for d in sorted(dets, key=lambda d: -d.score):
        x, y, w, h = d.box
        b = np.array([x, y, x + w, y + h], np.float64)
        if len(g) == 0:
            false += 1
            continue
        ix = np.clip(np.minimum(b[2], g[:, 2]) - np.maximum(b[0], g[:, 0]), 0, None)
        iy = np.clip(np.minimum(b[3], g[:, 3]) - np.maximum(b[1], g[:, 1]), 0, None)
        inter = ix * iy
        union = w * h + (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]) - inter
        ious = inter / np.maximum(union, 1e-9)
        cx, cy = x + w / 2, y + h / 2
        holds = (g[:, 0] <= cx) & (cx <= g[:, 2]) & (g[:, 1] <= cy) & (cy <= g[:, 3])
        ok = ((ious >= iou) | holds) & ~used
        if not ok.any():
            false += 1
            continue
        j = int(np.argmax(np.where(ok, ious + 1e-6 * holds, -1.0)))
        used[j] = True
        if counted[j]:
            hits += 1
        else:
            ignored += 1
    return ImageMatch(hits, false, ignored, [bool(u) for u in used[: len(gts)]])


# --------------------------------------------------------------------------- evaluation

@dataclass
class DetectionEval:
    """Quality of one mode on one folder (and split)."""

    mode: str
    images: int
    #: bucket label -> [found, total]; "all" is every face >= MIN_FACE_PX.
    recall_counts: dict[str, list[int]]
    hits: int
    false: int
    ignored: int
    ms_per_image: float

    def recall(self, bucket: str = "all") -> float:
        found, total = self.recall_counts[bucket]
        return found / total if total else float("nan")

    @property
    def precision(self) -> float:
        n = self.hits + self.false
        return self.hits / n if n else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "images": self.images,
                "recall": {k: round(self.recall(k), 4) for k in self.recall_counts},
                "faces": {k: v[1] for k, v in self.recall_counts.items()},
                "precision": round(self.precision, 4), "hits": self.hits, "false": self.false,
                "ignored": self.ignored, "ms_per_image": round(self.ms_per_image, 2)}


def _bucket(h: int) -> str | None:
    for label, lo, hi in SIZE_BUCKETS:
        if h >= lo and (hi is None or h < hi):
            return label
    return None


def _resized(img: np.ndarray, gts: Sequence[Box], width: int) -> tuple[np.ndarray, list[Box]]:
    """``img`` scaled to ``width`` px wide (as a camera of that width would see the scene), and
    its boxes scaled alike."""
    s = width / img.shape[1]
    out = cv2.resize(img, (width, max(1, round(img.shape[0] * s))),
                     interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return out, [tuple(int(round(v * s)) for v in b) for b in gts]  # type: ignore[misc]


def evaluate(detector: FaceDetector, data: BoxFolder, files: Sequence[str] | None = None,
             min_px: int = MIN_FACE_PX, width: int | None = None) -> DetectionEval:
    """Run ``detector`` on each image of ``data`` (or ``files``) and match (see module doc);
    ``width``: first scale each image (and its boxes) to this width."""
    files = data.files if files is None else list(files)
    counts = {label: [0, 0] for label, *_ in SIZE_BUCKETS}
    counts["all"] = [0, 0]
    hits = false = ignored = 0
    times = []
    for name in files:
        img = cv2.imread(str(data.folder / name), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"unreadable image {data.folder / name}")
        gts, ignore = data.boxes[name], data.ignore.get(name, [])
        if width:
            _, ignore = _resized(img, ignore, width)
            img, gts = _resized(img, gts, width)
        t0 = time.perf_counter()
        dets = detector.detect(img)
        times.append((time.perf_counter() - t0) * 1e3)
        m = match_image(dets, gts, ignore, min_px)
        hits, false, ignored = hits + m.hits, false + m.false, ignored + m.ignored
        for (*_, h), found in zip(gts, m.found):
            label = _bucket(h) if h >= min_px else None
            if label is None:
                continue
            for k in (label, "all"):
                counts[k][0] += int(found)
                counts[k][1] += 1
    ms = statistics.median(times) if times else float("nan")
    return DetectionEval(detector.mode.name, len(files), counts, hits, false, ignored, ms)


# --------------------------------------------------------------------------- cost

def sample_frame(size: tuple[int, int], data: BoxFolder | None = None) -> np.ndarray:
    """A BGR frame of ``size`` (w, h) to time detection on: the folder's first image resized to
    cover it, else a mid-grey frame with one upscaled fixture face."""
    w, h = size
    if data is not None and data.files:
        img = cv2.imread(str(data.folder / data.files[0]), cv2.IMREAD_COLOR)
        if img is not None:
            s = max(w / img.shape[1], h / img.shape[0])
            size = (max(w, round(img.shape[1] * s)), max(h, round(img.shape[0] * s)))
            big = cv2.resize(img, size, interpolation=cv2.INTER_AREA if s < 1
                             else cv2.INTER_LINEAR)
            return np.ascontiguousarray(big[:h, :w])
    from bench.face_video import face_frame

    side = min(w, h) // 2
    frame, _ = face_frame(0, (w - side) // 2, (h - side) // 2, side, size=(w, h))
    return frame


def frame_costs(detectors: dict[str, FaceDetector], sizes: Sequence[tuple[int, int]],
                repeats: int = 50, data: BoxFolder | None = None) -> dict[str, dict[str, float]]:
    """Median ms per frame of each detector at each size, measured in one run: for each size,
    the detectors take turns frame by frame (so load from other work affects them alike). A
    mode with a video scan pass also gets ``"<mode> window"``: one window of it (in a video,
    every other frame costs that instead of the whole-frame passes).
    Returns ``{size label: {mode: ms}}``."""
    out: dict[str, dict[str, float]] = {}
    for w, h in sizes:
        frame = sample_frame((w, h), data)
        runs: dict[str, Callable[[], object]] = {}
        for k, det in detectors.items():
            runs[k] = partial(det.detect, frame)
            if det.windows(w, h):
                runs[f"{k} window"] = partial(det.detect_window, frame, 0)
        times: dict[str, list[float]] = {k: [] for k in runs}
        for run in runs.values():  # warm up: interpreters, caches
            run()
        for _ in range(repeats):
            for k, run in runs.items():
                t0 = time.perf_counter()
                run()
                times[k].append((time.perf_counter() - t0) * 1e3)
        out[f"{w}x{h}"] = {k: statistics.median(v) for k, v in times.items()}
    return out


def video_faces(detector: FaceDetector, path: Path | str, max_frames: int = 0
                ) -> dict[str, float]:
    """Frames read, frames with >= 1 face, mean faces per frame, median ms per frame; the
    frames go through one ``FrameScan``, as a live stream's do (its faces counted before a
    tracker drops carried ones that continue no track)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}")
    n = with_face = faces = 0
    times = []
    scan = FrameScan(detector)
    try:
        while not max_frames or n < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            t0 = time.perf_counter()
            k = len(scan.detect(frame)[0])
            times.append((time.perf_counter() - t0) * 1e3)
            n += 1
            with_face += k > 0
            faces += k
    finally:
        cap.release()
    return {"frames": n, "frames_with_face": with_face, "mean_faces": faces / n if n else 0.0,
            "ms_per_frame": statistics.median(times) if times else float("nan")}


# --------------------------------------------------------------------------- selection

def select(evals: Sequence[DetectionEval], min_precision: float = MIN_PRECISION,
           tie: float = RECALL_TIE) -> DetectionEval | None:
    """:data:`SELECTION_RULE` over ``evals`` (None when no candidate is precise enough)."""
    ok = [e for e in evals if e.precision >= min_precision]
    if not ok:
        return None
    best = max(e.recall() for e in ok)
    return min((e for e in ok if e.recall() >= best - tie), key=lambda e: e.ms_per_image)


# --------------------------------------------------------------------------- output

def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)]
                     + [line(r) for r in cells[1:]])


def quality_table(evals: Sequence[DetectionEval]) -> str:
    labels = [label for label, *_ in SIZE_BUCKETS]
    rows = []
    for e in evals:
        rows.append([e.mode] + [f"{e.recall(k):.3f} ({e.recall_counts[k][1]})" for k in labels]
                    + [f"{e.recall():.3f}", f"{e.precision:.3f}", e.hits, e.false, e.ignored,
                       f"{e.ms_per_image:.1f}"])
    return table(["mode"] + [f"recall {k}" for k in labels]
                 + [f"recall >={MIN_FACE_PX}", "precision", "hits", "false", "ignored",
                    "ms/image"], rows)


def cost_table(costs: dict[str, dict[str, float]], base: str = "fast") -> str:
    modes = list(dict.fromkeys(m for per in costs.values() for m in per))
    rows = []
    for m in modes:
        row: list[Any] = [m]
        for size, per in costs.items():
            if m not in per:  # a scan window where the mode has no scan at this size
                row.append("-")
                continue
            ratio = per[m] / per[base] if base in per and per[base] > 0 else float("nan")
            row.append(f"{per[m]:.2f} ({ratio:.2f}x)")
        rows.append(row)
    return table(["mode"] + [f"ms/frame {s} (x {base})" for s in costs], rows)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``640x480,1280x720`` -> ``[(640, 480), (1280, 720)]``."""
    out = []
    for part in text.split(","):
        w, h = part.lower().split("x")
        out.append((int(w), int(h)))
    return out


# --------------------------------------------------------------------------- command

def run(boxes: str | Path | None = DEFAULT_BOXES,
        modes: Sequence[str] = ("fast", "live", "live-cycle", "accurate"), split: str = "all",
        width: int = 0, sizes: Sequence[tuple[int, int]] = FRAME_SIZES, repeats: int = 50,
        video: str | Path | None = DEFAULT_VIDEO, video_frames: int = 0, grid: bool = False,
        json_path: str | Path | None = None,
        gallery: Callable[[dict[str, FaceDetector]], dict[str, Any]] | None = None) -> int:
    """``run.py bench-detect``: print the tables (and write them as JSON to ``json_path``).
    ``boxes``: the folder (skipped when it is the default one and missing); ``modes``: names of
    ``core.faces.MODES`` or :data:`CANDIDATES`; ``width``: scale images to this width first;
    ``sizes``: frame sizes of the cost table; ``video``: skipped when missing; ``gallery``:
    prints and returns the gallery table for the video modes (not ``accurate``), e.g.
    ``bench.gallery.run`` on a folder of clips. Returns 0, or 2 for a bad mode or folder."""
    try:
        chosen = {n: mode_by_name(n) for n in modes}
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    data: BoxFolder | None = None
    if boxes is not None and (Path(boxes) / "boxes.json").exists():
        data = load_boxes(boxes)
    elif boxes is not None and Path(boxes) != DEFAULT_BOXES:
        print(f"error: no boxes.json in {boxes}")
        return 2
    result: dict[str, Any] = {"cpu": cpu_model(),
                              "modes": {n: m.describe() for n, m in chosen.items()}}
    print(f"CPU: {result['cpu']}; detection runs on one thread")
    for n, m in chosen.items():
        print(f"  {n}: {m.describe()}")
    detectors = {n: FaceDetector(mode=m) for n, m in chosen.items()}
    if data is not None:
        files = split_files(data.files, split)
        scaled = f", scaled to {width} px wide" if width else ""
        print(f"\nQuality on {data.folder} ({split}: {len(files)} images{scaled}; recall "
              f"of faces >= {MIN_FACE_PX} px by height, faces in brackets; matching: IoU >= "
              f"{MATCH_IOU} or centre inside)")
        evals = [evaluate(d, data, files, width=width or None) for d in detectors.values()]
        print(quality_table(evals))
        result["quality"] = [e.as_dict() for e in evals]
        if grid:
            result["grid"] = _grid(data)
    if sizes:
        timed = {n: d for n, d in detectors.items() if not n.endswith(CYCLE)}
        timed.setdefault("fast", FaceDetector(mode="fast"))
        print(f"\nDetection cost per frame (median of {repeats}, modes interleaved; "
              f"ratio to fast = the detector before this issue)")
        costs = frame_costs(timed, sizes, repeats, data)
        print(cost_table(costs))
        result["cost_ms"] = costs
    if video is not None and Path(video).exists():
        print(f"\nVideo {Path(video).name}"
              + (f" (first {video_frames} frames)" if video_frames else ""))
        rows = []
        result["video"] = {}
        for n, d in detectors.items():
            if n.endswith(CYCLE):
                continue
            v = video_faces(d, video, video_frames)
            result["video"][n] = v
            rows.append([n, v["frames"], v["frames_with_face"], f"{v['mean_faces']:.2f}",
                         f"{v['ms_per_frame']:.1f}"])
        print(table(["mode", "frames", "frames with a face", "faces/frame", "ms/frame"], rows))
    if gallery is not None:
        video_modes = {n: d for n, d in detectors.items()
                       if not n.endswith(CYCLE) and not d.mode.mtcnn}
        if video_modes:
            result["gallery"] = gallery(video_modes)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2))
    return 0


def list_candidates() -> None:
    """Print the candidate names and their passes."""
    for name, m in CANDIDATES.items():
        print(f"{name}: {m.describe()}")


def _grid(data: BoxFolder) -> dict[str, Any]:
    """Every candidate on the tune half, the rule's choice, and the choice on check and all."""
    tune = split_files(data.files, "tune")
    print(f"\nGrid on the tune half ({len(tune)} images). Rule: {SELECTION_RULE}.")
    evals = []
    for name, m in CANDIDATES.items():
        e = evaluate(FaceDetector(mode=m), data, tune)
        evals.append(e)
        print(quality_table([e]).splitlines()[-1], flush=True)
    chosen = select(evals)
    out: dict[str, Any] = {"tune": [e.as_dict() for e in evals], "rule": SELECTION_RULE,
                           "chosen": chosen.mode if chosen else None}
    if chosen is None:
        print("no candidate meets the precision floor")
        return out
    det = FaceDetector(mode=CANDIDATES[chosen.mode])
    check = evaluate(det, data, split_files(data.files, "check"))
    every = evaluate(det, data)
    print(f"\nChosen: {chosen.mode} ({CANDIDATES[chosen.mode].describe()})")
    print(quality_table([chosen, check, every]))
    print("(rows: tune, check, all)")
    out["check"] = check.as_dict()
    out["all"] = every.as_dict()
    return out
