"""Session timeline: per face id, the mean class probabilities of every second (no images).

Memory is bounded: only the last ``max_seconds`` seconds are kept, and at most ``max_buckets``
(face, second) records in all, oldest dropped first (a flickering detector can make many ids).
"""

from __future__ import annotations

import collections
import io
import math
import threading
import time
from typing import Sequence

import numpy as np

#: Seconds of history kept per session.
DEFAULT_MAX_SECONDS = 3600
#: Average number of faces per second the default record budget allows for.
FACES_PER_SECOND_BUDGET = 8
#: Decimals of the probabilities in the JSON and CSV exports.
DECIMALS = 4


class Timeline:
    """Per-second mean class probabilities of each face of one session. Thread-safe.

    ``labels`` name the columns (the model's classes, in vector order). Bucket ``t`` of a sample
    taken at time ``t_s`` is ``floor(t_s - t0)``, where ``t0`` defaults to the first sample's
    time; ``start`` is the wall-clock (epoch seconds) of ``t0``, by default taken when the first
    sample arrives.
    """

    def __init__(self, labels: Sequence[str], max_seconds: int = DEFAULT_MAX_SECONDS,
                 max_buckets: int | None = None, t0: float | None = None,
                 start: float | None = None) -> None:
        if len(labels) == 0:
            raise ValueError("labels must not be empty")
        if max_seconds < 1:
            raise ValueError(f"max_seconds must be >= 1, not {max_seconds}")
        self.labels: tuple[str, ...] = tuple(labels)
        self.max_seconds = int(max_seconds)
        self.max_buckets = (int(max_buckets) if max_buckets is not None
                            else self.max_seconds * FACES_PER_SECOND_BUDGET)
        if self.max_buckets < 1:
            raise ValueError(f"max_buckets must be >= 1, not {max_buckets}")
        self._t0 = t0
        self._start = start
        # face id -> {second: [count, sum of probabilities]}
        self._faces: dict[int, dict[int, list]] = {}
        # (second, face id) in creation order: eviction pops from the left.
        self._order: collections.deque[tuple[int, int]] = collections.deque()
        self._newest = -1
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Number of (face, second) records held."""
        with self._lock:
            return len(self._order)

    def add(self, t: float, face_id: int, probs: np.ndarray) -> None:
        """Add one face's class probabilities ``probs`` (``len(labels)`` values) at time ``t``."""
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        if p.shape[0] != len(self.labels):
            raise ValueError(f"probs must have {len(self.labels)} values, not {p.shape[0]}")
        face_id = int(face_id)
        with self._lock:
            if self._t0 is None:
                self._t0 = float(t)
            if self._start is None:
                self._start = time.time()
            second = max(0, math.floor(float(t) - self._t0))
            if second <= self._newest - self.max_seconds:
                return  # older than the window
            buckets = self._faces.setdefault(face_id, {})
            rec = buckets.get(second)
            if rec is None:
                buckets[second] = [1, p.copy()]
                self._order.append((second, face_id))
                if second > self._newest:
                    self._newest = second
                self._evict()
            else:
                rec[0] += 1
                rec[1] += p

    def _evict(self) -> None:
        horizon = self._newest - self.max_seconds
        while self._order and (self._order[0][0] <= horizon
                               or len(self._order) > self.max_buckets):
            second, face_id = self._order.popleft()
            buckets = self._faces[face_id]
            del buckets[second]
            if not buckets:
                del self._faces[face_id]
        # A record created late for an old second may sit behind newer ones; drop it lazily.

    def _rows(self) -> list[tuple[int, int, int, list[float]]]:
        horizon = self._newest - self.max_seconds
        rows = []
        for face_id in sorted(self._faces):
            for second, (n, total) in sorted(self._faces[face_id].items()):
                if second > horizon:
                    rows.append((face_id, second, n,
                                 [round(float(v), DECIMALS) for v in total / n]))
        return rows

    def to_json(self) -> dict:
        """``{"labels", "start", "faces": {"<id>": [{"t", "n", "probs"}, ...]}}``; ``t`` is the
        second since ``start``, ``n`` the number of samples averaged."""
        with self._lock:
            rows = self._rows()
            start = self._start
        faces: dict[str, list[dict]] = {}
        for face_id, second, n, probs in rows:
            faces.setdefault(str(face_id), []).append({"t": second, "n": n, "probs": probs})
        return {"labels": list(self.labels), "start": start, "faces": faces}

    def to_csv(self) -> str:
        """CSV with header ``face_id,second,n,<labels...>``, one row per face and second."""
        with self._lock:
            rows = self._rows()
        buf = io.StringIO()
        buf.write(",".join(["face_id", "second", "n", *self.labels]) + "\n")
        for face_id, second, n, probs in rows:
            cells = [str(face_id), str(second), str(n)] + [f"{v:.{DECIMALS}f}" for v in probs]
            buf.write(",".join(cells) + "\n")
        return buf.getvalue()
