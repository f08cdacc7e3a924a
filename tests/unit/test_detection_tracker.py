"""The tracker with many faces (issue "every face in the frame"): 20+ synthetic faces whose
paths cross keep their ids. Boxes only (no detector): each frame gives the true boxes, with a
little jitter and in shuffled order, as a detector would."""

from __future__ import annotations

import numpy as np
import pytest

from core.preprocess import LABELS
from core.tracker import FaceTracker

FPS = 15.0


def _run(paths: np.ndarray, jitter: float, seed: int = 0, drop: float = 0.0
         ) -> tuple[np.ndarray, int]:
    """Feed the tracker ``paths`` (frames x faces x 4 boxes) and return the id given to each
    face in each frame (-1: not detected that frame) and the number of ids made."""
    rng = np.random.default_rng(seed)
    tracker = FaceTracker(LABELS)
    frames, faces = paths.shape[:2]
    ids = np.full((frames, faces), -1)
    probs = np.full((faces, len(LABELS)), 1.0 / len(LABELS))
    for f in range(frames):
        order = rng.permutation(faces)
        order = order[rng.random(faces) >= drop]  # missed detections
        boxes = paths[f, order] + rng.normal(0.0, jitter, (len(order), 4)) * [1, 1, 0.5, 0.5]
        boxes = np.round(boxes).astype(int)
        out = tracker.update(f / FPS, [tuple(b) for b in boxes], probs[: len(order)])
        for k, tf in zip(order, out):
            ids[f, k] = tf.id
    made = len({int(i) for i in ids.ravel() if i >= 0})
    return ids, made


def _crossing_rows(n_per_row: int = 12, side: int = 40, speed: float = 4.0,
                   dy: int = 18, frames: int = 240) -> np.ndarray:
    """Two rows of faces walking in opposite directions past each other: row A at y=200 going
    right, row B ``dy`` px lower going left (each A face overlaps each B face it passes)."""
    gap = 2 * side
    out = np.zeros((frames, 2 * n_per_row, 4))
    for f in range(frames):
        for i in range(n_per_row):
            out[f, i] = (i * gap + speed * f, 200, side, side)
            out[f, n_per_row + i] = (i * gap + 1000 - speed * f, 200 + dy, side, side)
    return out


def _crossing_lanes(phase: float, side: int = 40, speed: float = 5.0, frames: int = 260
                    ) -> np.ndarray:
    """24 faces: 12 walking right in three lanes, 12 walking down in three lanes, four per lane;
    every right-walker crosses every down-walker's path. ``phase`` shifts the down-walkers in
    time, which sets how close the closest pair comes."""
    out = np.zeros((frames, 24, 4))
    for f in range(frames):
        k = 0
        for lane in range(3):
            for j in range(4):
                out[f, k] = (-200 - j * 160 - lane * 53 + speed * f, 300 + lane * 100, side, side)
                k += 1
        for lane in range(3):
            for j in range(4):
                y = -200 - j * 160 - lane * 37 + speed * f + phase
                out[f, k] = (700 + lane * 100, y, side, side)
                k += 1
    return out


def _closest_centres(paths: np.ndarray) -> float:
    """The smallest distance between two faces' centres over all frames (px)."""
    c = paths[:, :, :2] + paths[:, :, 2:] / 2
    d = np.linalg.norm(c[:, :, None] - c[:, None, :], axis=-1)
    d[:, np.arange(d.shape[1]), np.arange(d.shape[1])] = np.inf
    return float(d.min())


def _id_switches(ids: np.ndarray) -> int:
    """How many times a face's id changes between frames where it was detected."""
    n = 0
    for k in range(ids.shape[1]):
        seen = ids[ids[:, k] >= 0, k]
        n += int(np.count_nonzero(np.diff(seen)))
    return n


@pytest.mark.parametrize("jitter", [0.0, 1.5])
def test_24_faces_in_two_rows_passing_each_other_keep_their_ids(jitter):
    paths = _crossing_rows()
    ids, made = _run(paths, jitter)
    assert _id_switches(ids) == 0
    assert made == paths.shape[1]
    # No two faces share an id in any frame.
    for row in ids:
        assert len(set(row[row >= 0])) == np.count_nonzero(row >= 0)


def test_24_faces_with_missed_detections_keep_their_ids():
    """One detection in ten is missed (a track coasts on its predicted motion)."""
    ids, made = _run(_crossing_rows(), jitter=1.0, drop=0.1)
    assert _id_switches(ids) == 0
    assert made == 24


def test_24_faces_crossing_paths_at_right_angles_keep_their_ids():
    """Every right-walker crosses every down-walker; the closest pair's centres come within
    about 6 px (15% of a face) of each other."""
    paths = _crossing_lanes(phase=40)
    assert _closest_centres(paths) < 0.2 * 40
    ids, made = _run(paths, jitter=1.5)
    assert _id_switches(ids) == 0
    assert made == 24


@pytest.mark.xfail(strict=True, reason="measured limitation: when two faces pass through the "
                   "same spot (centres within 2-4 px, one hiding the other), boxes alone cannot "
                   "tell them apart and jitter swaps their ids (4 switches = 2 swaps among 24 "
                   "faces, 1.5 px jitter; over 20 jitter seeds 34 switches in 9 runs with the "
                   "optimal matching, 54 in 14 with greedy); telling them apart needs an "
                   "appearance cue")
def test_faces_passing_through_the_same_spot_keep_their_ids():
    paths = _crossing_lanes(phase=0)
    assert _closest_centres(paths) < 0.1 * 40
    ids, _ = _run(paths, jitter=1.5)
    assert _id_switches(ids) == 0


def test_assignment_takes_the_least_total_cost_not_the_cheapest_pair_first():
    from core.tracker import assign

    # Greedy would take (0, 0) at 0.1 and leave track 1 with detection 1 at 0.9 (total 1.0);
    # the optimal matching is (0, 1) + (1, 0) = 0.2 + 0.3.
    pairs = [(0.1, 0, 0), (0.2, 0, 1), (0.3, 1, 0), (0.9, 1, 1)]
    assert sorted(assign(pairs)) == [(0, 1), (1, 0)]
    # More matches first: track 0 could take detection 0 cheaply, but then track 1 gets none.
    assert sorted(assign([(0.1, 0, 0), (0.5, 0, 1), (0.2, 1, 0)])) == [(0, 1), (1, 0)]
    # Separate groups are matched separately; a lone pair is kept.
    assert sorted(assign([(0.4, 0, 0), (0.7, 2, 3)])) == [(0, 0), (2, 3)]
    assert assign([]) == []


def test_a_group_too_large_for_the_exact_search_is_matched_greedily(monkeypatch):
    import core.tracker as tracker

    pairs = [(0.1, 0, 0), (0.2, 0, 1), (0.3, 1, 0), (0.9, 1, 1)]
    monkeypatch.setattr(tracker, "MAX_EXACT_SEARCH", 4)  # 3 x 3 possible matchings > 4
    assert sorted(tracker.assign(pairs)) == [(0, 0), (1, 1)]
    # Every track and detection used at most once, whatever the search.
    rng = np.random.default_rng(1)
    for limit in (4, 4096):
        monkeypatch.setattr(tracker, "MAX_EXACT_SEARCH", limit)
        many = [(float(rng.random()), int(t), int(d)) for t in range(8) for d in range(8)
                if rng.random() < 0.4]
        out = tracker.assign(many)
        assert len({t for t, _ in out}) == len(out) == len({d for _, d in out})
        assert set(out) <= {(t, d) for _, t, d in many}
