"""The detection benchmark's matching rule, splits and selection rule (bench/detection.py)."""

from __future__ import annotations

import json

import pytest

from bench.detection import (
    BoxFolder,
    DetectionEval,
    load_boxes,
    match_image,
    parse_sizes,
    select,
    split_files,
)
from core.faces import Detection


def det(x, y, w, h, score=0.9) -> Detection:
    return Detection((x, y, w, h), score)


def test_match_by_iou_and_by_centre():
    gts = [(100, 100, 40, 40), (300, 100, 40, 50)]
    # IoU >= 0.3 with the first; the second's box holds the detection's centre (IoU < 0.3:
    # BlazeFace boxes are larger than WIDER's tight ones).
    m = match_image([det(104, 98, 40, 44), det(280, 80, 80, 90)], gts)
    assert (m.hits, m.false, m.ignored, m.found) == (2, 0, 0, [True, True])


def test_unmatched_and_duplicate_detections_are_false():
    gts = [(100, 100, 40, 40)]
    m = match_image([det(100, 100, 40, 40, 0.9), det(102, 102, 40, 40, 0.8),
                     det(500, 500, 40, 40, 0.7)], gts)
    assert (m.hits, m.false, m.found) == (1, 2, [True])


def test_small_and_ignored_faces_neither_count_nor_penalise():
    gts = [(10, 10, 12, 16), (100, 100, 40, 40)]  # the first is under 24 px tall
    m = match_image([det(8, 8, 16, 20), det(400, 400, 30, 30)], gts, ignore=[(400, 400, 30, 30)])
    assert (m.hits, m.false, m.ignored, m.found) == (0, 0, 2, [True, False])


def test_strongest_detection_matches_first():
    gts = [(100, 100, 40, 40)]
    m = match_image([det(130, 130, 40, 40, 0.4), det(100, 100, 40, 40, 0.9)], gts)
    assert (m.hits, m.false) == (1, 1)


def test_no_ground_truth():
    assert match_image([det(0, 0, 30, 30)], []).false == 1


def test_load_boxes_and_splits(tmp_path):
    (tmp_path / "boxes.json").write_text(json.dumps({
        "b.jpg": [[1, 2, 30, 40]], "a.jpg": [], "attrs": {"b.jpg": [{}]},
        "ignore": {"a.jpg": [[5, 5, 10, 10]]}}))
    data = load_boxes(tmp_path)
    assert data.files == ["a.jpg", "b.jpg"]
    assert data.boxes["b.jpg"] == [(1, 2, 30, 40)] and data.ignore == {"a.jpg": [(5, 5, 10, 10)]}
    files = [f"{i}.jpg" for i in range(5)]
    assert split_files(files, "tune") == ["0.jpg", "2.jpg", "4.jpg"]
    assert split_files(files, "check") == ["1.jpg", "3.jpg"]
    with pytest.raises(ValueError):
        split_files(files, "test")
    assert isinstance(data, BoxFolder)


def _eval(name: str, found: int, hits: int, false: int, ms: float) -> DetectionEval:
    return DetectionEval(name, 1, {"all": [found, 100]}, hits, false, 0, ms)


def test_selection_rule():
    """Precision >= 0.93 first; then the best recall, ties (0.01) to the cheapest."""
    evals = [_eval("precise-slow", 70, 70, 2, 50.0), _eval("precise-fast", 69, 69, 2, 20.0),
             _eval("greedy", 90, 90, 20, 10.0), _eval("weak", 50, 50, 1, 5.0)]
    assert select(evals).mode == "precise-fast"
    assert select([_eval("greedy", 90, 90, 20, 10.0)]) is None


def test_parse_sizes():
    assert parse_sizes("640x480,1280X720") == [(640, 480), (1280, 720)]
    with pytest.raises(ValueError):
        parse_sizes("640-480")
