"""Per-session face tracking and label smoothing (pure Python + NumPy, cheap per frame).

Each detected face is associated with a track by box overlap and centre distance against the
track's constant-velocity prediction: within each group of tracks that compete for the same
detections, the matching with the most matches and then the least total cost (:func:`assign`;
greedy, cheapest pair first, in a group too large to search).
A track survives ``max_missed`` frames without a detection; ids are never reused within one
tracker. A *carried* detection (one the detector kept from an earlier frame, see
``core.faces.FrameScan``) is matched only to a track that no fresh detection of the frame
continues; it keeps that track alive and shows it where its motion predicts, without moving
the track's state, and its last probabilities are reused. A carried detection that continues
no track is dropped (:meth:`FaceTracker.start_frame`): it starts no track.

Every track filters its class probabilities over time with a ``core.temporal`` filter (by
default the exponential average of ``FilterConfig()``; its parameters are per second, so it
behaves the same at any frame rate). The decision (``label``/``score``, and ``uncertain``
below a confidence) comes from the filtered vector; the frame's own probabilities are left to
the caller (``scores``).
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from core.pipeline import face_dict
from core.temporal import UNCERTAIN_BELOW, FilterConfig, LabelFilter

#: A tracked face's probabilities are reused this long before it is classified again (new
#: faces always are); 0 classifies every face in every frame. Chosen on the dev clips
#: (``run.py evaluate-video --reuse-grid``; rule and table in the README): with the distilled
#: 2-pass model, the contrast stretch and the chosen filter the rule picks 0.2 s (0.3 s reacts
#: slower than 0.7 s); one classifier call in three frames at 15 fps.
DEFAULT_REUSE_S = 0.2
#: Minimum IoU between a track's predicted box and a detection for a match.
DEFAULT_IOU_THRESHOLD = 0.3
#: Frames (``update`` calls) a track survives without a detection (0.33 s at 15 fps).
DEFAULT_MAX_MISSED = 5
#: A detection whose centre is within this many face sizes (sqrt of the track's box area) of the
#: prediction may match even below the IoU threshold (small or fast faces) ...
CENTER_GATE = 0.5
#: ... and the gate widens by this much per missed frame (the prediction gets less certain).
#: Both are for frames this far apart (15 fps) or closer; with frames further apart (a video
#: analysed at ``--fps 5``) the gate grows in proportion, as faces move further between them,
#: up to the motion of MAX_PREDICT_S (7.5x: after a longer pause it is not a wider search).
CENTER_GATE_PER_MISS = 0.25
#: Matched boxes differ in area by at most this factor (a face's side does not double).
MAX_AREA_RATIO = 4.0
#: Weight of the EMA on velocity: new measurement vs previous estimate.
VELOCITY_GAIN = 0.5
#: Optimal matching (most matches, then least total cost) for a group of tracks that compete
#: for the same detections when it has at most this many possible matchings (products of each
#: track's candidates + 1); a larger group is matched greedily, cheapest pair first.
MAX_EXACT_SEARCH = 4096
#: Extrapolate a track's motion at most this far ahead (stream paused, frames dropped).
MAX_PREDICT_S = 0.5
#: Time step assumed when ``t`` does not advance between two updates (a nominal 15 fps frame).
NOMINAL_DT = 1.0 / 15.0
#: Cost added per missed frame, so a fresh track wins a tie against a coasting one.
MISS_PENALTY = 0.05

Box = tuple[int, int, int, int]


@dataclass
class TrackedFace:
    """One face of one frame: its track ``id``, the detection ``box`` ``(x, y, w, h)``, and the
    filtered decision (``label``, ``score`` = ``smoothed[label]``, the confidence) with the
    filtered vector ``smoothed``."""

    id: int
    box: Box
    label: str
    score: float
    smoothed: np.ndarray

    @property
    def uncertain(self) -> bool:
        """The filtered confidence is below ``core.temporal.UNCERTAIN_BELOW``."""
        return self.score < UNCERTAIN_BELOW


@dataclass
class FramePlan:
    """One frame between :meth:`FaceTracker.start_frame` and :meth:`FaceTracker.finish_frame`:
    ``keep``, the indices of the detector's faces that are shown (in order), with their
    ``boxes`` and ``carried`` flags (empty: none carried), and ``reuse``: per kept face, the
    probabilities it reuses, or None where the classifier must run (:attr:`need`)."""

    t: float
    keep: list[int]
    boxes: list[Box]
    carried: list[bool]
    reuse: list[np.ndarray | None]

    @property
    def need(self) -> list[int]:
        """Positions (among the kept faces) that go to the classifier."""
        return [i for i, p in enumerate(self.reuse) if p is None]


class _Track:
    __slots__ = ("id", "cx", "cy", "w", "h", "vx", "vy", "t", "missed", "hits", "filter",
                 "smoothed", "raw", "raw_t")

    def __init__(self, track_id: int, t: float, box: Box, probs: np.ndarray,
                 filt: LabelFilter) -> None:
        self.id = track_id
        x, y, w, h = box
        self.cx, self.cy = x + w / 2.0, y + h / 2.0
        self.w, self.h = float(max(w, 1)), float(max(h, 1))
        self.vx = self.vy = 0.0
        self.t = t
        self.missed = 0
        self.hits = 1
        self.filter = filt
        self.smoothed = np.array(probs, dtype=np.float64)
        #: The last probabilities the classifier gave this face, and when (reused by
        #: :meth:`FaceTracker.start_frame` between classifications).
        self.raw = np.array(probs, dtype=np.float64)
        self.raw_t = t

    def predict(self, t: float) -> tuple[float, float]:
        dt = min(max(t - self.t, 0.0), MAX_PREDICT_S)
        return self.cx + self.vx * dt, self.cy + self.vy * dt


def _iou(ax: float, ay: float, aw: float, ah: float,
         bx: float, by: float, bw: float, bh: float) -> float:
    """IoU of two ``(x, y, w, h)`` boxes."""
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0.0 or ih <= 0.0:
        return 0.0
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


class FaceTracker:
    """Stable ids and smoothed labels for the faces of one video session.

    Per processed frame, with its timestamp in seconds (any monotonic clock): :meth:`start_frame`
    with the detector's boxes says which faces to show and which to classify, and
    :meth:`finish_frame` with the classifier's output updates the tracks and returns the face
    objects. (:meth:`update`/:meth:`describe` take a frame's boxes and probabilities in one call,
    when every face is classified.) Calls are serialised by a lock, so consecutive frames may
    come from different threads.
    """

    def __init__(self, labels: Sequence[str], iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                 max_missed: int = DEFAULT_MAX_MISSED, filter: FilterConfig | None = None,
                 smoothing_s: float | None = None, hysteresis: float | None = None) -> None:
        """``filter``: the temporal filter of every track (default: ``FilterConfig()``, the
        exponential average); ``smoothing_s``/``hysteresis`` set that average's parameters."""
        if len(labels) == 0:
            raise ValueError("labels must not be empty")
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], not {iou_threshold}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, not {max_missed}")
        if smoothing_s is not None and smoothing_s < 0.0:
            raise ValueError(f"smoothing_s must be >= 0, not {smoothing_s}")
        if hysteresis is not None and not 0.0 <= hysteresis < 1.0:
            raise ValueError(f"hysteresis must be in [0, 1), not {hysteresis}")
        if smoothing_s is not None or hysteresis is not None:
            ema = FilterConfig("ema")
            filter = FilterConfig("ema", smoothing_s=ema.smoothing_s if smoothing_s is None
                                  else smoothing_s,
                                  hysteresis=ema.hysteresis if hysteresis is None else hysteresis)
        self.labels: tuple[str, ...] = tuple(labels)
        self.iou_threshold = float(iou_threshold)
        self.max_missed = int(max_missed)
        self.filter = filter or FilterConfig()
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last_t: float | None = None
        #: The frame size ``(w, h)`` the tracks' coordinates are in (None: not told yet).
        self._size: tuple[int, int] | None = None
        self._lock = threading.Lock()

    @property
    def active_ids(self) -> list[int]:
        """Ids of the live tracks (seen in the last ``max_missed`` frames)."""
        with self._lock:
            return [tr.id for tr in self._tracks]

    def start_frame(self, t: float, boxes: Sequence[Sequence[int]], reuse_s: float,
                    carried: Sequence[bool] | None = None,
                    frame_size: tuple[int, int] | None = None) -> FramePlan:
        """The first half of a frame: which detector faces to show and which of them need the
        classifier. Every fresh box is kept, and each ``carried`` one that continues a track
        no fresh box continues (a carried box of a face that moved away, or whose track ended,
        would start a track where no face is). A kept face reuses its track's last
        probabilities when it is carried (its crop is old) or was classified less than
        ``reuse_s`` seconds ago; the others (new faces among them) go to the classifier.
        Changes nothing but the tracks' scale when ``frame_size`` differs from the last one
        (:meth:`_fit_size`); :meth:`finish_frame` with the classifier's output completes it."""
        dets = _int_boxes(boxes)
        flags = _flags(carried, len(dets))
        if reuse_s <= 0 and flags is None:
            n = len(dets)
            return FramePlan(t, list(range(n)), dets, [], [None] * n)
        with self._lock:
            self._fit_size(frame_size)
            ta = self._advanced(t)
            by_det = {di: self._tracks[ti] for ti, di in
                      self._associate(ta, dets, flags, self._gate_scale(ta))}
            keep, reuse = [], []
            for i in range(len(dets)):
                tr = by_det.get(i)
                is_carried = flags is not None and flags[i]
                if is_carried and tr is None:
                    continue
                keep.append(i)
                reuse.append(tr.raw.copy() if tr is not None and (
                    is_carried or ta - tr.raw_t < reuse_s - 1e-6) else None)
        return FramePlan(t, keep, [dets[i] for i in keep],
                         [bool(flags[i]) for i in keep] if flags is not None else [], reuse)

    def finish_frame(self, plan: FramePlan, fresh: np.ndarray,
                     frame_size: tuple[int, int] | None = None) -> tuple[list[dict], np.ndarray]:
        """The second half: ``fresh`` is the classifier's output for ``plan.need`` (in that
        order). Updates the tracks (:meth:`describe`) and returns the face objects and the
        frame's probabilities, one row per kept face (fresh or reused)."""
        probs = np.zeros((len(plan.reuse), len(self.labels)), np.float64)
        need = plan.need
        if len(fresh) != len(need):
            raise ValueError(f"fresh must have one row per face to classify ({len(need)}), "
                             f"not {len(fresh)}")
        for k, i in enumerate(need):
            probs[i] = fresh[k]
        for i, p in enumerate(plan.reuse):
            if p is not None:
                probs[i] = p
        faces = self.describe(plan.t, plan.boxes, probs, [p is None for p in plan.reuse],
                              plan.carried, frame_size)
        return faces, probs

    def update(self, t: float, boxes: Sequence[Sequence[int]], probs: np.ndarray,
               fresh: Sequence[bool] | None = None, carried: Sequence[bool] | None = None,
               frame_size: tuple[int, int] | None = None) -> list[TrackedFace]:
        """Associate this frame's ``boxes`` with tracks; one :class:`TrackedFace` per box, in
        the same order. ``probs`` is ``(len(boxes), len(labels))``; ``t`` is in seconds;
        ``fresh`` says which rows the classifier just gave (default all; the others are
        probabilities :meth:`start_frame` said to reuse); ``carried`` which boxes the detector kept
        from an earlier frame (default none): a carried box matched to a track keeps it alive
        and is reported at the track's predicted place (inside ``frame_size`` ``(w, h)`` when
        given); the track itself is left as it was. Pass only the boxes :meth:`start_frame` keeps: a
        carried box that continues no track starts one like a fresh box."""
        n = len(boxes)
        if n == 0:
            p = np.zeros((0, len(self.labels)))  # probs may be anything empty (or None)
        else:
            p = np.asarray(probs, dtype=np.float64)
        if p.shape != (n, len(self.labels)):
            raise ValueError(f"probs must have shape ({n}, {len(self.labels)}), not {p.shape}")
        dets = _int_boxes(boxes)
        carried = _flags(carried, n)
        with self._lock:
            self._fit_size(frame_size)
            scale = self._gate_scale(self._advanced(float(t)))
            t = self._clock(float(t))
            matches = self._associate(t, dets, carried, scale)
            out: list[TrackedFace | None] = [None] * n
            matched = set()
            for ti, di in matches:
                tr = self._tracks[ti]
                matched.add(ti)
                if carried is not None and carried[di]:
                    out[di] = self._face(tr, self._predicted(tr, t, frame_size))
                    continue
                self._correct(tr, t, dets[di], p[di])
                if fresh is None or fresh[di]:
                    tr.raw, tr.raw_t = p[di].copy(), t
                out[di] = self._face(tr, dets[di])
            survivors = []
            for ti, tr in enumerate(self._tracks):
                if ti not in matched:
                    tr.missed += 1
                    if tr.missed > self.max_missed:
                        continue
                survivors.append(tr)
            self._tracks = survivors
            for di in range(n):
                if out[di] is None:
                    tr = _Track(self._next_id, t, dets[di], p[di], self.filter.make(p[di]))
                    self._next_id += 1
                    self._tracks.append(tr)
                    out[di] = self._face(tr, dets[di])
        return out  # type: ignore[return-value]

    def describe(self, t: float, boxes: Sequence[Sequence[int]], probs: np.ndarray,
                 fresh: Sequence[bool] | None = None, carried: Sequence[bool] | None = None,
                 frame_size: tuple[int, int] | None = None) -> list[dict]:
        """:meth:`update`, then the face objects of the result message (``id``, ``box``, the
        filtered ``label``/``score``/``uncertain``, this frame's ``scores``): what a live
        session sends, and what the offline evaluations read."""
        tracked = self.update(t, boxes, probs, fresh, carried, frame_size)
        return [face_dict(tf.id, tf.box, p, tf.label, tf.score, tf.uncertain)
                for tf, p in zip(tracked, probs)]

    # ------------------------------------------------------------------ internals

    def _fit_size(self, frame_size: tuple[int, int] | None) -> None:
        """Frames of a new size (a WebRTC sender scales its video down and up with the
        bandwidth): the tracks are scaled to it, so the same faces keep their ids."""
        if frame_size is None:
            return
        old, self._size = self._size, (int(frame_size[0]), int(frame_size[1]))
        if old is None or old == self._size or min(*old, *self._size) <= 0:
            return
        sx, sy = self._size[0] / old[0], self._size[1] / old[1]
        for tr in self._tracks:
            tr.cx, tr.vx, tr.w = tr.cx * sx, tr.vx * sx, max(tr.w * sx, 1.0)
            tr.cy, tr.vy, tr.h = tr.cy * sy, tr.vy * sy, max(tr.h * sy, 1.0)

    def _advanced(self, t: float) -> float:
        # Time must advance for the EMA and the velocity; a repeated or earlier stamp counts as
        # one nominal frame later.
        if self._last_t is not None and t <= self._last_t:
            return self._last_t + NOMINAL_DT
        return t

    def _clock(self, t: float) -> float:
        self._last_t = t = self._advanced(t)
        return t

    def _gate_scale(self, t: float) -> float:
        """How much wider the centre gate is for a frame at ``t`` (advanced, not yet clocked):
        its time since the previous frame in 15 fps frames, from 1 to MAX_PREDICT_S's 7.5."""
        if self._last_t is None:
            return 1.0
        return min(MAX_PREDICT_S / NOMINAL_DT, max(1.0, (t - self._last_t) / NOMINAL_DT))

    def _associate(self, t: float, dets: list[Box], carried: Sequence[bool] | None = None,
                   gate_scale: float = 1.0) -> list[tuple[int, int]]:
        """Matches ``(track, detection)``: the fresh detections first, then the carried ones
        with the tracks still unmatched."""
        if carried is None:
            return self._match(t, dets, range(len(dets)), range(len(self._tracks)), gate_scale)
        fresh = [i for i in range(len(dets)) if not carried[i]]
        first = self._match(t, dets, fresh, range(len(self._tracks)), gate_scale)
        taken = {ti for ti, _ in first}
        rest = [ti for ti in range(len(self._tracks)) if ti not in taken]
        return first + self._match(t, dets, [i for i in range(len(dets)) if carried[i]], rest,
                                   gate_scale)

    def _match(self, t: float, dets: list[Box], det_idx: Sequence[int],
               track_idx: Sequence[int], gate_scale: float = 1.0) -> list[tuple[int, int]]:
        if not track_idx or not det_idx:
            return []
        pairs = []
        for ti in track_idx:
            tr = self._tracks[ti]
            pcx, pcy = tr.predict(t)
            px, py = pcx - tr.w / 2.0, pcy - tr.h / 2.0
            size = math.sqrt(tr.w * tr.h)
            area = tr.w * tr.h
            gate = (CENTER_GATE + CENTER_GATE_PER_MISS * tr.missed) * gate_scale
            for di in det_idx:
                x, y, w, h = dets[di]
                w, h = max(w, 1), max(h, 1)
                ratio = (w * h) / area
                if ratio > MAX_AREA_RATIO or ratio < 1.0 / MAX_AREA_RATIO:
                    continue
                iou = _iou(px, py, tr.w, tr.h, x, y, w, h)
                dist = math.hypot(x + w / 2.0 - pcx, y + h / 2.0 - pcy) / size
                if iou < self.iou_threshold and dist > gate:
                    continue
                pairs.append(((1.0 - iou) + dist + MISS_PENALTY * tr.missed, ti, di))
        return assign(pairs)

    def _correct(self, tr: _Track, t: float, box: Box, probs: np.ndarray) -> None:
        x, y, w, h = box
        cx, cy = x + w / 2.0, y + h / 2.0
        dt = t - tr.t
        if dt > 0.0:
            vx, vy = (cx - tr.cx) / dt, (cy - tr.cy) / dt
            g = 1.0 if tr.hits == 1 else VELOCITY_GAIN
            tr.vx += g * (vx - tr.vx)
            tr.vy += g * (vy - tr.vy)
            tr.smoothed = np.array(tr.filter.update(probs, dt), dtype=np.float64)
        tr.cx, tr.cy = cx, cy
        tr.w, tr.h = float(max(w, 1)), float(max(h, 1))
        tr.t = t
        tr.missed = 0
        tr.hits += 1

    @staticmethod
    def _predicted(tr: _Track, t: float, frame_size: tuple[int, int] | None) -> Box:
        """The track's box where its motion predicts it at ``t`` (kept inside the frame)."""
        cx, cy = tr.predict(t)
        w, h = int(round(tr.w)), int(round(tr.h))
        x, y = int(round(cx - tr.w / 2.0)), int(round(cy - tr.h / 2.0))
        if frame_size is not None:
            fw, fh = frame_size
            x, y = min(max(x, 0), max(fw - w, 0)), min(max(y, 0), max(fh - h, 0))
        return (x, y, w, h)

    def _face(self, tr: _Track, box: Box) -> TrackedFace:
        k = tr.filter.label
        return TrackedFace(id=tr.id, box=box, label=self.labels[k],
                           score=float(tr.smoothed[k]), smoothed=tr.smoothed.copy())


def _int_boxes(boxes: Sequence[Sequence[int]]) -> list[Box]:
    return [(int(x), int(y), int(w), int(h)) for x, y, w, h in boxes]


def _flags(carried: Sequence[bool] | None, n: int) -> Sequence[bool] | None:
    """``carried`` checked against ``n`` boxes; None when no box is carried."""
    if not carried or not any(carried):
        return None
    if len(carried) != n:
        raise ValueError(f"carried must have one flag per box ({n}), not {len(carried)}")
    return carried


def assign(pairs: list[tuple[float, int, int]]) -> list[tuple[int, int]]:
    """Matches ``(track, detection)`` from candidate ``(cost, track, detection)`` pairs: in each
    group of tracks and detections linked by candidates, the most matches and among those the
    least total cost (exhaustive: groups are small), or greedily (cheapest pair first) in a
    group with more than :data:`MAX_EXACT_SEARCH` possible matchings."""
    # Groups: connected components of the candidate graph (union-find over track/detection nodes).
    parent: dict[tuple[str, int], tuple[str, int]] = {}

    def root(n: tuple[str, int]) -> tuple[str, int]:
        while parent.setdefault(n, n) != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for _, ti, di in pairs:
        a, b = root(("t", ti)), root(("d", di))
        if a != b:
            parent[a] = b
    groups: dict[tuple[str, int], list[tuple[float, int, int]]] = {}
    for p in pairs:
        groups.setdefault(root(("t", p[1])), []).append(p)
    matches: list[tuple[int, int]] = []
    for group in groups.values():
        if len(group) == 1:
            matches.append(group[0][1:])
            continue
        degree = Counter(ti for _, ti, _ in group)
        if math.prod(d + 1 for d in degree.values()) > MAX_EXACT_SEARCH:
            matches += _greedy(group)
        else:
            matches += _exact(sorted(degree), group)
    return matches


def _greedy(pairs: list[tuple[float, int, int]]) -> list[tuple[int, int]]:
    used_t: set[int] = set()
    used_d: set[int] = set()
    out = []
    for _, ti, di in sorted(pairs):
        if ti in used_t or di in used_d:
            continue
        used_t.add(ti)
        used_d.add(di)
        out.append((ti, di))
    return out


def _exact(tracks: list[int], pairs: list[tuple[float, int, int]]) -> list[tuple[int, int]]:
    options: dict[int, list[tuple[float, int]]] = {ti: [] for ti in tracks}
    for cost, ti, di in pairs:
        options[ti].append((cost, di))
    for opts in options.values():
        opts.sort()
    best: tuple[int, float, list[tuple[int, int]]] = (0, 0.0, [])

    def search(k: int, used: set[int], n: int, cost: float, chosen: list[tuple[int, int]]
               ) -> None:
        nonlocal best
        if k == len(tracks):
            if n > best[0] or (n == best[0] and cost < best[1]):
                best = (n, cost, list(chosen))
            return
        if n + (len(tracks) - k) < best[0]:
            return  # cannot reach the best count any more
        ti = tracks[k]
        for c, di in options[ti]:
            if di not in used:
                used.add(di)
                chosen.append((ti, di))
                search(k + 1, used, n + 1, cost + c, chosen)
                chosen.pop()
                used.discard(di)
        search(k + 1, used, n, cost, chosen)

    search(0, set(), 0, 0.0, [])
    return best[2]

