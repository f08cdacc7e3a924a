"""``run.py bench-detect`` end to end on a tiny folder made here, the accurate and live
modes' recall/precision on face_boxes_dev as a regression guard, and live's recall of small
real faces in the dev-clip gallery (the last two skipped when the shared data is absent)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.detection import DEFAULT_BOXES, DEFAULT_CLIPS, evaluate, load_boxes
from bench.gallery import ClipCells, gallery_frame, gallery_recall
from core.faces import FaceDetector
from tests.detection_scenes import face_grid

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


def _tiny_folder(path: Path) -> Path:
    """Three composites in the face_boxes_dev format: 80-160 px faces (accurate finds them
    all), one image with no face."""
    path.mkdir()
    boxes = {}
    for name, sizes, size, cols in (("a.jpg", [96, 128, 160, 96], (1280, 720), 4),
                                    ("b.jpg", [80, 120], (640, 480), 2)):
        img, bx = face_grid(sizes, *size, cols=cols)
        cv2.imwrite(str(path / name), img)
        boxes[name] = [list(b) for b in bx]
    img, _ = face_grid([], 640, 480, cols=1)
    cv2.imwrite(str(path / "c.jpg"), img)
    boxes["c.jpg"] = []
    (path / "boxes.json").write_text(json.dumps(boxes))
    return path


def test_detect_command_end_to_end(tmp_path):
    folder = _tiny_folder(tmp_path / "faces")
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, str(ROOT / "run.py"), "bench-detect", "--boxes",
                        str(folder), "--modes", "live,accurate", "--sizes", "640x480",
                        "--repeats", "3", "--video", "", "--gallery", "", "--json", str(out)],
                       capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    for text in ("CPU:", "recall 24-48", "precision", "ms/frame 640x480 (x fast)", "accurate"):
        assert text in r.stdout
    res = json.loads(out.read_text())
    # live's video scan window is timed too (alternate frames cost that instead)
    assert set(res["cost_ms"]["640x480"]) == {"live", "live window", "accurate", "fast"}
    q = {e["mode"]: e for e in res["quality"]}
    assert q["accurate"]["faces"]["all"] == 6
    assert q["accurate"]["recall"]["all"] == 1.0 and q["accurate"]["false"] == 0
    assert 0 < q["live"]["recall"]["all"] <= 1.0


def test_detect_command_refuses_a_bad_mode_or_folder(tmp_path):
    for args in (["--modes", "warp"], ["--boxes", str(tmp_path)],
                 ["--boxes", "", "--gallery", str(tmp_path)]):
        r = subprocess.run([sys.executable, str(ROOT / "run.py"), "bench-detect", *args,
                            "--sizes", "", "--video", ""],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 2 and "error" in r.stdout


# Measured on the 75 images (README "Face detection"): accurate (BlazeFace tiles + MTCNN + weak
# pairs) recall 0.805 of faces >= 24 px, precision 0.936; live 0.567 and 0.933. The guard allows
# 0.03 less recall and 0.02 less precision.
GUARD = {"accurate": (0.775, 0.915), "live": (0.537, 0.913)}


@pytest.mark.skipif(not (DEFAULT_BOXES / "boxes.json").exists(),
                    reason="shared face_boxes_dev data not present")
@pytest.mark.parametrize("mode", sorted(GUARD))
def test_face_boxes_dev_regression_guard(mode):
    """A regression guard, not a goal: the goals (recall >= 0.80, precision >= 0.90) are
    reported by ``run.py bench-detect``; this fails when a change makes detection worse than
    what was measured when the modes were chosen."""
    e = evaluate(FaceDetector(mode=mode), load_boxes(DEFAULT_BOXES))
    min_recall, min_precision = GUARD[mode]
    assert e.recall() >= min_recall, e.as_dict()
    assert e.precision >= min_precision, e.as_dict()


def test_gallery_frame_puts_each_clip_whole_in_its_cell_and_maps_its_face():
    wide = np.full((360, 640, 3), 200, np.uint8)  # 16:9 -> bars above and below in a 4:3 cell
    tall = np.full((400, 300, 3), 100, np.uint8)
    cells = [(wide, (320, 90, 64, 80)), (tall, (30, 40, 150, 200)), (wide, None), (tall, None)]
    img, gts, ignore = gallery_frame(cells, 2, (640, 480))
    assert img.shape == (480, 640, 3)
    # cell 0 (320x240): the 640x360 frame at 0.5 is 320x180, centred: 30 px bars
    assert gts[0] == (160, 30 + 45, 32, 40)
    assert (img[:30, :320] == 0).all() and (img[30:210, :320] == 200).all()
    # cell 1: the 300x400 frame at 0.6 is 180x240, centred in x at 320 + 70
    assert gts[1] == (320 + 70 + 18, 24, 90, 120)
    assert ignore == [(0, 240, 320, 240), (320, 240, 320, 240)]


@pytest.mark.skipif(not (DEFAULT_CLIPS / "labels.csv").exists(),
                    reason="shared labeled_videos_dev data not present")
def test_live_finds_small_real_faces_in_a_clip_gallery():
    """Real faces of 24-48 px (the dev clips, 7 x 7 and 8 x 8 cells of 640x480): measured
    0.99-1.00 of 32-48 px faces, precision 1.00 (README); fast (the selfie detector) finds none,
    so the guard can fail."""
    clips = ClipCells(DEFAULT_CLIPS, frames_per_clip=30)
    found = {}
    for mode in ("live", "fast"):
        det = FaceDetector(mode=mode)
        hits = faces = false = 0
        for g in (7, 8):
            r = gallery_recall(det, mode, clips, g, frames_n=30)
            hits += r.found["32-48"][0]
            faces += r.found["32-48"][1]
            false += r.false
        assert faces > 1000
        found[mode] = (hits / faces, false)
    assert found["live"][0] >= 0.9 and found["live"][1] <= 0.02 * faces, found
    assert found["fast"][0] < 0.1, found
