"""A live session's face objects carry the tracker's filtered decision (label held by the
filter's hysteresis, confidence, ``uncertain``), and the frame's own ``scores``."""

from __future__ import annotations

import numpy as np

from core.preprocess import LABELS
from core.temporal import FilterConfig
from core.tracker import FaceTracker

HAPPY, NEUTRAL = LABELS.index("happy"), LABELS.index("neutral")


def probs(happy: float, neutral: float) -> np.ndarray:
    p = np.full(len(LABELS), (1.0 - happy - neutral) / (len(LABELS) - 2))
    p[HAPPY], p[NEUTRAL] = happy, neutral
    return p[None]


def test_the_message_label_is_the_filtered_decision_not_this_frames_argmax():
    tr = FaceTracker(LABELS, filter=FilterConfig("ema", smoothing_s=0.3, hysteresis=0.15))
    box = [(100, 100, 80, 80)]
    for k in range(15):
        (face,) = tr.describe(k / 15, box, probs(0.9, 0.05))
    assert face["label"] == "happy" and face["uncertain"] is False
    (face,) = tr.describe(1.0, box, probs(0.2, 0.75))  # one frame that says neutral
    assert face["label"] == "happy"  # the shown label holds ...
    assert face["scores"]["neutral"] == 0.75  # ... while scores are this frame's
    assert face["id"] == 1 and face["box"] == [100, 100, 80, 80]
    for k in range(16, 45):
        (face,) = tr.describe(k / 15, box, probs(0.3, 0.35))  # a near tie: low confidence
    assert face["uncertain"] is True and face["score"] < 0.5


def test_start_frame_reuses_a_tracked_faces_probabilities_for_reuse_s():
    tr = FaceTracker(LABELS)
    box = [(100, 100, 80, 80)]
    calls = 0
    for k in range(15):  # 1 s at 15 fps, reuse for 0.1 s: every other frame is classified
        t = k / 15
        plan = tr.start_frame(t, box, 0.1)
        calls += len(plan.need)
        _, merged = tr.finish_frame(plan, probs(0.9, 0.05)[:len(plan.need)])
        assert merged.shape == (1, len(LABELS))
    assert calls == 8
    new_face = tr.start_frame(1.0, box + [(400, 300, 80, 80)], 0.1)
    assert new_face.need == [1]  # a new face is classified at once
    assert tr.start_frame(1.0, box, 0.0).need == [0]  # reuse 0: every frame
